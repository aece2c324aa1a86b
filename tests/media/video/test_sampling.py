"""The uniform sampling rule of SPEC section 2, as a pure function."""

from __future__ import annotations

import itertools

import pytest

from mediagate import OptionError
from mediagate._media.video.sampling import (
    cap_num_frames,
    check_num_frames,
    sample_count,
    sample_frame_indices,
    short_tail_tolerated,
)


@pytest.mark.parametrize(
    ("total", "num_frames", "fps", "duration", "expected"),
    [
        (100, -1, None, 10.0, 100),  # no cap: every frame
        (100, 8, None, 10.0, 8),  # num_frames caps
        (100, 500, None, 10.0, 100),  # never more than the stream has
        (100, -1, 2.0, 10.0, 20),  # fps caps at floor(duration * fps)
        (100, 8, 2.0, 10.0, 8),  # the smaller cap wins
        (100, 50, 1.5, 10.0, 15),
        (100, -1, 0.01, 10.0, 1),  # at least one frame
        (100, -1, 0.0, 10.0, 100),  # fps 0 means no cap
        (1, 32, None, 0.03, 1),
        (7, -1, 2.9, 1.0, 2),  # floor, not round
    ],
)
def test_sample_count(
    total: int, num_frames: int, fps: float | None, duration: float, expected: int
) -> None:
    assert sample_count(total, num_frames=num_frames, fps=fps, duration=duration) == expected


def test_indices_are_linspace_cast_to_int() -> None:
    assert sample_frame_indices(100, num_frames=4) == [0, 33, 66, 99]
    assert sample_frame_indices(10, num_frames=3) == [0, 4, 9]
    assert sample_frame_indices(1800, num_frames=8) == [0, 257, 514, 771, 1028, 1285, 1542, 1799]


def test_every_frame_when_count_equals_total() -> None:
    assert sample_frame_indices(5, num_frames=5) == [0, 1, 2, 3, 4]
    assert sample_frame_indices(5) == [0, 1, 2, 3, 4]


def test_single_frame_is_the_first() -> None:
    assert sample_frame_indices(50, num_frames=1) == [0]


@pytest.mark.parametrize("total", [2, 3, 17, 60, 1001])
@pytest.mark.parametrize("num_frames", [1, 2, 5, 16, 32])
def test_indices_are_strictly_increasing_and_in_range(total: int, num_frames: int) -> None:
    indices = sample_frame_indices(total, num_frames=num_frames)
    assert len(indices) == min(total, num_frames)
    assert all(a < b for a, b in itertools.pairwise(indices))
    assert (indices[0] == 0 and indices[-1] == total - 1) or len(indices) == 1


def test_empty_stream_is_refused() -> None:
    with pytest.raises(ValueError):
        sample_frame_indices(0)


@pytest.mark.parametrize("bad", [0, -2, 1.5, "8", None, True])
def test_num_frames_is_checked(bad: object) -> None:
    with pytest.raises(OptionError) as info:
        check_num_frames(bad)
    assert info.value.option == "num_frames"


def test_cap_replaces_minus_one_and_caps() -> None:
    assert cap_num_frames(-1, 1024) == 1024
    assert cap_num_frames(5000, 1024) == 1024
    assert cap_num_frames(16, 1024) == 16


def test_short_tail_tolerance() -> None:
    assert short_tail_tolerated(300, 298)
    assert not short_tail_tolerated(300, 290)
    assert short_tail_tolerated(1000, 990)
    assert not short_tail_tolerated(10, 0)

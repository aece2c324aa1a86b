"""The model-specific samplers (qwen3_vl, qwen2_vl, opencv_dynamic).

The index lists are the ones vLLM 0.33.0's loaders of the same names return for the
same streams (``benchmarks/compare_samplers.py`` runs both and records the comparison
in ``benchmarks/SAMPLERS.md``); none of these tests imports vLLM.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Callable
from functools import cache
from typing import Any

import numpy as np
import pytest

from builders import encode_clip
from media.video.video_builders import read_numbers
from mediagate import (
    VIDEO_LOADER_REGISTRY,
    DecodeError,
    ImageMediaIO,
    MediaConnector,
    MediaPolicy,
    OptionError,
    VideoMediaIO,
)
from mediagate._media.video import samplers
from mediagate._media.video.registry import VIDEO_PROCESSOR_BACKENDS, backend_for_video_processor
from mediagate._media.video.samplers import (
    DynamicSampler,
    Qwen2VLSampler,
    Qwen3VLSampler,
    dynamic_indices,
    qwen2_vl_indices,
    qwen3_vl_indices,
)

NTSC = 30000 / 1001


@cache
def _clip(frames: int, rate: int = 30) -> bytes:
    return encode_clip("libx264", "mp4", frames, rate=rate, gop=30)


def _numbers(indices: list[int]) -> list[int]:
    """What the painted frames at ``indices`` show (their number mod 256)."""
    return [i % 256 for i in indices]


# -- the rules, index for index ----------------------------------------------------------

QWEN3_451 = [0, 16, 31, 47, 62, 78, 93, 109, 124, 140, 155, 171, 186, 202, 217, 233]
QWEN3_451 += [248, 264, 279, 295, 310, 326, 341, 357, 372, 388, 403, 419, 434, 450]
QWEN2_451 = list(range(0, 436, 15))
QWEN2_451_TPS4 = [0, 16, 32, 48, 64, 80, 96, 112, 128, 144, 161, 177, 193, 209, 225, 241]
QWEN2_451_TPS4 += [257, 273, 289, 306, 322, 338, 354, 370, 386, 402, 418, 434]


@pytest.mark.parametrize(
    ("total", "rate", "options", "expected"),
    [
        (60, 30.0, {}, [0, 20, 39, 59]),
        (60, NTSC, {}, [0, 20, 39, 59]),
        (451, 30.0, {}, QWEN3_451),
        (7, 30.0, {}, [0, 2, 4, 6]),
        (3, 30.0, {}, [0, 1, 2]),
        (
            60,
            30.0,
            {"min_frames": 16},
            [0, 4, 8, 12, 16, 20, 24, 28, 31, 35, 39, 43, 47, 51, 55, 59],
        ),
        (60, 30.0, {"fps": 60}, list(range(60))),
    ],
)
def test_qwen3_vl_indices(
    total: int, rate: float, options: dict[str, Any], expected: list[int]
) -> None:
    assert qwen3_vl_indices(total, rate, **options) == expected


def test_qwen3_vl_long_clips_hit_the_fps_budget() -> None:
    five_minutes_30 = qwen3_vl_indices(9000, 30.0)
    assert len(five_minutes_30) == 600 and sum(five_minutes_30) == 2699700
    assert five_minutes_30[:6] == [0, 15, 30, 45, 60, 75] and five_minutes_30[-3:] == [
        8969,
        8984,
        8999,
    ]
    five_minutes_60 = qwen3_vl_indices(18000, 60.0)
    assert len(five_minutes_60) == 600 and sum(five_minutes_60) == 5399700
    assert five_minutes_60[-3:] == [17939, 17969, 17999]
    # 768 frames at most, whatever max_frames asks; fps above 30 counts as 30.
    assert len(qwen3_vl_indices(36000, 30.0, max_frames=5000)) == 768
    assert qwen3_vl_indices(600, 30.0, fps=1000) == qwen3_vl_indices(600, 30.0, fps=30)


def test_qwen3_vl_fps_and_max_frames() -> None:
    picked = qwen3_vl_indices(451, 30.0, fps=4, max_frames=64)
    assert len(picked) == 60
    assert picked[:8] == [0, 8, 15, 23, 31, 38, 46, 53] and picked[-3:] == [435, 442, 450]


@pytest.mark.parametrize(
    ("total", "rate", "options", "expected"),
    [
        (60, 30.0, {}, [0, 15, 30, 45]),
        (60, NTSC, {}, [0, 15, 30, 45]),
        (451, 30.0, {}, QWEN2_451),
        (451, 30.0, {"temporal_patch_size": 4}, QWEN2_451_TPS4),
        (7, 30.0, {}, [0, 1, 3, 5]),
        (3, 30.0, {}, [0, 1]),
    ],
)
def test_qwen2_vl_indices(
    total: int, rate: float, options: dict[str, Any], expected: list[int]
) -> None:
    assert qwen2_vl_indices(total, rate, **options) == expected


def test_qwen2_vl_long_clips() -> None:
    for total, rate, first, last, checksum in [
        (9000, 30.0, [0, 15, 30, 45, 60, 75], [8955, 8970, 8985], 2695500),
        (18000, 60.0, [0, 30, 60, 90, 120, 150], [17910, 17940, 17970], 5391000),
        (7500, 25.0, [0, 12, 25, 37, 50, 62], [7462, 7475, 7487], 2246100),
    ]:
        picked = qwen2_vl_indices(total, rate)
        assert len(picked) == 600 and sum(picked) == checksum
        assert picked[:6] == first and picked[-3:] == last


def test_qwen2_vl_steps_in_float32_like_torch() -> None:
    # A float64 step gives 16501 and 16502 at these positions; torch's float32 arange,
    # which vLLM and transformers use, gives one more.
    assert qwen2_vl_indices(16745, 30.0, max_frames=758)[747] == 16502
    picked = qwen2_vl_indices(17291, 30.0)
    assert len(picked) == 768 and picked[733] == 16503 and picked[-1] == 17268


def test_float32_arange_matches_torch_value_for_value() -> None:
    torch = pytest.importorskip("torch")
    for total in (451, 9000, 16745, 17291, 20001, 123457):
        for count in (2, 30, 64, 600, 758, 768):
            step = total / count
            ours = samplers._arange_float32(total, step)
            theirs = torch.arange(0, total, step).numpy()
            assert ours.dtype == theirs.dtype == np.float32
            assert np.array_equal(ours, theirs), (total, count)


@pytest.mark.parametrize(
    ("total", "rate", "options", "expected"),
    [
        (60, 30.0, {}, [0, 15, 30, 45]),
        (60, NTSC, {}, [0, 15, 30, 45]),
        (451, 30.0, {}, QWEN2_451),
        (451, 30.0, {"fps": 1}, list(range(0, 421, 30))),
        (60, 30.0, {"fps": 30}, list(range(60))),
    ],
)
def test_dynamic_indices(
    total: int, rate: float, options: dict[str, Any], expected: list[int]
) -> None:
    assert dynamic_indices(total, rate, total / rate, **options) == expected


def test_dynamic_long_clips_spread_over_the_whole_duration() -> None:
    # Up to max_duration (300 s) at fps; longer clips: int(max_duration * fps) instants.
    for total, rate, first, last, checksum in [
        (9000, 30.0, [0, 15, 30, 45, 60, 75], [8955, 8970, 8985], 2695500),
        (9900, 30.0, [0, 17, 34, 50, 67, 83], [9867, 9884, 9899], 2970298),
        (7920, 24.0, [0, 14, 27, 40, 53, 67], [7894, 7907, 7919], 2376298),
    ]:
        picked = dynamic_indices(total, rate, total / rate)
        assert len(picked) == 600 and sum(picked) == checksum
        assert picked[:6] == first and picked[-3:] == last
    shorter = dynamic_indices(9900, 30.0, 330.0, max_duration=60)
    assert len(shorter) == 120 and sum(shorter) == 594058
    assert shorter[:6] == [0, 84, 167, 250, 333, 416] and shorter[-3:] == [9734, 9817, 9899]


def test_dynamic_clip_shorter_than_one_step_gets_its_first_frame() -> None:
    # vLLM's rule picks nothing here (and its reader fails); one frame is returned.
    assert dynamic_indices(7, 30.0, 7 / 30) == [0]
    assert dynamic_indices(9900, 30.0, 330.0, fps=0.001, max_duration=1.0) == [0]


def test_dynamic_rule_work_is_bounded_by_the_frames_not_the_rate() -> None:
    # floor(300 s * 1000 fps) steps, but the walk stops once it reaches the last frame.
    assert dynamic_indices(9000, 30.0, 300.0, fps=1000) == list(range(9000))


def test_rules_refuse_streams_without_frames_or_rate() -> None:
    for rule in (qwen3_vl_indices, qwen2_vl_indices):
        with pytest.raises(ValueError):
            rule(0, 30.0)
        with pytest.raises(ValueError):
            rule(10, 0.0)
    with pytest.raises(ValueError):
        dynamic_indices(10, math.nan, 1.0)


def test_qwen2_vl_too_few_frames_for_a_temporal_patch() -> None:
    with pytest.raises(DecodeError, match="temporal_patch_size"):
        qwen2_vl_indices(1, 30.0)
    with pytest.raises(DecodeError, match="too short"):
        qwen2_vl_indices(87, 60000 / 1001, fps=0.5, min_frames=1)
    with pytest.raises(OptionError) as info:
        qwen2_vl_indices(60, 30.0, max_frames=1)
    assert info.value.option == "max_frames"


# -- decoding: the frames, the metadata ---------------------------------------------------


@pytest.mark.parametrize(
    ("loader", "indices", "backend"),
    [
        (Qwen3VLSampler, [0, 20, 39, 59], "opencv"),
        (Qwen2VLSampler, [0, 15, 30, 45], "opencv"),
        (DynamicSampler, [0, 15, 30, 45], "opencv_dynamic"),
    ],
)
def test_metadata_is_vllms(loader: type, indices: list[int], backend: str) -> None:
    frames, meta = loader().load_bytes(_clip(60))
    assert meta == {
        "total_num_frames": 60,
        "fps": 30.0,
        "duration": 2.0,
        "video_backend": backend,
        "frames_indices": indices,
        "do_sample_frames": False,
    }
    assert read_numbers(frames) == _numbers(indices)


def test_every_frame_taken_leaves_sampling_to_the_processor() -> None:
    frames, meta = Qwen3VLSampler().load_bytes(_clip(60), fps=60.0)
    assert meta["frames_indices"] == list(range(60)) and meta["do_sample_frames"] is True
    assert read_numbers(frames) == _numbers(list(range(60)))


def test_num_frames_does_not_set_the_count_through_video_media_io() -> None:
    # VideoMediaIO's default num_frames (32) does not cut a sampler's 40 frames.
    io = VideoMediaIO(ImageMediaIO(), video_backend="qwen3_vl")
    frames, meta = io.load_bytes(_clip(600))
    expected = qwen3_vl_indices(600, 30.0)
    assert len(expected) == 40
    assert meta["frames_indices"] == expected and read_numbers(frames) == _numbers(expected)


def test_options_reach_the_sampler_through_video_media_io() -> None:
    io = VideoMediaIO(
        ImageMediaIO(), video_backend="qwen2_vl", fps=1, max_frames=8, temporal_patch_size=4
    )
    frames, meta = io.load_bytes(_clip(451))
    expected = qwen2_vl_indices(451, 30.0, fps=1, max_frames=8, temporal_patch_size=4)
    assert len(expected) == 8
    assert meta["frames_indices"] == expected and read_numbers(frames) == _numbers(expected)


def test_policy_frame_cap_bounds_the_qwen_samplers_as_max_frames() -> None:
    policy = MediaPolicy(max_video_frames=10)
    for backend, rule in (("qwen3_vl", qwen3_vl_indices), ("qwen2_vl", qwen2_vl_indices)):
        io = VideoMediaIO(ImageMediaIO(), video_backend=backend, policy=policy)
        frames, meta = io.load_bytes(_clip(600))
        assert meta["frames_indices"] == rule(600, 30.0, max_frames=10)
        assert len(frames) == 10
        assert read_numbers(frames) == _numbers(meta["frames_indices"])


def test_policy_frame_cap_thins_the_dynamic_sampler_evenly() -> None:
    io = VideoMediaIO(
        ImageMediaIO(),
        video_backend="opencv_dynamic",
        fps=30,
        policy=MediaPolicy(max_video_frames=10),
    )
    frames, meta = io.load_bytes(_clip(60))
    assert meta["frames_indices"] == [0, 6, 13, 19, 26, 32, 39, 45, 52, 59]
    assert read_numbers(frames) == _numbers(meta["frames_indices"])


def test_dynamic_sampler_on_a_clip_too_short_for_its_rate() -> None:
    frames, meta = DynamicSampler().load_bytes(_clip(3))
    assert meta["frames_indices"] == [0] and read_numbers(frames) == [0]


def test_qwen2_vl_sampler_on_a_one_frame_clip_is_a_decode_error() -> None:
    with pytest.raises(DecodeError, match="temporal_patch_size"):
        Qwen2VLSampler().load_bytes(_clip(1))


# -- the processor table and the connector ------------------------------------------------


def test_processor_table_is_vllms_for_the_samplers_here() -> None:
    assert VIDEO_PROCESSOR_BACKENDS == {
        "Qwen3VLVideoProcessor": "qwen3_vl",
        "Cosmos3EdgeVideoProcessor": "qwen3_vl",
        "Qwen2VLVideoProcessor": "qwen2_vl",
        "Glm4vVideoProcessor": "opencv_dynamic",
    }
    for processor, backend in VIDEO_PROCESSOR_BACKENDS.items():
        assert backend_for_video_processor(processor) == backend
        assert backend in VIDEO_LOADER_REGISTRY
    # vLLM's processors without a sampler here, and unknown ones: the default backend.
    for processor in ("EmbeddingGemma2VideoProcessor", "Molmo2VideoProcessor", "Nope", None):
        assert backend_for_video_processor(processor) is None


def test_samplers_are_registered_lazily_under_vllms_names() -> None:
    for name, cls in (
        ("qwen3_vl", Qwen3VLSampler),
        ("qwen2_vl", Qwen2VLSampler),
        ("opencv_dynamic", DynamicSampler),
    ):
        assert VIDEO_LOADER_REGISTRY.get(name) is cls
        assert cls.name == name and cls.takes_num_frames is False
    assert VideoMediaIO(ImageMediaIO(), video_backend="qwen3_vl").isolatable


@pytest.mark.parametrize(
    ("processor", "rule", "backend"),
    [
        ("Qwen3VLVideoProcessor", qwen3_vl_indices, "opencv"),
        ("Cosmos3EdgeVideoProcessor", qwen3_vl_indices, "opencv"),
        ("Qwen2VLVideoProcessor", qwen2_vl_indices, "opencv"),
    ],
)
def test_connector_samples_for_the_models_processor(
    processor: str, rule: Callable[..., list[int]], backend: str
) -> None:
    url = "data:video/mp4;base64," + base64.b64encode(_clip(451)).decode("ascii")
    connector = MediaConnector(media_io_kwargs={"video": {"max_frames": 8}})
    frames, meta = connector.fetch_video(url, video_processor=processor)
    expected = rule(451, 30.0, max_frames=8)
    assert len(expected) == 8
    assert meta["frames_indices"] == expected and meta["video_backend"] == backend
    assert read_numbers(frames) == _numbers(expected)


def test_connector_glm4v_gets_the_dynamic_sampler() -> None:
    url = "data:video/mp4;base64," + base64.b64encode(_clip(451)).decode("ascii")
    frames, meta = MediaConnector().fetch_video(url, video_processor="Glm4vVideoProcessor")
    assert meta["frames_indices"] == QWEN2_451 and meta["video_backend"] == "opencv_dynamic"
    assert read_numbers(frames) == _numbers(QWEN2_451)


def test_sampler_options_are_accepted_and_unused_by_the_uniform_backends() -> None:
    plain = VideoMediaIO(ImageMediaIO(), 4).load_bytes(_clip(60))
    io = VideoMediaIO(ImageMediaIO(), 4, min_frames=2, max_frames=8, temporal_patch_size=2)
    frames, meta = io.load_bytes(_clip(60))
    assert meta == plain[1] and np.array_equal(frames, plain[0])


def test_options_another_sampler_takes_are_accepted_like_vllm() -> None:
    # vLLM's qwen3_vl loader ignores temporal_patch_size and max_duration, too.
    io = VideoMediaIO(
        ImageMediaIO(), video_backend="qwen3_vl", temporal_patch_size=4, max_duration=10
    )
    _, meta = io.load_bytes(_clip(60))
    assert meta["frames_indices"] == [0, 20, 39, 59]


# -- hostile options ----------------------------------------------------------------------

_NOT_A_NUMBER = ["2", b"2", [2], {"x": 2}, True, object()]
_BAD_FPS = [*_NOT_A_NUMBER, math.nan, math.inf, -math.inf, -1, 0, 0.0, 1001, 1e300, 10**400]
_BAD_COUNT = [*_NOT_A_NUMBER, 1.5, math.nan, math.inf, -1, 0, 100_001, 10**12, 10**400]
_BAD_PATCH = [*_NOT_A_NUMBER, 0, -2, 2.5, 17, 10**400, math.nan]
_BAD_DURATION = [*_NOT_A_NUMBER, math.nan, math.inf, -5, 0, 86_401, 1e300, 10**400]

_HOSTILE = [
    *((b, "fps", v) for b in ("qwen3_vl", "qwen2_vl", "opencv_dynamic") for v in _BAD_FPS),
    *(
        (b, k, v)
        for b in ("qwen3_vl", "qwen2_vl")
        for k in ("min_frames", "max_frames")
        for v in _BAD_COUNT
    ),
    *(("qwen2_vl", "temporal_patch_size", v) for v in _BAD_PATCH),
    *(("opencv_dynamic", "max_duration", v) for v in _BAD_DURATION),
]


@pytest.mark.parametrize(("backend", "key", "value"), _HOSTILE)
def test_hostile_options_are_option_errors_when_the_io_is_built(
    backend: str, key: str, value: Any
) -> None:
    with pytest.raises(OptionError) as info:
        VideoMediaIO(ImageMediaIO(), video_backend=backend, **{key: value})
    assert info.value.option == key


@pytest.mark.parametrize(("backend", "key", "value"), _HOSTILE)
def test_hostile_options_are_option_errors_before_any_decoding(
    backend: str, key: str, value: Any
) -> None:
    loader = VIDEO_LOADER_REGISTRY.load(backend)
    with pytest.raises(OptionError) as info:
        loader.load_bytes(b"not a video at all", **{key: value})
    assert info.value.option == key


@pytest.mark.parametrize("backend", ["qwen3_vl", "qwen2_vl", "opencv_dynamic"])
def test_unknown_options_are_refused(backend: str) -> None:
    with pytest.raises(OptionError, match="unknown video option 'frames_per_second'"):
        VideoMediaIO(ImageMediaIO(), video_backend=backend, frames_per_second=2)


@pytest.mark.parametrize("value", [1, 1000, 2.5, np.float32(4.0), np.int64(3)])
def test_fps_in_range_is_accepted(value: Any) -> None:
    for backend in ("qwen3_vl", "qwen2_vl", "opencv_dynamic"):
        VideoMediaIO(ImageMediaIO(), video_backend=backend, fps=value)


def test_integral_floats_count_as_integers() -> None:
    io = VideoMediaIO(ImageMediaIO(), video_backend="qwen3_vl", max_frames=8.0, min_frames=2.0)
    assert io.loader_options == {"max_frames": 8, "min_frames": 2}

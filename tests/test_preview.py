"""Pictures of what a model receives: images, contact sheets, audio strips, histograms."""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
import torch
from PIL import Image, ImageDraw

from builders import LEFT_HZ, RIGHT_HZ, gradient, png_bytes, tone
from mediagate import ImageMediaIO, OptionError
from mediagate._preview import (
    BACKGROUND,
    HISTOGRAM_BINS,
    HISTOGRAM_HEIGHT,
    MAX_CHANNELS,
    MAX_SIDE,
    MAX_TILES,
    SPECTROGRAM_HEIGHT,
    STRIP,
    WAVEFORM_HEIGHT,
    Preview,
    _Text,
    check_preview_path,
    render_preview,
    write_preview,
)

COLOURS = [
    (255, 0, 0),
    (0, 255, 0),
    (0, 0, 255),
    (255, 255, 0),
    (0, 255, 255),
    (255, 0, 255),
    (255, 255, 255),
    (10, 20, 30),
    (200, 100, 50),
    (50, 100, 200),
]


def region(preview: Preview, name: str) -> npt.NDArray[np.uint8]:
    return np.asarray(preview.image.crop(preview.regions[name]))


def inked(pixels: npt.NDArray[np.uint8], background: tuple[int, int, int] = BACKGROUND) -> int:
    """How many pixels differ from the background."""
    return int(np.count_nonzero(np.any(pixels != np.array(background, np.uint8), axis=-1)))


def lettering(lines: list[str], size: int, box: tuple[int, int, int, int]) -> npt.NDArray[np.uint8]:
    """``lines`` as the preview letters them, on a canvas the size of ``box``."""
    text = _Text(size)
    canvas = Image.new("RGB", (box[2] - box[0], box[3] - box[1]), BACKGROUND)
    text.draw(ImageDraw.Draw(canvas), (0, 0), lines)
    return np.asarray(canvas)


def solid_frames(colours: list[tuple[int, int, int]], size: tuple[int, int] = (64, 48)) -> Any:
    return np.stack([np.full((size[1], size[0], 3), c, np.uint8) for c in colours])


# -- images ------------------------------------------------------------------------------


def test_a_small_image_is_shown_pixel_for_pixel_over_its_caption() -> None:
    pixels = gradient(40, 30)
    preview = render_preview("image", Image.fromarray(pixels))
    assert np.array_equal(region(preview, "image"), pixels)
    image_box, caption = preview.regions["image"], preview.regions["caption"]
    assert caption[1] > image_box[3]  # the caption is under the image
    expected = lettering(["image 40x30, mode RGB", "array [30, 40, 3] uint8"], 15, caption)
    assert inked(expected) > 100
    assert np.array_equal(region(preview, "caption"), expected)


def test_what_the_loader_returns_is_drawn_as_it_is() -> None:
    result = ImageMediaIO().load_bytes(png_bytes())
    preview = render_preview("image", result)
    assert np.array_equal(region(preview, "image"), gradient(40, 30))


def test_a_large_image_is_scaled_down_to_the_width() -> None:
    pixels = gradient(3000, 1000)
    preview = render_preview("image", Image.fromarray(pixels))
    assert preview.image.width == 1024
    left, top, right, bottom = preview.regions["image"]
    assert (right - left, bottom - top) == (1008, 336)
    reduced = np.asarray(Image.fromarray(pixels).resize((1008, 336), Image.Resampling.BOX))
    assert np.abs(region(preview, "image").astype(int) - reduced).mean() < 2
    lines = ["image 3000x1000, mode RGB", "array [1000, 3000, 3] uint8", "shown at 1008x336"]
    assert np.array_equal(
        region(preview, "caption"), lettering(lines, 15, preview.regions["caption"])
    )


def test_a_huge_image_makes_a_bounded_picture() -> None:
    preview = render_preview("image", Image.new("L", (6000, 6000), 77), max_width=512)
    assert preview.image.width == 512 and preview.image.height < 600
    assert (region(preview, "image") == 77).all()
    out = io.BytesIO()
    preview.image.save(out, format="PNG")
    assert len(out.getvalue()) < 200_000


def test_transparency_shows_a_checkerboard_and_opaque_pixels_their_colour() -> None:
    pixels = np.zeros((32, 64, 4), np.uint8)
    pixels[:, :32] = (200, 10, 10, 255)  # left half opaque red, right half transparent
    shown = region(render_preview("image", Image.fromarray(pixels, "RGBA")), "image")
    assert (shown[:, :32] == (200, 10, 10)).all()
    assert len({tuple(p) for p in shown[:, 32:].reshape(-1, 3)}) == 2  # two checker greys


@pytest.mark.parametrize("mode", ["I;16", "I", "F"])
def test_deep_pixels_are_stretched_from_their_own_range(mode: str) -> None:
    values = np.zeros((20, 30), np.float32 if mode == "F" else np.uint16)
    values[:, 15:] = 4000
    image = Image.fromarray(values) if mode != "I" else Image.fromarray(values).convert("I")
    if mode == "F":
        values = values.astype(np.float32)
        values[0, 0] = np.nan
        image = Image.fromarray(values, "F")
    shown = region(render_preview("image", image), "image")
    assert (shown[1:, :15] == 0).all() and (shown[:, 15:] == 255).all()


# -- video -------------------------------------------------------------------------------


def video_metadata(count: int, step: int = 30, fps: float = 30.0) -> dict[str, Any]:
    indices = list(range(0, count * step, step))
    return {
        "total_num_frames": count * step,
        "fps": fps,
        "duration": count * step / fps,
        "video_backend": "pyav",
        "frames_indices": indices,
        "timestamps": [i / fps for i in indices],
        "width": 64,
        "height": 48,
    }


def test_a_contact_sheet_shows_each_frame_in_order_with_its_index_and_time() -> None:
    preview = render_preview("video", (solid_frames(COLOURS), video_metadata(10)))
    assert preview.frames == tuple(range(10))
    boxes = [preview.regions[f"tile {k}"] for k in range(10)]
    # Four to a row (ceil(sqrt(10))), left to right, then the next row below.
    assert [b[1] for b in boxes[:4]] == [boxes[0][1]] * 4
    assert boxes[4][1] > boxes[0][3] and boxes[8][1] > boxes[4][3]
    assert [b[0] for b in boxes[:4]] == sorted(b[0] for b in boxes[:4])
    for k, (box, colour) in enumerate(zip(boxes, COLOURS, strict=True)):
        centre = preview.image.getpixel(((box[0] + box[2]) // 2, (box[1] + box[3]) // 2))
        assert centre == colour, k
        assert (region(preview, f"tile {k}") == colour).all()
        label = preview.regions[f"label {k}"]
        assert label[1] >= box[3] and label[0] <= box[0] < box[2] <= label[2]
        expected = lettering([f"#{k * 30}  {k:.2f} s"], 12, label)
        assert inked(expected) > 20
        assert np.array_equal(region(preview, f"label {k}"), expected), k
    header = ["video: 10 frames sampled of 300 (pyav)", "source 64x48, 30 fps, 10.00 s"]
    assert np.array_equal(
        region(preview, "header"), lettering(header, 15, preview.regions["header"])
    )


def test_labels_fall_back_to_index_over_fps_and_to_the_index_alone() -> None:
    frames = solid_frames(COLOURS[:2])
    timed = render_preview("video", (frames, {"fps": 10.0, "frames_indices": [0, 25]}))
    assert np.array_equal(
        region(timed, "label 1"), lettering(["#25  2.50 s"], 12, timed.regions["label 1"])
    )
    bare = render_preview("video", (frames, {}))
    assert np.array_equal(region(bare, "label 1"), lettering(["#1"], 12, bare.regions["label 1"]))


def test_a_resized_video_names_both_sizes() -> None:
    metadata = {**video_metadata(2), "original_width": 1920, "original_height": 1080}
    preview = render_preview("video", (solid_frames(COLOURS[:2]), metadata))
    header = [
        "video: 2 frames sampled of 60 (pyav)",
        "source 1920x1080, frames 64x48, 30 fps, 2.00 s",
    ]
    assert np.array_equal(
        region(preview, "header"), lettering(header, 15, preview.regions["header"])
    )


def test_a_thousand_frames_make_a_bounded_sheet_with_the_first_and_last() -> None:
    count = 1024
    colours = [(i % 256, (i * 7) % 256, 255 - i % 256) for i in range(count)]
    frames = solid_frames(colours, (32, 32))
    preview = render_preview("video", (frames, video_metadata(count, step=1)))
    assert len(preview.frames) == MAX_TILES
    assert preview.frames[0] == 0 and preview.frames[-1] == count - 1
    assert max(preview.image.size) <= MAX_SIDE and preview.image.width <= 1024
    last = preview.regions[f"tile {MAX_TILES - 1}"]
    assert (region(preview, f"tile {MAX_TILES - 1}") == colours[-1]).all()
    assert last[3] <= preview.image.height
    header = preview.regions["header"]
    lines = [
        "video: 1024 frames sampled of 1024 (pyav)",
        "source 64x48, frames 32x32, 30 fps, 34.13 s",
        "showing 64 of the 1024 frames, evenly spread",
    ]
    assert np.array_equal(region(preview, "header"), lettering(lines, 15, header))


def test_one_tall_frame_stays_inside_the_largest_side() -> None:
    frames = np.full((1, 4000, 16, 3), 90, np.uint8)
    preview = render_preview("video", (frames, {"fps": 1.0}), max_width=MAX_SIDE)
    assert max(preview.image.size) <= MAX_SIDE
    assert (region(preview, "tile 0") == 90).all()


# -- audio -------------------------------------------------------------------------------


def peak_row(preview: Preview, name: str) -> int:
    """The brightest row of a spectrogram strip, from its top."""
    levels = np.asarray(preview.image.crop(preview.regions[name]).convert("L"), np.float64)
    return int(np.argmax(levels.mean(axis=1)))


def expected_row(hz: float, rate: int) -> int:
    return SPECTROGRAM_HEIGHT - 1 - math.floor(hz / (rate / 2) * SPECTROGRAM_HEIGHT)


def wave_extent(preview: Preview, name: str) -> tuple[int, int]:
    """The highest and lowest rows the waveform reaches."""
    strip = region(preview, name)
    rows = np.flatnonzero(np.all(strip == (90, 200, 255), axis=-1).any(axis=1))
    return int(rows.min()), int(rows.max())


def test_a_sine_shows_its_amplitude_and_its_frequency() -> None:
    rate = 16000
    audio = tone(1.0, rate, channels=2)[:, 1] / 0.3 * 0.5  # 1000 Hz at amplitude 0.5
    preview = render_preview("audio", (audio, rate))
    assert set(preview.regions) == {"header", "waveform 0", "spectrogram 0"}
    assert preview.regions["waveform 0"][3] < preview.regions["spectrogram 0"][1]
    assert abs(peak_row(preview, "spectrogram 0") - expected_row(RIGHT_HZ, rate)) <= 1
    middle = (WAVEFORM_HEIGHT - 1) / 2
    top, bottom = wave_extent(preview, "waveform 0")
    assert abs(top - (middle - 0.5 * middle)) <= 2 and abs(bottom - (middle + 0.5 * middle)) <= 2
    header = ["audio: 1.00 s at 16000 Hz, 1 channel(s), 16000 samples float32", "peak 0.500"]
    assert np.array_equal(
        region(preview, "header"), lettering(header, 15, preview.regions["header"])
    )


@pytest.mark.parametrize("layout", ["samples-channels", "channels-samples"])
def test_each_channel_has_its_own_strips(layout: str) -> None:
    rate = 22050
    audio = tone(0.5, rate, channels=2)
    preview = render_preview("audio", (audio if layout == "samples-channels" else audio.T, rate))
    assert abs(peak_row(preview, "spectrogram 0") - expected_row(LEFT_HZ, rate)) <= 1
    assert abs(peak_row(preview, "spectrogram 1") - expected_row(RIGHT_HZ, rate)) <= 1
    assert preview.regions["spectrogram 0"][3] < preview.regions["waveform 1"][1]


def test_many_channels_draw_the_first_few() -> None:
    audio = np.zeros((1000, 9), np.float32)
    preview = render_preview("audio", (audio, 8000))
    assert f"waveform {MAX_CHANNELS - 1}" in preview.regions
    assert f"waveform {MAX_CHANNELS}" not in preview.regions
    assert preview.image.height < 4 * (WAVEFORM_HEIGHT + SPECTROGRAM_HEIGHT) + 300


def test_non_finite_samples_are_counted_and_drawn_as_silence() -> None:
    audio = np.zeros(4000, np.float32)
    audio[100:103] = [np.nan, np.inf, -np.inf]
    preview = render_preview("audio", (audio, 8000))
    header = [
        "audio: 0.50 s at 8000 Hz, 1 channel(s), 4000 samples float32",
        "peak 0.000, 3 non-finite samples (drawn as 0)",
    ]
    assert np.array_equal(
        region(preview, "header"), lettering(header, 15, preview.regions["header"])
    )
    middle = round((WAVEFORM_HEIGHT - 1) / 2)
    assert wave_extent(preview, "waveform 0") == (middle, middle)
    # Silence: every spectrogram pixel is the quietest colour.
    assert len({tuple(p) for p in region(preview, "spectrogram 0").reshape(-1, 3)}) == 1


def test_empty_and_rate_less_audio_still_draw() -> None:
    preview = render_preview("audio", (np.zeros(0, np.float32), 0))
    assert "spectrogram 0" in preview.regions
    assert inked(region(preview, "header")) > 100


def test_ten_minutes_of_audio_make_the_same_size_of_picture() -> None:
    rate = 16000
    short = render_preview("audio", (np.zeros(rate, np.float32), rate))
    t = np.arange(600 * rate, dtype=np.float32) / rate
    long = render_preview("audio", (np.sin(2 * np.pi * 2000 * t).astype(np.float32), rate))
    assert long.image.size == short.image.size
    assert abs(peak_row(long, "spectrogram 0") - expected_row(2000, rate)) <= 1


# -- tensors -----------------------------------------------------------------------------


def bar_heights(preview: Preview) -> list[int]:
    """The height of each histogram bar, from the strip's bottom row up."""
    strip = region(preview, "histogram")
    width = strip.shape[1]
    heights = []
    for i in range(HISTOGRAM_BINS):
        column = strip[:, (i * width) // HISTOGRAM_BINS]
        heights.append(int(np.count_nonzero(np.all(column == (255, 170, 60), axis=-1))))
    return heights


def test_the_histogram_counts_known_values() -> None:
    values = torch.tensor([0.0] * 10 + [1.0] * 30 + [0.5] * 15)
    preview = render_preview("image_embedding", values)
    heights = bar_heights(preview)
    assert heights[-1] == HISTOGRAM_HEIGHT
    assert heights[0] == round(HISTOGRAM_HEIGHT / 3)
    assert heights[HISTOGRAM_BINS // 2] == round(HISTOGRAM_HEIGHT / 2)
    assert sum(1 for h in heights if h) == 3
    header = [
        "image_embedding tensor [55] float32, 55 values",
        "finite values 0 .. 1, mean 0.681818",
    ]
    assert np.array_equal(
        region(preview, "header"), lettering(header, 15, preview.regions["header"])
    )


def test_non_finite_values_are_counted_and_left_out_of_the_histogram() -> None:
    values = np.array([np.nan, np.nan, np.inf, -np.inf, 2.0, 2.0, 4.0], np.float64)
    preview = render_preview("audio_embedding", values.reshape(7, 1))
    heights = bar_heights(preview)
    assert heights[0] == HISTOGRAM_HEIGHT and heights[-1] == HISTOGRAM_HEIGHT // 2
    header = [
        "audio_embedding tensor [7, 1] float64, 7 values",
        "finite values 2 .. 4, mean 2.66667",
        "non-finite: 2 NaN, 1 +inf, 1 -inf (not in the histogram)",
    ]
    assert np.array_equal(
        region(preview, "header"), lettering(header, 15, preview.regions["header"])
    )


def test_no_finite_value_draws_an_empty_histogram() -> None:
    preview = render_preview("image_embedding", torch.full((3,), float("nan")))
    assert not any(bar_heights(preview))
    assert (region(preview, "histogram") == STRIP).all()


@pytest.mark.parametrize(
    "tensor",
    [
        torch.ones(4, 4, dtype=torch.bfloat16),
        torch.zeros(8, dtype=torch.float8_e4m3fn),
        torch.tensor([True, False, True]),
        torch.tensor([-(2**63), 2**63 - 1], dtype=torch.int64),
        torch.tensor([-1.7e308, 1.7e308], dtype=torch.float64),
        torch.zeros(0, 5),
        np.arange(6, dtype=np.int16).reshape(2, 3),
    ],
    ids=["bfloat16", "float8", "bool", "int64-extremes", "float64-extremes", "empty", "numpy"],
)
def test_every_tensor_dtype_draws(tensor: Any) -> None:
    preview = render_preview("image_embedding", tensor)
    assert preview.image.size[0] == 1024
    assert inked(region(preview, "header")) > 100
    if int(np.prod(tensor.shape)):
        assert any(bar_heights(preview))


# -- the file and the options --------------------------------------------------------------


def test_write_preview_writes_a_png_and_replaces_an_old_one(tmp_path: Path) -> None:
    target = tmp_path / "out.png"
    target.write_bytes(b"old")
    write_preview(target, "image", Image.fromarray(gradient(40, 30)))
    with Image.open(target) as written:
        assert written.format == "PNG" and written.size == (320, 96)
        assert np.array_equal(np.asarray(written.convert("RGB"))[8:38, 8:48], gradient(40, 30))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.png"]


@pytest.mark.parametrize("name", ["out.jpg", "out", "out.png.npy", ".png"])
def test_only_png_names_are_taken(tmp_path: Path, name: str) -> None:
    with pytest.raises(OptionError, match=r"\.png"):
        check_preview_path(tmp_path / name)
    assert list(tmp_path.iterdir()) == []


def test_a_folder_is_never_replaced(tmp_path: Path) -> None:
    folder = tmp_path / "keep.png"
    folder.mkdir()
    (folder / "inside").write_text("x")
    with pytest.raises(OptionError, match="is a folder"):
        write_preview(folder, "image", Image.new("RGB", (4, 4)))
    # Made into a folder after the check: the rename refuses too.
    late = tmp_path / "late.png"
    preview = render_preview("image", Image.new("RGB", (4, 4)))
    check_preview_path(late)
    late.mkdir()
    with pytest.raises(OptionError, match=r"late\.png"):
        preview.save(late)
    assert (folder / "inside").read_text() == "x" and late.is_dir()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.png", "late.png"]


def test_a_missing_folder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(OptionError, match="does not exist"):
        check_preview_path(tmp_path / "no" / "out.png")


@pytest.mark.parametrize("width", [0, 255, 4097, True, 1024.0])
def test_a_bad_width_is_an_option_error(width: Any) -> None:
    with pytest.raises(OptionError):
        render_preview("image", Image.new("RGB", (4, 4)), max_width=width)


def test_an_unknown_modality_is_an_option_error() -> None:
    with pytest.raises(OptionError, match="unknown modality"):
        render_preview("hologram", Image.new("RGB", (4, 4)))

"""Pictures of what a model receives (``mediagate fetch --preview FILE.png``).

One PNG per loaded result, drawn with Pillow and its default font:

- an image: the image itself, scaled down to fit the width if larger (never up), over a
  caption with its size, mode and array shape;
- a video: a header (frames sampled, source size, fps, duration), then a contact sheet
  of the sampled frames in rows, left to right, each tile over a label with the frame's
  index in the source and its presentation time;
- audio: a header (duration, rate, channels, peak), then per channel a waveform strip
  (the minimum and maximum of the samples under each pixel column) and a spectrogram
  strip (numpy FFT, frequency from 0 Hz at the bottom to the Nyquist rate at the top);
- a tensor (an embedding): a header (shape, dtype, finite range and mean, non-finite
  counts) and a histogram of its finite values.

The picture is bounded whatever the media: its width is at most ``max_width`` (default
1024, at most ``MAX_SIDE``), a video shows at most ``MAX_TILES`` of its frames, audio at
most ``MAX_CHANNELS`` channels, and no side exceeds ``MAX_SIDE``. NaN and infinite
samples or values are counted and shown, never drawn.

``Preview.regions`` names where each part of the picture is, as Pillow boxes
``(left, top, right, bottom)``.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw, ImageFont

from ._errors import OptionError
from ._media.results import MediaWithBytes
from ._modalities import modality_name
from ._save import check_save_path, check_target, save_media, write_atomically

__all__ = [
    "DEFAULT_WIDTH",
    "HISTOGRAM_BINS",
    "MAX_CHANNELS",
    "MAX_SIDE",
    "MAX_TILES",
    "Box",
    "OutputFiles",
    "Preview",
    "check_preview_path",
    "render_preview",
    "write_preview",
]

Box = tuple[int, int, int, int]

#: Default and largest width of a preview, and the largest side of any preview.
DEFAULT_WIDTH, MIN_WIDTH, MAX_SIDE = 1024, 256, 4096
#: Most frames a contact sheet shows (evenly chosen, first and last included).
MAX_TILES = 64
#: Most audio channels drawn.
MAX_CHANNELS = 4
#: Bins of a tensor's value histogram, over [finite min, finite max].
HISTOGRAM_BINS = 64
#: FFT length of a spectrogram column, and the range of levels it shows below its peak.
SPECTROGRAM_FFT = 1024
SPECTROGRAM_RANGE_DB = 80.0

PAD = 8
WAVEFORM_HEIGHT, SPECTROGRAM_HEIGHT, HISTOGRAM_HEIGHT = 96, 128, 200
BACKGROUND = (24, 24, 24)
STRIP = (0, 0, 0)
INK = (235, 235, 235)
WAVE = (90, 200, 255)
BARS = (255, 170, 60)
_CHECKER = ((200, 200, 200), (150, 150, 150))
#: Spectrogram colours from quiet to loud (brighter as they go).
_HEAT = np.array(
    [(0, 0, 4), (87, 16, 110), (188, 55, 84), (249, 142, 9), (252, 255, 164)], np.float64
)
_CHUNK = 1 << 20


@dataclass(frozen=True)
class Preview:
    """A drawn preview: an RGB picture and the named boxes of its parts.

    Region names: ``caption`` and ``image`` (an image); ``header``, ``tile K`` and
    ``label K`` (a video, K counting tiles in reading order); ``header``,
    ``waveform C`` and ``spectrogram C`` (audio, C the channel); ``header`` and
    ``histogram`` (a tensor).
    """

    image: Image.Image
    regions: Mapping[str, Box]
    #: For a video, the positions in the frames array of the frames the tiles show.
    frames: tuple[int, ...] = field(default=())

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the picture as PNG to ``path`` (atomically: a temporary file, renamed).

        Raises:
            OptionError: ``path`` cannot be written (a folder, no such folder, no right).
        """
        target = Path(path)
        write_atomically(target, lambda tmp: self.image.save(tmp, format="PNG"), "preview")
        return target


def check_preview_path(path: str | os.PathLike[str]) -> Path:
    """The file ``--preview`` writes, checked before anything is loaded.

    Raises:
        OptionError: not a ``.png`` name, an existing folder, or in a missing folder.
    """
    target = Path(path)
    if target.suffix.lower() != ".png":
        raise OptionError(
            f"--preview writes a PNG picture: give a .png file name, not {target.name!r}",
            option="preview",
        )
    check_target(target, "preview")
    return target


def write_preview(
    path: str | os.PathLike[str], modality: str, result: Any, *, max_width: int = DEFAULT_WIDTH
) -> Path:
    """Draw ``result`` (what ``load_media`` gave for ``modality``) and write it to ``path``.

    Raises:
        OptionError: as ``check_preview_path`` and ``Preview.save``, or a bad ``max_width``.
    """
    target = check_preview_path(path)
    return render_preview(modality, result, max_width=max_width).save(target)


@dataclass(frozen=True)
class OutputFiles:
    """The files ``mediagate fetch --preview FILE.png --save FILE`` writes of a load.

    Example::

        outputs = OutputFiles.checked("clip.png", "clip.npz")  # before loading
        outputs.write("video", connector.load_media(url, "video").media)
    """

    preview: Path | None = None
    save: Path | None = None

    @classmethod
    def checked(
        cls, preview: str | os.PathLike[str] | None, save: str | os.PathLike[str] | None
    ) -> OutputFiles:
        """Both targets checked, so a bad one is refused before anything is loaded.

        Raises:
            OptionError: as ``check_preview_path`` and ``check_save_path``.
            ImportError: ``.safetensors`` without the ``safetensors`` package.
        """
        return cls(
            check_preview_path(preview) if preview is not None else None,
            check_save_path(save) if save is not None else None,
        )

    def write(self, modality: str, result: Any) -> None:
        """Write the files asked for of ``result``, loaded as ``modality``.

        Raises:
            OptionError: a file cannot be written.
        """
        if self.preview is not None:
            write_preview(self.preview, modality, result)
        if self.save is not None:
            save_media(self.save, modality, result)

    def written(self) -> dict[str, str]:
        """``preview`` and ``saved``: the paths asked for, for the printed record."""
        paths = {"preview": self.preview, "saved": self.save}
        return {key: str(path) for key, path in paths.items() if path is not None}


def render_preview(modality: str, result: Any, *, max_width: int = DEFAULT_WIDTH) -> Preview:
    """The picture of ``result``, what a load of ``modality`` returned: a PIL image (or
    ``MediaWithBytes`` of one), ``(audio, sample_rate)``, ``(frames, metadata)`` or a
    tensor (torch or numpy).

    Raises:
        OptionError: ``max_width`` is not an int in 256..4096, or an unknown modality.
    """
    if isinstance(max_width, bool) or not isinstance(max_width, int):
        raise OptionError("max_width must be an int", option="max_width")
    if not MIN_WIDTH <= max_width <= MAX_SIDE:
        raise OptionError(
            f"max_width must be in {MIN_WIDTH}..{MAX_SIDE}, not {max_width}", option="max_width"
        )
    name = modality_name(modality)
    media = result.media if isinstance(result, MediaWithBytes) else result
    if name == "image":
        return _image_preview(media, max_width)
    if name == "video":
        frames, metadata = media
        return _video_preview(np.asarray(frames), dict(metadata), max_width)
    if name == "audio":
        audio, rate = media
        return _audio_preview(np.asarray(audio), rate, max_width)
    return _tensor_preview(media, name, max_width)


# -- text --------------------------------------------------------------------------------


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError, ImportError):  # Pillow < 10.1, or no FreeType
        return ImageFont.load_default()


class _Text:
    """Lines of text in one font, wrapped to a width."""

    def __init__(self, size: int) -> None:
        self.font = _font(size)
        self.line = int(self.font.getbbox("Ag|")[3]) + max(2, size // 4)

    def wrap(self, lines: Sequence[str], width: int) -> list[str]:
        out: list[str] = []
        for line in lines:
            current = ""
            for word in _ascii(line).split(" "):
                attempt = f"{current} {word}" if current else word
                if current and self.font.getlength(attempt) > width:
                    out.append(current)
                    current = word
                else:
                    current = attempt
            out.append(current)
        return out

    def height(self, lines: Sequence[str]) -> int:
        return self.line * len(lines)

    def draw(self, draw: ImageDraw.ImageDraw, xy: tuple[int, int], lines: Sequence[str]) -> None:
        x, y = xy
        for i, line in enumerate(lines):
            draw.text((x, y + i * self.line), line, fill=INK, font=self.font)


def _ascii(text: str) -> str:
    return text.encode("ascii", "replace").decode("ascii")


_TITLE, _LABEL = 15, 12


# -- images ------------------------------------------------------------------------------


def _image_preview(media: Any, max_width: int) -> Preview:
    image = media if isinstance(media, Image.Image) else Image.fromarray(np.asarray(media))
    width, height = image.size
    room = max_width - 2 * PAD
    scale = min(1.0, room / width, room / height)
    shown = (max(1, round(width * scale)), max(1, round(height * scale)))
    picture = _displayable(image, shown)
    array = np.asarray(media)
    lines = [
        f"image {width}x{height}, mode {image.mode}",
        f"array {list(array.shape)} {array.dtype}",
    ]
    if shown != (width, height):
        lines.append(f"shown at {shown[0]}x{shown[1]}")
    text = _Text(_TITLE)
    canvas_width = max(shown[0] + 2 * PAD, min(max_width, 320))
    wrapped = text.wrap(lines, canvas_width - 2 * PAD)
    caption_top = PAD + shown[1] + PAD
    canvas = Image.new("RGB", (canvas_width, caption_top + text.height(wrapped) + PAD), BACKGROUND)
    canvas.paste(picture, (PAD, PAD))
    text.draw(ImageDraw.Draw(canvas), (PAD, caption_top), wrapped)
    caption = (PAD, caption_top, canvas_width - PAD, caption_top + text.height(wrapped))
    return Preview(
        canvas, {"image": (PAD, PAD, PAD + shown[0], PAD + shown[1]), "caption": caption}
    )


def _displayable(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """``image`` at ``size`` in RGB: transparency over a checkerboard, 16/32-bit and
    float pixels stretched from their own finite range to black..white."""
    mode = image.mode
    if mode.startswith("I;16"):
        image, mode = image.convert("I"), "I"
    if mode in ("I", "F"):
        values = np.asarray(_resized(image, size), dtype=np.float64)
        finite = values[np.isfinite(values)]
        low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
        span = high - low if high > low else 1.0
        grey = np.clip(np.nan_to_num((values - low) / span * 255.0, nan=0.0), 0, 255)
        return Image.fromarray(grey.astype(np.uint8)).convert("RGB")
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info:
        rgba = _resized(image.convert("RGBA"), size)
        board = _checkerboard(size)
        board.alpha_composite(rgba)
        return board.convert("RGB")
    if mode not in ("RGB", "L"):
        image = image.convert("RGB")
    return _resized(image, size).convert("RGB")


def _resized(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    if image.size == size:
        return image
    return image.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)


def _checkerboard(size: tuple[int, int], cell: int = 8) -> Image.Image:
    y, x = np.mgrid[0 : size[1], 0 : size[0]]
    odd = ((x // cell + y // cell) % 2).astype(bool)
    pixels = np.where(odd[..., None], _CHECKER[1], _CHECKER[0]).astype(np.uint8)
    return Image.fromarray(pixels).convert("RGBA")


# -- video -------------------------------------------------------------------------------


def _video_preview(frames: npt.NDArray[Any], metadata: dict[str, Any], max_width: int) -> Preview:
    if frames.ndim != 4 or frames.shape[-1] not in (1, 3, 4):
        raise ValueError(f"video frames must be [N, H, W, 3], not {list(frames.shape)}")
    count, frame_h, frame_w = (int(d) for d in frames.shape[:3])
    indices = _int_list(metadata.get("frames_indices"), count) or list(range(count))
    fps = _number(metadata.get("fps"))
    times = _float_list(metadata.get("timestamps"), count)
    if times is None and fps:
        times = [i / fps for i in indices]
    shown = _spread(count, MAX_TILES)
    header = _video_header(frames, metadata, fps, len(shown))
    title, label = _Text(_TITLE), _Text(_LABEL)
    room = max_width - 2 * PAD
    header_lines = title.wrap(header, room)
    header_h = title.height(header_lines)
    cols = max(1, math.ceil(math.sqrt(len(shown))))
    rows = max(1, math.ceil(len(shown) / cols))
    tile_w = max(16, min(max(frame_w, 160), (room - PAD * (cols - 1)) // cols))
    label_h = label.line
    top = PAD + header_h + PAD
    room_h = (MAX_SIDE - top - PAD) // rows - label_h - PAD
    box_h = max(8, min(2 * tile_w, room_h, round(tile_w * frame_h / max(frame_w, 1))))
    canvas_w = max(PAD * 2 + cols * tile_w + PAD * (cols - 1), min(max_width, 320))
    canvas_h = top + rows * (box_h + label_h + PAD) if shown else top
    canvas = Image.new("RGB", (canvas_w, canvas_h), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    title.draw(draw, (PAD, PAD), header_lines)
    regions: dict[str, Box] = {"header": (PAD, PAD, canvas_w - PAD, PAD + header_h)}
    scale = min(tile_w / max(frame_w, 1), box_h / max(frame_h, 1))
    fit = (max(1, round(frame_w * scale)), max(1, round(frame_h * scale)))
    for k, position in enumerate(shown):
        row, col = divmod(k, cols)
        x = PAD + col * (tile_w + PAD)
        y = top + row * (box_h + label_h + PAD)
        draw.rectangle((x, y, x + tile_w - 1, y + box_h - 1), fill=STRIP)
        tile = _frame_image(frames[position]).resize(fit, _resample(frame_w, fit[0]))
        left, upper = x + (tile_w - fit[0]) // 2, y + (box_h - fit[1]) // 2
        canvas.paste(tile, (left, upper))
        regions[f"tile {k}"] = (left, upper, left + fit[0], upper + fit[1])
        text = f"#{indices[position]}"
        if times is not None:
            text += f"  {times[position]:.2f} s"
        label.draw(draw, (x, y + box_h), label.wrap([text], tile_w)[:1])
        regions[f"label {k}"] = (x, y + box_h, x + tile_w, y + box_h + label_h)
    return Preview(canvas, regions, tuple(shown))


def _video_header(
    frames: npt.NDArray[Any], metadata: Mapping[str, Any], fps: float | None, tiles: int
) -> list[str]:
    count, height, width = (int(d) for d in frames.shape[:3])
    total = metadata.get("total_num_frames")
    source_w = metadata.get("original_width", metadata.get("width", width))
    source_h = metadata.get("original_height", metadata.get("height", height))
    duration = _number(metadata.get("duration"))
    first = f"video: {count} frames sampled" + (f" of {total}" if total is not None else "")
    backend = metadata.get("video_backend")
    if backend:
        first += f" ({backend})"
    second = [f"source {source_w}x{source_h}"]
    if (source_w, source_h) != (width, height):
        second.append(f"frames {width}x{height}")
    second.append(f"{fps:.3g} fps" if fps else "fps unknown")
    second.append(f"{duration:.2f} s" if duration is not None else "duration unknown")
    lines = [first, ", ".join(second)]
    if tiles < count:
        lines.append(f"showing {tiles} of the {count} frames, evenly spread")
    return lines


def _frame_image(frame: npt.NDArray[Any]) -> Image.Image:
    pixels = frame if frame.dtype == np.uint8 else np.clip(frame, 0, 255).astype(np.uint8)
    if pixels.shape[-1] == 1:
        pixels = pixels[..., 0]
    return Image.fromarray(np.ascontiguousarray(pixels)).convert("RGB")


def _resample(source: int, target: int) -> Image.Resampling:
    # Enlarged frames keep their pixels square; reduced ones are filtered.
    return Image.Resampling.NEAREST if target >= source else Image.Resampling.BILINEAR


def _spread(count: int, most: int) -> list[int]:
    """At most ``most`` positions of ``range(count)``, evenly spread, first and last in."""
    if count <= most:
        return list(range(count))
    return sorted({round(float(p)) for p in np.linspace(0, count - 1, most)})


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
        return None
    number = float(value)
    return number if math.isfinite(number) and number > 0 else None


def _int_list(value: object, count: int) -> list[int] | None:
    if isinstance(value, (list, tuple, np.ndarray)) and len(value) == count:
        try:
            return [int(v) for v in value]
        except (TypeError, ValueError):
            return None
    return None


def _float_list(value: object, count: int) -> list[float] | None:
    if isinstance(value, (list, tuple, np.ndarray)) and len(value) == count:
        try:
            return [float(v) for v in value]
        except (TypeError, ValueError):
            return None
    return None


# -- audio -------------------------------------------------------------------------------


def _audio_preview(audio: npt.NDArray[Any], rate: object, max_width: int) -> Preview:
    channels = _channels(audio)
    samples = int(channels.shape[1])
    hz = int(rate) if isinstance(rate, (int, np.integer)) and not isinstance(rate, bool) else 0
    finite_count = 0
    peak = 0.0
    for channel in channels:
        finite = np.isfinite(channel)
        finite_count += int(np.count_nonzero(finite))
        if finite.any():
            peak = max(peak, float(np.max(np.abs(channel[finite]))))
    bad = channels.size - finite_count
    shown = channels[:MAX_CHANNELS]
    seconds = f"{samples / hz:.2f} s at {hz} Hz" if hz > 0 else "sample rate unknown"
    lines = [
        f"audio: {seconds}, {len(channels)} channel(s), {samples} samples {audio.dtype}",
        f"peak {peak:.3f}" + (f", {bad} non-finite samples (drawn as 0)" if bad else ""),
    ]
    if len(shown) < len(channels):
        lines.append(f"showing {len(shown)} of the {len(channels)} channels")
    title, label = _Text(_TITLE), _Text(_LABEL)
    room = max_width - 2 * PAD
    header = title.wrap(lines, room)
    nyquist = hz / 2 if hz > 0 else 0.5
    block = 2 * label.line + WAVEFORM_HEIGHT + SPECTROGRAM_HEIGHT + 2 * PAD
    top = PAD + title.height(header) + PAD
    canvas = Image.new("RGB", (max_width, top + len(shown) * block), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    title.draw(draw, (PAD, PAD), header)
    regions: dict[str, Box] = {"header": (PAD, PAD, max_width - PAD, top - PAD)}
    scale = max(1.0, peak)
    for c, channel in enumerate(shown):
        clean = channel if bad == 0 else np.where(np.isfinite(channel), channel, 0.0)
        y = top + c * block
        name = f"channel {c}: " if len(channels) > 1 else ""
        label.draw(draw, (PAD, y), [f"{name}waveform, full scale +-{scale:.3g}"])
        box = (PAD, y + label.line, PAD + room, y + label.line + WAVEFORM_HEIGHT)
        canvas.paste(_waveform(clean, room, WAVEFORM_HEIGHT, scale), box[:2])
        regions[f"waveform {c}"] = box
        y = box[3] + PAD
        label.draw(draw, (PAD, y), [f"{name}spectrogram, 0 to {nyquist:.0f} Hz upwards"])
        box = (PAD, y + label.line, PAD + room, y + label.line + SPECTROGRAM_HEIGHT)
        canvas.paste(_spectrogram(clean, room, SPECTROGRAM_HEIGHT), box[:2])
        regions[f"spectrogram {c}"] = box
    return Preview(canvas, regions)


def _channels(audio: npt.NDArray[Any]) -> npt.NDArray[Any]:
    """``[channels, samples]``: mono as one channel; 2-D audio has its channels on the
    shorter axis (``[samples, channels]`` as soundfile gives, or ``[channels, samples]``)."""
    if audio.ndim == 1:
        return audio[None, :]
    if audio.ndim != 2:
        raise ValueError(f"audio must be [samples] or [samples, channels], not {audio.shape}")
    return audio if audio.shape[0] < audio.shape[1] else audio.T


def _waveform(samples: npt.NDArray[Any], width: int, height: int, scale: float) -> Image.Image:
    strip = Image.new("RGB", (width, height), STRIP)
    draw = ImageDraw.Draw(strip)
    middle = (height - 1) / 2
    draw.line((0, round(middle), width - 1, round(middle)), fill=(60, 60, 60))
    if samples.size == 0:
        return strip
    starts = (np.arange(width) * samples.size) // width
    low = np.minimum.reduceat(samples, starts)
    high = np.maximum.reduceat(samples, starts)
    for x in range(width):
        top = round(middle - float(high[x]) / scale * middle)
        bottom = round(middle - float(low[x]) / scale * middle)
        draw.line((x, top, x, bottom), fill=WAVE)
    return strip


def _spectrogram(samples: npt.NDArray[Any], width: int, height: int) -> Image.Image:
    """Columns of FFT levels (dB, the top ``SPECTROGRAM_RANGE_DB`` shown), each row the
    loudest of the bins it covers; frequency rises from the bottom row."""
    n = SPECTROGRAM_FFT
    if samples.size < n:
        samples = np.pad(samples, (0, n - samples.size))
    starts = np.linspace(0, samples.size - n, width).astype(np.int64)
    window = np.hanning(n).astype(np.float32)
    levels = np.empty((width, n // 2 + 1), np.float32)
    for first in range(0, width, 128):
        chunk = starts[first : first + 128]
        framed = np.stack([samples[s : s + n] for s in chunk]).astype(np.float32) * window
        power = np.abs(np.fft.rfft(framed, axis=1)) ** 2
        levels[first : first + len(chunk)] = 10 * np.log10(power + 1e-20)
    bins = levels.shape[1]
    rows = np.maximum.reduceat(levels, (np.arange(height) * bins) // height, axis=1)
    loudest = float(rows.max())
    if loudest <= -150:  # silence
        heat = np.zeros_like(rows)
    else:
        heat = np.clip((rows - loudest + SPECTROGRAM_RANGE_DB) / SPECTROGRAM_RANGE_DB, 0, 1)
    pixels = _colour(heat.T[::-1])
    return Image.fromarray(pixels)


def _colour(heat: npt.NDArray[Any]) -> npt.NDArray[np.uint8]:
    """Levels in 0..1 to RGB along ``_HEAT``."""
    position = heat * (len(_HEAT) - 1)
    low = np.minimum(position.astype(np.int64), len(_HEAT) - 2)
    frac = (position - low)[..., None]
    mixed = _HEAT[low] * (1 - frac) + _HEAT[low + 1] * frac
    result: npt.NDArray[np.uint8] = np.round(mixed).astype(np.uint8)
    return result


# -- tensors -----------------------------------------------------------------------------


@dataclass
class _Stats:
    count: int = 0
    nan: int = 0
    pos_inf: int = 0
    neg_inf: int = 0
    low: float = math.inf
    high: float = -math.inf
    total: float = 0.0

    @property
    def finite(self) -> int:
        return self.count - self.nan - self.pos_inf - self.neg_inf


def _tensor_preview(tensor: Any, modality: str, max_width: int) -> Preview:
    shape = [int(d) for d in tensor.shape]
    dtype = str(tensor.dtype).replace("torch.", "")
    stats = _Stats()
    for chunk in _flat_chunks(tensor):
        stats.count += chunk.size
        stats.nan += int(np.count_nonzero(np.isnan(chunk)))
        stats.pos_inf += int(np.count_nonzero(chunk == np.inf))
        stats.neg_inf += int(np.count_nonzero(chunk == -np.inf))
        finite = chunk[np.isfinite(chunk)]
        if finite.size:
            stats.low = min(stats.low, float(finite.min()))
            stats.high = max(stats.high, float(finite.max()))
            stats.total += float(finite.sum())
    lines = [f"{modality} tensor {shape} {dtype}, {stats.count} values"]
    if stats.finite:
        mean = stats.total / stats.finite
        lines.append(f"finite values {stats.low:.6g} .. {stats.high:.6g}, mean {mean:.6g}")
    else:
        lines.append("no finite values")
    if stats.finite < stats.count:
        lines.append(
            f"non-finite: {stats.nan} NaN, {stats.pos_inf} +inf, {stats.neg_inf} -inf "
            "(not in the histogram)"
        )
    counts, (low, high) = _histogram(tensor, stats)
    title, label = _Text(_TITLE), _Text(_LABEL)
    room = max_width - 2 * PAD
    header = title.wrap(lines, room)
    top = PAD + title.height(header) + PAD
    canvas = Image.new("RGB", (max_width, top + HISTOGRAM_HEIGHT + label.line + PAD), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    title.draw(draw, (PAD, PAD), header)
    box = (PAD, top, PAD + room, top + HISTOGRAM_HEIGHT)
    draw.rectangle((box[0], box[1], box[2] - 1, box[3] - 1), fill=STRIP)
    tallest = int(counts.max()) if counts.size else 0
    for i, count in enumerate(counts):
        if not count:
            continue
        left = box[0] + (i * room) // HISTOGRAM_BINS
        right = box[0] + ((i + 1) * room) // HISTOGRAM_BINS - 1
        bar = max(1, round(int(count) / tallest * HISTOGRAM_HEIGHT))
        draw.rectangle((left, box[3] - bar, right, box[3] - 1), fill=BARS)
    if stats.finite:
        low_text, high_text = f"{low:.4g}", f"{high:.4g}"
        label.draw(draw, (PAD, box[3] + 2), [low_text])
        width = int(label.font.getlength(high_text))
        label.draw(draw, (box[2] - width, box[3] + 2), [high_text])
    return Preview(canvas, {"header": (PAD, PAD, max_width - PAD, top - PAD), "histogram": box})


def _histogram(tensor: Any, stats: _Stats) -> tuple[npt.NDArray[np.int64], tuple[float, float]]:
    """Counts of the finite values in ``HISTOGRAM_BINS`` equal bins over their range
    (one value all over: the bins span it +- 0.5)."""
    counts = np.zeros(HISTOGRAM_BINS, np.int64)
    if not stats.finite:
        return counts, (0.0, 0.0)
    low, high = (
        (stats.low, stats.high) if stats.high > stats.low else (stats.low - 0.5, stats.high + 0.5)
    )
    # Halved, a range wider than the largest float still has a finite width.
    half = not math.isfinite(high - low)
    edges = (low / 2, high / 2) if half else (low, high)
    for chunk in _flat_chunks(tensor):
        finite = chunk[np.isfinite(chunk)]
        counts += np.histogram(finite / 2 if half else finite, HISTOGRAM_BINS, edges)[0]
    return counts, (low, high)


def _flat_chunks(tensor: Any) -> Iterator[npt.NDArray[np.float64]]:
    """The values of a torch or numpy tensor as float64, a bounded chunk at a time."""
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(tensor, torch.Tensor):
        flat = tensor.detach().reshape(-1)
        for start in range(0, int(flat.shape[0]), _CHUNK):
            yield flat[start : start + _CHUNK].to(torch.float64).cpu().numpy()
        return
    array = np.asarray(tensor).reshape(-1)
    for start in range(0, array.size, _CHUNK):
        yield array[start : start + _CHUNK].astype(np.float64)

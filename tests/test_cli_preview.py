"""``mediagate fetch --preview FILE.png --save FILE``: the pictures and files a load leaves."""

from __future__ import annotations

import io
import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open

from builders import (
    RIGHT_HZ,
    LoopbackServer,
    Route,
    data_url,
    encode_clip,
    gradient,
    png_bytes,
    soundfile_bytes,
    tone,
)
from mediagate import MediaConnector
from mediagate._cli import main
from mediagate._preview import SPECTROGRAM_HEIGHT, render_preview

CLIP = encode_clip(frames=40)


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, Any]]:
    code = main([*argv, "--json"])
    return code, json.loads(capsys.readouterr().out)


def loaded(url: str, modality: str = "auto") -> Any:
    with MediaConnector() as connector:
        return connector.load_media(url, modality).media


def painted_number(tile: Image.Image) -> int:
    """The number ``encode_clip`` painted on a frame: eight blocks across its top."""
    scale = tile.width / 64
    grey = np.asarray(tile.convert("L"))
    row = int(8 * scale)
    return sum(1 << bit for bit in range(8) if grey[row, int((bit * 8 + 4) * scale)] > 128)


def test_a_video_preview_shows_each_sampled_frame_over_its_index(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = data_url(CLIP, "video/mp4")
    picture, saved = tmp_path / "clip.png", tmp_path / "clip.npz"
    code, record = run(["fetch", url, "--preview", str(picture), "--save", str(saved)], capsys)
    assert code == 0 and record["preview"] == str(picture) and record["saved"] == str(saved)
    frames, metadata = loaded(url)
    indices = record["result"]["frames_indices"]
    assert indices == metadata["frames_indices"] and len(indices) == 32
    # The same picture a preview of the same load draws; each tile shows the frame its
    # label names (the clip paints every frame's number on it).
    expected = render_preview("video", (frames, metadata))
    with Image.open(picture) as written:
        assert written.format == "PNG" and written.size == expected.image.size
        sheet = written.convert("RGB")
    for k, index in enumerate(indices):
        assert painted_number(sheet.crop(expected.regions[f"tile {k}"])) == index, k
    with np.load(saved, allow_pickle=False) as archive:
        assert np.array_equal(archive["frames"], frames)
        saved_metadata = json.loads(str(archive["metadata"]))
    assert saved_metadata["frames_indices"] == indices
    assert saved_metadata["timestamps"] == metadata["timestamps"]


def test_an_image_preview_holds_the_image_and_text_output_names_the_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    picture, saved = tmp_path / "a.png", tmp_path / "a.npy"
    code = main(["fetch", data_url(png_bytes()), "--preview", str(picture), "--save", str(saved)])
    out = capsys.readouterr().out
    assert code == 0 and out.splitlines()[-1] == f"    preview={picture} saved={saved}"
    with Image.open(picture) as written:
        assert np.array_equal(np.asarray(written.convert("RGB"))[8:38, 8:48], gradient(40, 30))
    assert np.array_equal(np.load(saved), gradient(40, 30))


def test_an_audio_preview_shows_the_tone_and_save_keeps_the_samples(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rate = 16000
    url = data_url(soundfile_bytes(tone(1.0, rate, channels=2)[:, 1:], rate), "audio/wav")
    picture, saved = tmp_path / "a.png", tmp_path / "a.npz"
    code, _ = run(["fetch", url, "--preview", str(picture), "--save", str(saved)], capsys)
    assert code == 0
    audio, sample_rate = loaded(url)
    box = render_preview("audio", (audio, sample_rate)).regions["spectrogram 0"]
    with Image.open(picture) as written:
        strip = np.asarray(written.convert("L").crop(box), np.float64)
    expected = SPECTROGRAM_HEIGHT - 1 - math.floor(RIGHT_HZ / (rate / 2) * SPECTROGRAM_HEIGHT)
    assert abs(int(np.argmax(strip.mean(axis=1))) - expected) <= 1
    with np.load(saved, allow_pickle=False) as archive:
        assert np.array_equal(archive["audio"], audio)
        assert json.loads(str(archive["metadata"]))["sample_rate"] == rate


def test_an_embedding_saves_as_safetensors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    buffer = io.BytesIO()
    np.save(buffer, np.arange(6, dtype=np.float32).reshape(2, 3))
    url = data_url(buffer.getvalue(), "application/x-npy")
    saved, picture = tmp_path / "e.safetensors", tmp_path / "e.png"
    code, record = run(["fetch", url, "--save", str(saved), "--preview", str(picture)], capsys)
    assert code == 0 and record["modality"] == "image-embedding"
    with safe_open(str(saved), "pt") as f:
        assert torch.equal(f.get_tensor("embedding"), torch.arange(6.0).reshape(2, 3))
        assert json.loads(f.metadata()["metadata"])["shape"] == [2, 3]
    with Image.open(picture) as written:
        assert written.width == 1024


# -- refused before anything is fetched ----------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "error"),
    [
        (["--save", "{dir}/out.pt"], r".npy, .npz or .safetensors"),
        (["--save", "{dir}/out"], r".npy, .npz or .safetensors"),
        (["--preview", "{dir}/out.jpg"], ".png file name"),
        (["--save", "{dir}/folder.npz"], "is a folder"),
        (["--preview", "{dir}/folder.png"], "is a folder"),
        (["--save", "{dir}/missing/out.npz"], "does not exist"),
        (["--preview", "{dir}/missing/out.png", "--save", "{dir}/out.npz"], "does not exist"),
    ],
)
def test_a_bad_target_is_a_usage_error_before_any_fetch(
    server: LoopbackServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    flags: list[str],
    error: str,
) -> None:
    server.routes["/a.png"] = Route(png_bytes())
    for folder in ("folder.npz", "folder.png"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "inside").write_text("kept")
    argv = ["fetch", server.url("/a.png"), "--allow-private-networks"]
    code, record = run(argv + [f.format(dir=tmp_path) for f in flags], capsys)
    assert code == 2 and record["ok"] is False and error in record["message"]
    assert server.count() == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder.npz", "folder.png"]
    assert (tmp_path / "folder.npz" / "inside").read_text() == "kept"


def test_safetensors_without_the_package_names_the_extra_before_any_fetch(
    server: LoopbackServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "safetensors.numpy", None)
    server.routes["/a.png"] = Route(png_bytes())
    argv = ["fetch", server.url("/a.png"), "--allow-private-networks"]
    code, record = run([*argv, "--save", str(tmp_path / "a.safetensors")], capsys)
    assert code == 2 and "mediagate[torch]" in record["message"]
    assert server.count() == 0 and list(tmp_path.iterdir()) == []


def test_text_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["fetch", data_url(png_bytes()), "--save", str(tmp_path / "x.pt")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert "--save writes .npy, .npz or .safetensors files" in err


@pytest.mark.parametrize(
    "url",
    [
        "data:image/png;base64," + "iVBORw0KGgo" + "A" * 40,  # a PNG signature, then junk
        "data:video/mp4;base64,AAAAGGZ0eXBpc29tAAAAAGlzb20=",  # an mp4 header alone
        "ftp://example.com/a.png",
    ],
    ids=["corrupt-png", "truncated-mp4", "refused-scheme"],
)
def test_media_that_fails_leaves_no_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], url: str
) -> None:
    flags = ["--preview", str(tmp_path / "p.png"), "--save", str(tmp_path / "s.npz")]
    code, record = run(["fetch", url, *flags], capsys)
    assert code == 1 and record["ok"] is False
    assert list(tmp_path.iterdir()) == []

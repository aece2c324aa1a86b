"""Files of the decoded arrays and their metadata: .npy, .npz and .safetensors."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open

from builders import data_url, encode_clip, gradient, png_bytes, tone
from mediagate import ImageMediaIO, MediaConnector, OptionError
from mediagate._save import (
    SAFETENSORS_HINT,
    check_save_path,
    media_arrays,
    save_media,
    write_atomically,
)


@pytest.fixture(scope="module")
def video() -> Any:
    with MediaConnector() as connector:
        return connector.load_media(data_url(encode_clip(frames=12), "video/mp4"), "video").media


def npz(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    with np.load(path, allow_pickle=False) as archive:
        arrays = {name: archive[name] for name in archive.files}
    return arrays, json.loads(str(arrays.pop("metadata")))


def test_npz_holds_the_frames_and_the_loaders_metadata(tmp_path: Path, video: Any) -> None:
    frames, metadata = video
    save_media(tmp_path / "clip.npz", "video", video)
    arrays, saved = npz(tmp_path / "clip.npz")
    assert list(arrays) == ["frames"] and np.array_equal(arrays["frames"], frames)
    assert saved.pop("modality") == "video"
    assert saved.pop("shape") == [12, 48, 64, 3] and saved.pop("dtype") == "uint8"
    assert saved == json.loads(json.dumps(metadata))
    assert saved["frames_indices"] == list(range(12)) and saved["fps"] == 30.0


@pytest.mark.parametrize(
    ("modality", "result", "expected"),
    [
        ("image", Image.fromarray(gradient(40, 30)), gradient(40, 30)),
        ("audio", (tone(0.25, 8000, 1)[:, 0], 8000), tone(0.25, 8000, 1)[:, 0]),
        (
            "image_embedding",
            torch.arange(12.0).reshape(3, 4),
            np.arange(12, dtype=np.float32).reshape(3, 4),
        ),
    ],
)
def test_npy_is_the_main_array(tmp_path: Path, modality: str, result: Any, expected: Any) -> None:
    save_media(tmp_path / "out.npy", modality, result)
    loaded = np.load(tmp_path / "out.npy", allow_pickle=False)
    assert loaded.dtype == expected.dtype
    assert np.array_equal(loaded, expected)


def test_a_loaded_image_keeps_mode_and_size(tmp_path: Path) -> None:
    save_media(tmp_path / "a.NPZ", "image", ImageMediaIO().load_bytes(png_bytes()))
    arrays, metadata = npz(tmp_path / "a.NPZ")
    assert np.array_equal(arrays["image"], gradient(40, 30))
    assert metadata == {
        "modality": "image",
        "mode": "RGB",
        "size": [40, 30],
        "shape": [30, 40, 3],
        "dtype": "uint8",
    }


def test_audio_keeps_its_rate(tmp_path: Path) -> None:
    audio = tone(0.1, 16000, 1)[:, 0]
    save_media(tmp_path / "a.npz", "audio", (audio, 16000))
    arrays, metadata = npz(tmp_path / "a.npz")
    assert np.array_equal(arrays["audio"], audio)
    assert metadata == {
        "modality": "audio",
        "sample_rate": 16000,
        "shape": [1600],
        "dtype": "float32",
    }


def test_bfloat16_goes_into_npy_as_exact_float32_and_says_so(tmp_path: Path) -> None:
    tensor = torch.tensor([1.5, -2.25, 3e38], dtype=torch.bfloat16)
    save_media(tmp_path / "t.npz", "image-embedding", tensor)
    arrays, metadata = npz(tmp_path / "t.npz")
    assert arrays["embedding"].dtype == np.float32
    assert torch.equal(torch.from_numpy(arrays["embedding"]).to(torch.bfloat16), tensor)
    assert metadata == {
        "modality": "image_embedding",
        "shape": [3],
        "dtype": "bfloat16",
        "saved_dtype": "float32",
    }


def test_safetensors_keeps_the_dtype_and_puts_metadata_in_the_header(tmp_path: Path) -> None:
    tensor = torch.tensor([[1.5, -2.0]], dtype=torch.bfloat16)
    save_media(tmp_path / "t.safetensors", "audio_embedding", tensor)
    with safe_open(str(tmp_path / "t.safetensors"), "pt") as f:
        assert torch.equal(f.get_tensor("embedding"), tensor)
        metadata = json.loads(f.metadata()["metadata"])
    assert metadata == {"modality": "audio_embedding", "shape": [1, 2], "dtype": "bfloat16"}


def test_safetensors_of_frames_reads_back_with_numpy(tmp_path: Path, video: Any) -> None:
    frames, metadata = video
    save_media(tmp_path / "clip.safetensors", "video", video)
    with safe_open(str(tmp_path / "clip.safetensors"), "np") as f:
        assert np.array_equal(f.get_tensor("frames"), frames)
        saved = json.loads(f.metadata()["metadata"])
    assert saved["timestamps"] == metadata["timestamps"]


def test_media_arrays_are_what_the_files_hold(video: Any) -> None:
    arrays, metadata = media_arrays("video", video)
    assert np.array_equal(arrays["frames"], video[0])
    assert metadata["total_num_frames"] == 12


def test_numpy_values_in_metadata_become_json(tmp_path: Path) -> None:
    frames = np.zeros((2, 4, 4, 3), np.uint8)
    metadata = {"fps": np.float32(2.5), "frames_indices": np.array([0, 3]), "n": np.int64(2)}
    save_media(tmp_path / "v.npz", "video", (frames, metadata))
    saved = npz(tmp_path / "v.npz")[1]
    assert saved["fps"] == 2.5 and saved["frames_indices"] == [0, 3] and saved["n"] == 2


# -- refusals ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["out.pt", "out.png", "out", "out.npy.gz", ".npz"])
def test_an_unknown_suffix_is_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(OptionError, match=r"\.npy, \.npz or \.safetensors") as info:
        check_save_path(tmp_path / name)
    assert info.value.option == "save"
    assert list(tmp_path.iterdir()) == []


def test_without_safetensors_the_error_names_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "safetensors.numpy", None)
    with pytest.raises(ImportError, match=r"mediagate\[torch\]") as info:
        check_save_path(tmp_path / "t.safetensors")
    assert str(info.value) == SAFETENSORS_HINT
    check_save_path(tmp_path / "t.npz")  # the others need nothing more


def test_a_folder_is_never_replaced(tmp_path: Path) -> None:
    folder = tmp_path / "keep.npy"
    folder.mkdir()
    (folder / "inside").write_text("x")
    with pytest.raises(OptionError, match="is a folder"):
        save_media(folder, "audio", (np.zeros(4, np.float32), 8000))
    assert (folder / "inside").read_text() == "x"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.npy"]


def test_a_missing_folder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(OptionError, match="does not exist"):
        check_save_path(tmp_path / "no" / "out.npz")


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "out.npy"
    target.write_bytes(b"old")

    def half_then_fail(temporary: Path) -> None:
        temporary.write_bytes(b"half")
        raise OSError(28, "No space left on device")

    with pytest.raises(OptionError, match="No space left on device"):
        write_atomically(target, half_then_fail, "save")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.npy"]

    def half_then_crash(temporary: Path) -> None:
        temporary.write_bytes(b"half")
        raise RuntimeError("writer bug")

    with pytest.raises(RuntimeError):
        write_atomically(target, half_then_crash, "save")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.npy"]


def test_a_saved_file_replaces_an_old_one_and_nothing_else_is_left(tmp_path: Path) -> None:
    target = tmp_path / "out.npz"
    target.write_bytes(b"old")
    save_media(target, "audio", (np.ones(8, np.float32), 8000))
    assert np.array_equal(npz(target)[0]["audio"], np.ones(8, np.float32))
    assert [p.name for p in tmp_path.iterdir()] == ["out.npz"]

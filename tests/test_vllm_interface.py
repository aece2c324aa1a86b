"""The connector interface vLLM 0.33 calls: its keywords, fetch methods, option names and
result types, and the plugin entry point."""

from __future__ import annotations

import asyncio
import base64
import importlib.metadata
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from builders import LoopbackServer, Route, data_url, jpeg_bytes, png_bytes, soundfile_bytes, tone
from mediagate import (
    AudioMediaIO,
    MediaConnector,
    MediaPolicy,
    MediaWithBytes,
    OptionError,
    TooLargeError,
    VideoEmbeddingMediaIO,
)

SAMPLES = Path(__file__).resolve().parents[1] / "src" / "mediagate" / "_samples"


def rgba_png() -> bytes:
    return png_bytes(Image.new("RGBA", (4, 3), (10, 20, 30, 128)))


def test_image_mode_none_keeps_the_images_own_mode() -> None:
    url = data_url(rgba_png())
    with MediaConnector() as conn:
        assert conn.fetch_image(url).mode == "RGB"
        kept = conn.fetch_image(url, image_mode=None)
        assert kept.mode == "RGBA" and kept.io_config is None
        converted = conn.fetch_image(url)
        assert converted.io_config == {
            "image_mode": "RGB",
            "rgba_background_color": (255, 255, 255),
        }
    with MediaConnector({"image": {"image_mode": None}}) as conn:
        assert conn.fetch_image(url).mode == "RGBA"
        assert asyncio.run(conn.fetch_image_async(url)).mode == "RGBA"


def test_a_server_image_mode_is_not_overridden_by_the_argument_default() -> None:
    url = data_url(png_bytes())
    with MediaConnector({"image": {"image_mode": "RGBA"}}) as conn:
        assert conn.fetch_image(url).mode == "RGBA"
        frames, _ = conn.fetch_video(
            "data:video/jpeg;base64," + base64.b64encode(jpeg_frame()).decode()
        )
        assert frames.shape[-1] == 3  # video frames are always RGB arrays
        assert conn.fetch_image(url, image_mode="L").mode == "L"  # named: it wins


def jpeg_frame() -> bytes:
    return jpeg_bytes(8, 8)


def test_fetch_video_returns_frames_with_their_bytes() -> None:
    clip = (SAMPLES / "counter.mp4").read_bytes()
    url = "data:video/mp4;base64," + base64.b64encode(clip).decode()
    with MediaConnector({"video": {"num_frames": 4}}) as conn:
        result = conn.fetch_video(video_url=url, video_processor="no_such_processor")
        assert isinstance(result, MediaWithBytes) and result.original_bytes == clip
        frames, metadata = result
        assert frames.shape[0] == 4 and metadata["video_backend"] == "pyav"
        again = asyncio.run(conn.fetch_video_async(url, video_processor=None))
        assert np.array_equal(again[0], frames)


def test_a_video_processor_with_a_registered_backend_picks_it() -> None:
    clip = (SAMPLES / "counter.mp4").read_bytes()
    url = "data:video/mp4;base64," + base64.b64encode(clip).decode()
    with MediaConnector() as conn:
        _, metadata = conn.fetch_video(url, video_processor="opencv")
        assert metadata["video_backend"] == "opencv"
    with MediaConnector({"video": {"video_backend": "pyav"}}) as conn:
        _, metadata = conn.fetch_video(url, video_processor="opencv")
        assert metadata["video_backend"] == "pyav"  # the server's choice wins


def test_video_embeddings() -> None:
    torch = pytest.importorskip("torch")
    tensor = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    payload = VideoEmbeddingMediaIO().encode_base64(tensor)
    with MediaConnector() as conn:
        assert torch.equal(conn.fetch_video_embedding(payload), tensor)
        assert torch.equal(asyncio.run(conn.fetch_video_embedding_async(payload)), tensor)
        assert conn.media_io("video-embedding").modality == "video_embedding"


class CountingBudget:
    """vLLM's download budget shape: ``charge(size)`` raises past its limit."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def charge(self, size: int) -> None:
        if self.used + size > self.limit:
            raise ValueError("Request media downloads exceed the limit")
        self.used += size


def test_the_download_budget_is_charged_for_downloads_only(
    server: LoopbackServer, loopback_policy: MediaPolicy, tmp_path: Path
) -> None:
    body = png_bytes()
    server.routes["/a.png"] = Route(body)
    (tmp_path / "a.png").write_bytes(body)
    budget = CountingBudget(2 * len(body))
    with MediaConnector(
        policy=loopback_policy, download_budget=budget, allowed_local_media_path=tmp_path
    ) as conn:
        conn.fetch_image(server.url("/a.png"))
        conn.fetch_image(data_url(body))
        conn.fetch_image((tmp_path / "a.png").as_uri())
        assert budget.used == len(body)
        asyncio.run(conn.fetch_image_async(server.url("/a.png")))
        assert budget.used == 2 * len(body)
        with pytest.raises(TooLargeError) as over:
            conn.fetch_image(server.url("/a.png"))
    assert over.value.limit == "download_budget" and over.value.http_status == 413
    with pytest.raises(TypeError, match="download_budget"):
        MediaConnector(download_budget=object())  # type: ignore[arg-type]


def wav(rate: int = 8000) -> bytes:
    """0.1 s of mono audio (800 samples at 8 kHz)."""
    return soundfile_bytes(tone(0.1, rate, channels=1), rate)


@pytest.mark.parametrize("backend", ["auto", "soundfile", "pyav", None])
def test_audio_backend_names_the_decoder(backend: str | None) -> None:
    audio, rate = AudioMediaIO(audio_backend=backend).load_bytes(wav())
    assert rate == 8000 and audio.shape == (800,)


@pytest.mark.parametrize("backend", ["torchcodec", "ffmpeg", 3, ""])
def test_unknown_audio_backends_are_refused(backend: object) -> None:
    with pytest.raises(OptionError, match="audio_backend"):
        AudioMediaIO(audio_backend=backend)


def test_the_plugin_is_declared_and_does_nothing_without_vllm() -> None:
    entry_points = importlib.metadata.entry_points(group="vllm.general_plugins")
    (plugin,) = [ep for ep in entry_points if ep.name == "mediagate"]
    assert plugin.value == "mediagate._vllm:register"
    code = (
        "import sys, mediagate\n"
        "assert 'mediagate._vllm' not in sys.modules\n"
        "from mediagate._vllm import register\n"
        "register()\n"
        "assert not any(m == 'vllm' or m.startswith('vllm.') for m in sys.modules)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_vllm_flags_only_tighten_the_policy(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from mediagate._vllm import VllmMediaConnector

    monkeypatch.setenv("VLLM_MEDIA_URL_ALLOW_REDIRECTS", "0")
    monkeypatch.setenv("VLLM_MAX_IMAGE_PIXELS", "1000")
    monkeypatch.setenv("VLLM_IMAGE_FETCH_TIMEOUT", "2")
    monkeypatch.setenv("VLLM_VIDEO_FETCH_TIMEOUT", "100000")
    monkeypatch.setenv("VLLM_MEDIA_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("MEDIAGATE_MAX_PIXELS", "500")
    with VllmMediaConnector() as conn:
        assert conn.policy.max_redirects == 0
        assert conn.policy.max_pixels == 500  # the stricter of the two
        assert conn._timeout("image", None) == 2.0
        assert conn._timeout("video", None) == conn.policy.timeout_for("video")  # not raised
        assert conn.cache is not None and conn.cache.directory == tmp_path / "cache"
    monkeypatch.setenv("MEDIAGATE_MAX_PIXELS", "5000")
    with VllmMediaConnector() as conn:
        assert conn.policy.max_pixels == 1000
    monkeypatch.setenv("VLLM_AUDIO_FETCH_TIMEOUT", "inf")
    with pytest.raises(ValueError, match="VLLM_AUDIO_FETCH_TIMEOUT"):
        VllmMediaConnector()


def test_unset_vllm_flags_change_nothing() -> None:
    from mediagate import MediaPolicy
    from mediagate._vllm import VllmMediaConnector

    with VllmMediaConnector() as conn:
        assert conn.policy == MediaPolicy() and conn.cache is None


class StandInDecodedBudget:
    """The methods of vLLM 0.33's MediaDecodedBudget, with a fixed limit."""

    def __init__(self, limit: int) -> None:
        self.limit, self.used, self.reserved = limit, 0, 0

    def reserve(self, max_bytes: int) -> int:
        available = self.limit - self.used - self.reserved
        if available <= 0:
            raise ValueError("Request decoded media exceeds the limit")
        got = min(max_bytes, available)
        self.reserved += got
        return got

    def settle(self, reserved: int, decoded_bytes: int) -> None:
        self.reserved -= reserved
        if decoded_bytes > reserved or self.used + decoded_bytes > self.limit:
            raise ValueError("Request decoded media exceeds the limit")
        self.used += decoded_bytes

    def charge(self, decoded_bytes: int) -> None:
        if self.used + decoded_bytes > self.limit:
            raise ValueError("Request decoded media exceeds the limit")
        self.used += decoded_bytes


def test_vllms_decoded_budget_is_charged() -> None:
    from mediagate._vllm import VllmMediaConnector

    budget = StandInDecodedBudget(limit=4 * 3 * 3 + 1)
    url = data_url(wav())
    with VllmMediaConnector(decoded_budget=budget) as conn, pytest.raises(TooLargeError):
        conn.fetch_audio(url)  # 800 float32 samples: over the limit, refused before decoding
    assert budget.reserved == 0 and budget.used == 0
    small = StandInDecodedBudget(limit=10_000)
    with VllmMediaConnector(decoded_budget=small) as conn:
        audio, _ = conn.fetch_audio(url)
    assert small.used == audio.nbytes and small.reserved == 0


def test_an_upstream_4xx_is_a_client_error_for_vllm(
    server: LoopbackServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mediagate import FetchError
    from mediagate._vllm import VllmMediaConnector

    monkeypatch.setenv("MEDIAGATE_ALLOWED_NETWORKS", "127.0.0.1/32")
    server.routes["/gone.wav"] = Route(b"no", status=404)
    with VllmMediaConnector() as conn:
        with pytest.raises(ValueError) as gone:
            conn.fetch_audio(server.url("/gone.wav"))
        with pytest.raises(ValueError):
            asyncio.run(conn.fetch_audio_async(server.url("/gone.wav")))
    assert isinstance(gone.value, FetchError)
    assert gone.value.http_status == 422 and gone.value.upstream_status == 404
    server.routes["/down.wav"] = Route(b"no", status=503)
    with VllmMediaConnector() as conn, pytest.raises(FetchError) as down:
        conn.fetch_audio(server.url("/down.wav"))
    assert not isinstance(down.value, ValueError) and down.value.http_status == 502


def test_vllms_default_video_backend_applies_unless_the_server_names_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from mediagate._vllm import VllmMediaConnector

    monkeypatch.setenv("VLLM_VIDEO_LOADER_BACKEND", "opencv")
    with VllmMediaConnector() as conn:
        assert conn.media_io("video").video_backend == "opencv"
        # The model's video processor names its sampler, which wins over the variable.
        sampled = conn._video_io(video_processor="Qwen3VLVideoProcessor")
        assert sampled.video_backend == "qwen3_vl"
        assert conn.media_io("video", {"video_backend": "pyav"}).video_backend == "pyav"
    with VllmMediaConnector({"video": {"video_backend": "pyav", "num_frames": 4}}) as conn:
        assert conn.media_io("video").video_backend == "pyav"
        assert conn._video_io(video_processor="Qwen3VLVideoProcessor").video_backend == "pyav"
    for malformed in ({"video": [1, 2]}, {"video": "x"}, ["video"]):
        with pytest.raises(OptionError):
            VllmMediaConnector(malformed)  # type: ignore[arg-type]


def test_a_refusal_names_the_request_budget_that_ran_out() -> None:
    from mediagate._vllm import VllmMediaConnector

    budget = StandInDecodedBudget(limit=5000)
    url = data_url(wav())  # 800 float32 samples: 3200 bytes
    with VllmMediaConnector(decoded_budget=budget) as conn:
        conn.fetch_audio(url)
        with pytest.raises(ValueError, match="VLLM_MAX_MEDIA_REQUEST_DECODE_BYTES"):
            conn.fetch_audio(url)
    assert budget.used == 3200 and budget.reserved == 0


def test_vllms_budget_shape_works_with_the_plain_connector_and_mediaios() -> None:
    from mediagate import DecodedBudget, ImageMediaIO

    budget = StandInDecodedBudget(limit=5000)
    with MediaConnector(decoded_budget=budget) as conn:
        assert isinstance(conn.decoded_budget, DecodedBudget)
        conn.fetch_audio(data_url(wav()))
        with pytest.raises(TooLargeError, match="StandInDecodedBudget"):
            conn.fetch_audio(data_url(wav()))
    assert budget.used == 3200 and budget.reserved == 0
    images = StandInDecodedBudget(limit=10_000)
    ImageMediaIO(decoded_budget=images).load_bytes(png_bytes())
    assert images.used == 40 * 30 * 3 and images.reserved == 0


@pytest.mark.parametrize("budget", [object(), 5, "budget"])
def test_anything_else_is_refused_as_a_budget(budget: object) -> None:
    from mediagate import ImageMediaIO

    with pytest.raises(TypeError, match="decoded_budget"):
        MediaConnector(decoded_budget=budget)  # type: ignore[arg-type]
    with pytest.raises(OptionError, match="decoded_budget"):
        ImageMediaIO(decoded_budget=budget)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("VLLM_MAX_IMAGE_PIXELS", "many"),
        ("VLLM_MEDIA_URL_ALLOW_REDIRECTS", "maybe"),
        ("VLLM_IMAGE_FETCH_TIMEOUT", "nan"),
        ("VLLM_VIDEO_FETCH_TIMEOUT", "-3"),
        ("VLLM_MEDIA_CACHE_MAX_SIZE_MB", "lots"),
    ],
)
def test_malformed_vllm_flags_are_a_clear_configuration_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, name: str, value: str
) -> None:
    from mediagate._vllm import VllmMediaConnector

    monkeypatch.setenv("VLLM_MEDIA_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match=name):
        VllmMediaConnector()


def test_a_non_positive_pixel_cap_flag_is_vllms_off_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    from mediagate import MediaPolicy
    from mediagate._vllm import VllmMediaConnector

    monkeypatch.setenv("VLLM_MAX_IMAGE_PIXELS", "0")
    with VllmMediaConnector() as conn:
        assert conn.policy.max_pixels == MediaPolicy().max_pixels  # never raised, never zero

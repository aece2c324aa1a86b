"""vLLM's own chat content parser, with ``VLLM_MEDIA_CONNECTOR=mediagate``, resolving an
OpenAI chat message through mediagate.

The path is vLLM's from the request's ``messages`` to the processor's input:
``parse_chat_message_content`` (what ``parse_chat_messages`` and its async twin call for each
message) asks the tracker for vLLM's ``MultiModalContentParser`` or
``AsyncMultiModalContentParser``; the parser loads ``envs.VLLM_MEDIA_CONNECTOR`` from
``MEDIA_CONNECTOR_REGISTRY`` with the tracker's options and budgets and fetches every
media part through it; the tracker's ``resolve_items`` turns what the parser stored into
``mm_data``; vLLM's ``MultiModalDataParser`` and ``ProcessorInputs.get_mm_hashes`` (which
calls ``MultiModalHasher``) take it from there. Every piece of that is vLLM's code.

Stood in, because each needs a model (its Hugging Face config and processor), which the
suite cannot download:

- the ``ModelConfig``: ``StandInModelConfig`` carries only the attributes the parser and
  tracker read (a real ``MultiModalConfig`` with ``enable_mm_embeds=True``,
  ``allowed_local_media_path``, ``allowed_media_domains``, ``enable_prompt_embeds``,
  ``is_multimodal_model``, an empty ``hf_config``, and the hidden size
  ``get_inputs_embeds_size`` answers for embeddings);
- the tracker's ``mm_processor``: ``StandInProcessor`` answers the item-count check
  (``info.validate_num_items``, at most ``ITEM_LIMIT`` items a modality), the hidden size
  (``info.ctx.model_config``) and the embedding field layout of a LLaVA-style processor
  (``_get_mm_fields_config``: ``image_embeds`` batched by image);
- the tracker's ``model_cls``: ``StandInModel.get_placeholder_str`` gives Qwen2.5-Omni's
  placeholders;
- the tracker's ``video_processor_name``: ``None`` (a model whose processor names no video
  processor: the connector's default video backend samples the frames), or the class name
  of a model's video processor where a test gives one.

Everything else of the trackers is vLLM's (``add``, ``media_io_kwargs``,
``allowed_local_media_path``, ``allowed_media_domains``, the per-request
``MediaDecodedBudget`` and ``MediaRequestDownloadBudget``, ``create_parser``,
``resolve_items``). The same message parsed with ``VLLM_MEDIA_CONNECTOR=http`` (vLLM's own
connector) is the reference each item is compared with.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Callable, Mapping
from types import SimpleNamespace
from typing import Any, Literal

import numpy as np
import pytest
import soundfile as sf
import torch
import vllm.envs
import vllm.multimodal.hasher
from harness import media
from harness.bucket import BUCKET_URL
from harness.offline import OfflineGuard
from PIL import Image
from vllm.config.multimodal import MultiModalConfig
from vllm.connections import global_http_connection
from vllm.entrypoints.serve import create_error_response
from vllm.exceptions import VLLMUnprocessableEntityError, VLLMValidationError
from vllm.multimodal.inputs import MultiModalFieldConfig
from vllm.multimodal.media import MEDIA_CONNECTOR_REGISTRY
from vllm.multimodal.media import MediaWithBytes as VllmMediaWithBytes
from vllm.multimodal.parse import (
    AudioProcessorItems,
    ImageEmbeddingItems,
    ImageProcessorItems,
    MultiModalDataItems,
    MultiModalDataParser,
    VideoProcessorItems,
    parse_mm_uuids,
)
from vllm.multimodal.processing.inputs import ProcessorInputs
from vllm.renderers.chat_utils import (
    AsyncMultiModalItemTracker,
    MultiModalItemTracker,
    parse_chat_message_content,
)
from vllm.renderers.chat_utils.content_parser import (
    AsyncMultiModalContentParser,
    BaseMultiModalContentParser,
    MultiModalContentParser,
)
from vllm.utils.serial_utils import numpy2base64, tensor2base64

import mediagate
from mediagate._vllm import VllmMediaConnector

pytestmark = [pytest.mark.cpu_test, pytest.mark.skip_global_cleanup]

#: The hidden size of the stand-in model's embeddings.
HIDDEN = 16
#: At most this many items of one modality in one prompt (the stand-in processor's limit).
ITEM_LIMIT = 4
#: vLLM's FIPS hash choice (its default, blake3, is not installed in the suite's venv).
HASH_ALGORITHM: Literal["sha256"] = "sha256"
MODEL_ID = "stand-in/omni-model"
#: The target rate of the data parser (the audio models' 16 kHz).
TARGET_SR = 16000

JPEG_URL = f"{BUCKET_URL}/vision_model_images/2560px-Gfp-wisconsin-madison-the-nature-boardwalk.jpg"
OTHER_IMAGE_URL = f"{BUCKET_URL}/vision_model_images/1280px-Venn_diagram_rgb.svg.png"
OGG_URL = f"{BUCKET_URL}/multimodal_asset/mary_had_lamb.ogg"
MP4_URL = f"{BUCKET_URL}/multimodal_asset/slow_traffic_small.mp4"
#: The cloud metadata address: link-local, outside the suite's allowed networks.
METADATA_URL = "http://169.254.169.254/latest/meta-data/clip.mp4"

#: How many frames vLLM's ``VideoMediaIO`` samples when nothing else decides.
DEFAULT_NUM_FRAMES = 32
#: The keys of the metadata vLLM's own video loaders return with the frames.
VIDEO_METADATA_KEYS = {
    "total_num_frames",
    "fps",
    "duration",
    "video_backend",
    "frames_indices",
    "do_sample_frames",
}


# --- media of the messages ---------------------------------------------------------------


def wav_base64(rate: int = 8000, seconds: float = 0.5) -> str:
    """Base64 of a mono 16-bit WAV tone, as an ``input_audio`` part carries it."""
    t = np.arange(int(rate * seconds), dtype=np.float64) / rate
    out = io.BytesIO()
    sf.write(out, 0.3 * np.sin(2 * np.pi * 440 * t), rate, format="WAV", subtype="PCM_16")
    return base64.b64encode(out.getvalue()).decode("ascii")


def rgba_png_data_url() -> str:
    """A ``data:`` URL of a half-transparent RGBA PNG (vLLM flattens it to RGB)."""
    alpha = np.tile(np.linspace(0, 255, 40, dtype=np.uint8), (30, 1))
    rgb = np.full((30, 40, 3), (10, 200, 30), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(np.dstack([rgb, alpha]), "RGBA").save(out, format="PNG")
    return "data:image/png;base64," + base64.b64encode(out.getvalue()).decode("ascii")


def embedding(seed: int, length: int = 5) -> torch.Tensor:
    """A deterministic ``(length, HIDDEN)`` float32 image embedding."""
    return torch.randn(length, HIDDEN, generator=torch.Generator().manual_seed(seed))


def media_message(image_url: str = JPEG_URL) -> dict[str, Any]:
    """A user message with text and every raw media part: ``image_url`` over HTTP(S) and
    as a ``data:`` URL, ``input_audio`` (base64 WAV), ``audio_url`` and ``video_url``."""
    return {
        "role": "user",
        "content": [
            {"type": "text", "text": "Describe these."},
            {"type": "image_url", "image_url": {"url": image_url}},
            {"type": "image_url", "image_url": {"url": rgba_png_data_url()}},
            {"type": "input_audio", "input_audio": {"data": wav_base64(), "format": "wav"}},
            {"type": "audio_url", "audio_url": {"url": OGG_URL}},
            {"type": "video_url", "video_url": {"url": MP4_URL}},
        ],
    }


def embeds_message(seeds: tuple[int, int] = (1, 2)) -> dict[str, Any]:
    """A user message with two ``image_embeds`` parts, encoded the two ways vLLM's
    ``ImageEmbeddingMediaIO`` reads: ``torch.save`` (``tensor2base64``) and ``.npy``
    (``numpy2base64``)."""
    return {
        "role": "user",
        "content": [
            {"type": "text", "text": "Compare these."},
            {"type": "image_embeds", "image_embeds": tensor2base64(embedding(seeds[0]))},
            {"type": "image_embeds", "image_embeds": numpy2base64(embedding(seeds[1]).numpy())},
        ],
    }


# --- stand-ins for what needs a model ----------------------------------------------------


class StandInModelConfig:
    """The attributes of vLLM's ``ModelConfig`` that the content parser and the item
    tracker read, for a multimodal model that accepts embeddings."""

    def __init__(self, *, allowed_media_domains: list[str] | None = None) -> None:
        self.multimodal_config = MultiModalConfig(enable_mm_embeds=True)
        self.allowed_local_media_path = ""
        self.allowed_media_domains = allowed_media_domains
        self.enable_prompt_embeds = False
        self.is_multimodal_model = True
        self.hf_config = SimpleNamespace()

    def get_multimodal_config(self) -> MultiModalConfig:
        """The model's multimodal settings."""
        return self.multimodal_config

    def get_inputs_embeds_size(self) -> int:
        """The hidden size embeddings must have."""
        return HIDDEN


class StandInProcessingInfo:
    """``mm_processor.info``: the per-prompt item limit and the model's context."""

    def __init__(self, model_config: StandInModelConfig) -> None:
        self.ctx = SimpleNamespace(model_config=model_config)

    def validate_num_items(self, modality: str, num_items: int) -> None:
        """Refuse more than ``ITEM_LIMIT`` items of ``modality``, as vLLM's does."""
        if num_items > ITEM_LIMIT:
            raise VLLMValidationError(
                f"At most {ITEM_LIMIT} {modality}(s) may be provided in one prompt.",
                parameter=modality,
            )


class StandInProcessor:
    """The tracker's ``mm_processor``: what ``add`` and ``resolve_items`` ask of it."""

    def __init__(self, model_config: StandInModelConfig) -> None:
        self.info = StandInProcessingInfo(model_config)

    def _get_mm_fields_config(
        self, hf_inputs: Mapping[str, object], hf_processor_mm_kwargs: Mapping[str, object]
    ) -> Mapping[str, MultiModalFieldConfig]:
        return {"image_embeds": MultiModalFieldConfig.batched("image")}


class StandInModel:
    """The tracker's ``model_cls``: Qwen2.5-Omni's placeholders."""

    @classmethod
    def get_placeholder_str(cls, modality: str, i: int) -> str | None:
        """The placeholder of the ``i``-th item of ``modality``."""
        if modality.startswith("image"):
            return "<|vision_start|><|IMAGE|><|vision_end|>"
        if modality.startswith("video"):
            return "<|vision_start|><|VIDEO|><|vision_end|>"
        if modality.startswith("audio"):
            return f"Audio {i}: <|audio_bos|><|AUDIO|><|audio_eos|>"
        raise ValueError("Only image, video or audio modality is supported")


class StandInTracker(MultiModalItemTracker):
    """vLLM's sync tracker with the model-dependent pieces stood in; it keeps the parsers
    it creates."""

    model_cls = StandInModel  # type: ignore[assignment]
    video_processor_name: str | None = None

    def __init__(
        self, model_config: StandInModelConfig, video_processor_name: str | None = None
    ) -> None:
        super().__init__(model_config)  # type: ignore[arg-type]
        self.mm_processor = StandInProcessor(model_config)
        self.video_processor_name = video_processor_name
        self.parsers: list[BaseMultiModalContentParser] = []

    def create_parser(
        self, mm_processor_kwargs: dict[str, Any] | None = None
    ) -> BaseMultiModalContentParser:
        """vLLM's parser, kept."""
        parser = super().create_parser(mm_processor_kwargs)
        self.parsers.append(parser)
        return parser


class AsyncStandInTracker(AsyncMultiModalItemTracker):
    """vLLM's async tracker with the same stand-ins as ``StandInTracker``."""

    model_cls = StandInModel  # type: ignore[assignment]
    video_processor_name: str | None = None

    def __init__(
        self, model_config: StandInModelConfig, video_processor_name: str | None = None
    ) -> None:
        super().__init__(model_config)  # type: ignore[arg-type]
        self.mm_processor = StandInProcessor(model_config)
        self.video_processor_name = video_processor_name
        self.parsers: list[BaseMultiModalContentParser] = []

    def create_parser(
        self, mm_processor_kwargs: dict[str, Any] | None = None
    ) -> BaseMultiModalContentParser:
        """vLLM's parser, kept."""
        parser = super().create_parser(mm_processor_kwargs)
        self.parsers.append(parser)
        return parser


# --- vLLM's path ---------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _fresh_http_client(monkeypatch: pytest.MonkeyPatch) -> None:
    """vLLM's own connector makes its aiohttp client anew on each test's event loop (as
    vLLM's ``init_test_http_connection`` does for its tests)."""
    monkeypatch.setattr(global_http_connection, "reuse_client", False)


@pytest.fixture
def use_connector(monkeypatch: pytest.MonkeyPatch) -> Callable[[str], None]:
    """Sets ``VLLM_MEDIA_CONNECTOR`` for what follows in the test: vLLM reads it (its
    environment cache is off) when a parser first fetches media."""
    assert not vllm.envs._is_envs_cache_enabled()

    def use(name: str) -> None:
        monkeypatch.setenv("VLLM_MEDIA_CONNECTOR", name)
        assert name == vllm.envs.VLLM_MEDIA_CONNECTOR

    return use


Parsed = tuple[Any, list[Any], dict[str, Any], dict[str, Any]]


def parse_sync(message: dict[str, Any], video_processor: str | None = None) -> Parsed:
    """``message`` through vLLM's sync parser for a model whose video processor is
    ``video_processor``: the tracker, the conversation, ``mm_data`` and ``mm_uuids``."""
    tracker = StandInTracker(StandInModelConfig(), video_processor)
    conversation = parse_chat_message_content(message, tracker, "string", interleave_strings=False)
    mm_data, mm_uuids = tracker.resolve_items()
    assert mm_data is not None and mm_uuids is not None
    return tracker, conversation, dict(mm_data), dict(mm_uuids)


async def parse_async(message: dict[str, Any], video_processor: str | None = None) -> Parsed:
    """``message`` through vLLM's async parser (fetches run when the tracker resolves)."""
    tracker = AsyncStandInTracker(StandInModelConfig(), video_processor)
    conversation = parse_chat_message_content(message, tracker, "string", interleave_strings=False)
    mm_data, mm_uuids = await tracker.resolve_items()
    assert mm_data is not None and mm_uuids is not None
    return tracker, conversation, dict(mm_data), dict(mm_uuids)


def data_parser() -> MultiModalDataParser:
    """vLLM's data parser set up as an audio-and-video model's is: audio resampled to
    16 kHz, video metadata required, embeddings of the model's hidden size."""
    return MultiModalDataParser(
        target_sr=TARGET_SR,
        audio_resample_method="scipy",
        video_needs_metadata=True,
        expected_hidden_size=HIDDEN,
    )


def mm_hashes(items: MultiModalDataItems, mm_uuids: dict[str, Any]) -> dict[str, list[str]]:
    """vLLM's per-item cache keys (``ProcessorInputs.get_mm_hashes``), failing if the hasher
    had to fall back to pickling something it has no serialisation for."""
    fallbacks: list[str] = []
    inputs = ProcessorInputs(prompt=[], mm_data_items=items, mm_uuid_items=parse_mm_uuids(mm_uuids))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(
            vllm.multimodal.hasher.logger,
            "warning",
            lambda msg, *args, **kwargs: fallbacks.append(msg % args),
        )
        hashes = dict(inputs.get_mm_hashes(MODEL_ID, HASH_ALGORITHM))
    assert fallbacks == []
    return hashes


def bucket_object(url: str) -> bytes:
    """The bytes the bucket stand-in serves for ``url``."""
    return media.BUCKET[url.removeprefix(BUCKET_URL + "/")]()


def the_connector(tracker: Any) -> Any:
    """The connector of the one parser ``tracker`` created."""
    (parser,) = tracker.parsers
    return parser._connector


# --- the checks ----------------------------------------------------------------------------


def assert_same_media(ours: Mapping[str, list[Any]], theirs: Mapping[str, list[Any]]) -> None:
    """``ours`` (mediagate's, through vLLM's parser) is, item by item, what vLLM's own
    connector gave: the types, the image modes, sizes and pixels, the audio samples and
    rates, the video frames and their metadata."""
    assert sorted(ours) == sorted(theirs) == ["audio", "image", "video"]
    for name in ("image", "audio", "video"):
        assert len(ours[name]) == len(theirs[name])
    for mine, ref in zip(ours["image"], theirs["image"], strict=True):
        assert type(mine) is VllmMediaWithBytes
        assert isinstance(mine.media, Image.Image)
        assert (mine.media.mode, mine.media.size) == (ref.media.mode, ref.media.size)
        assert np.array_equal(np.asarray(mine.media), np.asarray(ref.media))
        assert mine.original_bytes == ref.original_bytes
        assert mine.io_config == ref.io_config
    for mine, ref in zip(ours["audio"], theirs["audio"], strict=True):
        assert isinstance(mine, tuple) and len(mine) == 2
        samples, rate = mine
        assert isinstance(samples, np.ndarray) and samples.dtype == ref[0].dtype
        assert samples.shape == ref[0].shape and samples.ndim == 1
        assert rate == ref[1]
        np.testing.assert_allclose(samples, ref[0], atol=1e-4)
    for mine, ref in zip(ours["video"], theirs["video"], strict=True):
        assert type(mine) is VllmMediaWithBytes
        assert mine.original_bytes == ref.original_bytes
        (frames, metadata), (ref_frames, ref_metadata) = mine.media, ref.media
        assert isinstance(frames, np.ndarray) and frames.dtype == np.uint8
        assert frames.shape == ref_frames.shape and frames.ndim == 4 and frames.shape[-1] == 3
        assert float(np.abs(frames.astype(np.int16) - ref_frames).mean()) <= 1.0
        assert set(metadata) == set(ref_metadata) == VIDEO_METADATA_KEYS
        for key in VIDEO_METADATA_KEYS - {"video_backend"}:
            assert metadata[key] == ref_metadata[key], key
        assert metadata["frames_indices"] == sorted(set(metadata["frames_indices"]))
        assert len(metadata["frames_indices"]) == len(frames)


def assert_parsed_media(items: MultiModalDataItems, mm_data: Mapping[str, list[Any]]) -> None:
    """vLLM's data parser made the modality items a processor takes from ``mm_data``."""
    assert sorted(items) == ["audio", "image", "video"]
    images = items.get_items("image", ImageProcessorItems)
    assert images.get_count() == 2
    assert [images.get_image_size(i) for i in range(2)] == [
        item.media.size for item in mm_data["image"]
    ]
    parsed_images: list[Any] = images.get_all()
    assert all(isinstance(image, Image.Image) and image.mode == "RGB" for image in parsed_images)
    audios = items.get_items("audio", AudioProcessorItems)
    assert audios.get_count() == 2
    for i, (samples, rate) in enumerate(mm_data["audio"]):
        assert audios.get_audio_length(i) == round(len(samples) * TARGET_SR / rate)
    videos = items.get_items("video", VideoProcessorItems)
    assert videos.get_count() == 1
    frames, metadata = mm_data["video"][0].media
    parsed: Any = videos.get(0)
    parsed_frames, parsed_metadata = parsed
    assert parsed_frames is frames and parsed_metadata == metadata
    assert isinstance(videos.metadata, list) and videos.metadata[0] == metadata
    plain = MultiModalDataParser().parse_mm_data({"video": mm_data["video"]})
    frames_only = plain.get_items("video", VideoProcessorItems)
    assert frames_only.get_num_frames(0) == len(frames) == frames.shape[0]
    assert tuple(frames_only.get_frame_size(0)) == (frames.shape[2], frames.shape[1])


def decoded_size(mm_data: Mapping[str, list[Any]]) -> int:
    """The bytes of the decoded media in ``mm_data``: RGB(A) pixels, float samples, frames."""
    images = sum(
        item.media.width * item.media.height * len(item.media.getbands())
        for item in mm_data["image"]
    )
    audio = sum(samples.nbytes for samples, _ in mm_data["audio"])
    video = sum(item.media[0].nbytes for item in mm_data["video"])
    return int(images + audio + video)


def test_vllm_media_connector_picks_mediagate(use_connector: Callable[[str], None]) -> None:
    """The parser loads the connector ``VLLM_MEDIA_CONNECTOR`` names when it first needs
    one: mediagate's with ``mediagate``, vLLM's own with ``http``; each gets the tracker's
    download budget."""
    message = {
        "role": "user",
        "content": [{"type": "image_url", "image_url": {"url": rgba_png_data_url()}}],
    }
    use_connector("mediagate")
    tracker, *_ = parse_sync(message)
    ours = the_connector(tracker)
    assert type(ours) is MEDIA_CONNECTOR_REGISTRY.name2class["mediagate"] is VllmMediaConnector
    assert isinstance(tracker.parsers[0], MultiModalContentParser)
    assert ours.download_budget is tracker.download_budget
    use_connector("http")
    tracker, *_ = parse_sync(message)
    theirs = the_connector(tracker)
    assert type(theirs) is MEDIA_CONNECTOR_REGISTRY.name2class["http"]
    assert not isinstance(theirs, VllmMediaConnector)


def test_sync_parser_resolves_through_mediagate(use_connector: Callable[[str], None]) -> None:
    """Every raw media part of one message through mediagate gives what vLLM's own
    connector gives; vLLM's data parser takes it and its hashes are stable: the same
    message hashes the same, a different image differently, and an image the same as
    vLLM's own connector's."""
    use_connector("http")
    ref_tracker, ref_conversation, ref_data, ref_uuids = parse_sync(media_message())
    use_connector("mediagate")
    tracker, conversation, mm_data, mm_uuids = parse_sync(media_message())
    assert isinstance(the_connector(tracker), VllmMediaConnector)
    assert conversation == ref_conversation
    text = conversation[0]["content"]
    assert text.count("<|IMAGE|>") == 2 and text.count("<|AUDIO|>") == 2
    assert text.count("<|VIDEO|>") == 1 and text.endswith("Describe these.")
    assert mm_uuids == ref_uuids == {"image": [None, None], "audio": [None, None], "video": [None]}
    assert_same_media(mm_data, ref_data)
    assert tracker.decoded_budget.used >= decoded_size(mm_data) > 0
    assert (
        tracker.download_budget.used
        == ref_tracker.download_budget.used
        == sum(len(item.original_bytes) for item in (mm_data["image"][0], mm_data["video"][0]))
        + len(bucket_object(OGG_URL))
    )

    items = data_parser().parse_mm_data(mm_data)
    assert_parsed_media(items, mm_data)
    hashes = mm_hashes(items, mm_uuids)
    counts = {name: len(keys) for name, keys in hashes.items()}
    assert counts == {"image": 2, "audio": 2, "video": 1}
    assert len({key for keys in hashes.values() for key in keys}) == 5

    _, _, again_data, again_uuids = parse_sync(media_message())
    assert mm_hashes(data_parser().parse_mm_data(again_data), again_uuids) == hashes

    _, _, other_data, other_uuids = parse_sync(media_message(OTHER_IMAGE_URL))
    other = mm_hashes(data_parser().parse_mm_data(other_data), other_uuids)
    assert other["image"][0] != hashes["image"][0]
    assert other["image"][1] == hashes["image"][1]
    assert (other["audio"], other["video"]) == (hashes["audio"], hashes["video"])

    ref_hashes = mm_hashes(data_parser().parse_mm_data(ref_data), ref_uuids)
    assert ref_hashes["image"] == hashes["image"]


@pytest.mark.asyncio
async def test_async_parser_resolves_through_mediagate(
    use_connector: Callable[[str], None],
) -> None:
    """vLLM's async parser defers each fetch to the tracker's ``resolve_items``, which runs
    them through mediagate's async methods; the result is the sync parser's, hash for
    hash, and what vLLM's own connector gives on the same path."""
    use_connector("http")
    _, ref_conversation, ref_data, _ = await parse_async(media_message())
    use_connector("mediagate")
    tracker, conversation, mm_data, mm_uuids = await parse_async(media_message())
    assert isinstance(tracker.parsers[0], AsyncMultiModalContentParser)
    assert isinstance(the_connector(tracker), VllmMediaConnector)
    assert conversation == ref_conversation
    assert_same_media(mm_data, ref_data)
    assert tracker.decoded_budget.used >= decoded_size(mm_data) > 0
    assert tracker.download_budget.used > 0

    items = data_parser().parse_mm_data(mm_data)
    assert_parsed_media(items, mm_data)
    _, _, sync_data, sync_uuids = parse_sync(media_message())
    assert mm_hashes(items, mm_uuids) == mm_hashes(
        data_parser().parse_mm_data(sync_data),
        sync_uuids,
    )


@pytest.mark.asyncio
@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize(
    "video_processor", ["Qwen2VLVideoProcessor", "Qwen3VLVideoProcessor", "Glm4vVideoProcessor"]
)
async def test_model_video_processor_picks_vllms_sampler(
    mode: str, video_processor: str, use_connector: Callable[[str], None]
) -> None:
    """The parser hands the model's video processor name to the connector; through
    mediagate it picks the sampler vLLM's own connector picks for that model, and the
    frames and every metadata value (the backend's name included) are vLLM's."""
    message = {
        "role": "user",
        "content": [{"type": "video_url", "video_url": {"url": MP4_URL}}],
    }

    async def parse() -> Parsed:
        if mode == "sync":
            return parse_sync(message, video_processor)
        return await parse_async(message, video_processor)

    use_connector("http")
    _, _, ref_data, _ = await parse()
    use_connector("mediagate")
    tracker, _, mm_data, _ = await parse()
    assert isinstance(the_connector(tracker), VllmMediaConnector)
    (item,), (ref,) = mm_data["video"], ref_data["video"]
    assert type(item) is VllmMediaWithBytes
    (frames, metadata), (ref_frames, ref_metadata) = item.media, ref.media
    assert frames.shape == ref_frames.shape
    assert len(frames) != DEFAULT_NUM_FRAMES
    assert float(np.abs(frames.astype(np.int16) - ref_frames).mean()) <= 1.0
    assert metadata == ref_metadata
    assert metadata["video_backend"] != "pyav"
    assert tracker.decoded_budget.used >= frames.nbytes


@pytest.mark.asyncio
@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_image_embeds_resolve_through_mediagate(
    mode: str, use_connector: Callable[[str], None]
) -> None:
    """``image_embeds`` parts (``torch.save`` and ``.npy``, as vLLM's clients encode them)
    decode through mediagate to the tensors sent, as vLLM's own connector decodes them;
    vLLM batches them, its data parser takes them as image embeddings of the model's
    hidden size, and they hash stably."""

    async def parse(message: dict[str, Any]) -> Parsed:
        return parse_sync(message) if mode == "sync" else await parse_async(message)

    use_connector("http")
    _, _, ref_data, _ = await parse(embeds_message())
    use_connector("mediagate")
    tracker, conversation, mm_data, mm_uuids = await parse(embeds_message())
    assert isinstance(the_connector(tracker), VllmMediaConnector)
    assert conversation[0]["content"].count("<|IMAGE|>") == 2
    expected = torch.stack([embedding(1), embedding(2)])
    embeds = mm_data["image"]
    assert isinstance(embeds, torch.Tensor) and embeds.dtype == torch.float32
    assert torch.equal(embeds, expected) and torch.equal(embeds, ref_data["image"])

    items = data_parser().parse_mm_data(mm_data)
    parsed = items.get_items("image", ImageEmbeddingItems)
    assert parsed.get_count() == 2
    assert all(torch.equal(parsed.get(i), expected[i]) for i in range(2))
    hashes = mm_hashes(items, mm_uuids)
    assert len(set(hashes["image"])) == 2
    _, _, again, again_uuids = await parse(embeds_message())
    assert mm_hashes(data_parser().parse_mm_data(again), again_uuids) == hashes
    _, _, other, other_uuids = await parse(embeds_message((3, 2)))
    changed = mm_hashes(data_parser().parse_mm_data(other), other_uuids)
    assert changed["image"][0] != hashes["image"][0]
    assert changed["image"][1] == hashes["image"][1]


def test_one_content_list_with_every_part(use_connector: Callable[[str], None]) -> None:
    """One content list holding every part: vLLM's sync parser fetches each through
    mediagate and stores it; vLLM then refuses to resolve raw images together with image
    embeddings (its rule, answered 400), whatever the connector."""
    message = media_message()
    message["content"] += embeds_message()["content"][1:]
    use_connector("mediagate")
    tracker = StandInTracker(StandInModelConfig())
    parse_chat_message_content(message, tracker, "string", interleave_strings=False)
    assert isinstance(the_connector(tracker), VllmMediaConnector)
    stored = {
        name: [data for data, _ in items] for name, items in tracker._items_by_modality.items()
    }
    assert {name: len(items) for name, items in stored.items()} == {
        "image": 2,
        "audio": 2,
        "video": 1,
        "image_embeds": 2,
    }
    assert all(type(item) is VllmMediaWithBytes for item in stored["image"] + stored["video"])
    assert all(isinstance(item, tuple) and len(item) == 2 for item in stored["audio"])
    assert all(isinstance(item, torch.Tensor) for item in stored["image_embeds"])
    with pytest.raises(VLLMValidationError, match="Mixing raw image and embedding") as refused:
        tracker.resolve_items()
    assert create_error_response(refused.value).error.code == 400


@pytest.mark.asyncio
@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_refused_video_url_is_a_client_error(
    mode: str, use_connector: Callable[[str], None], offline_guard: OfflineGuard
) -> None:
    """A ``video_url`` to the cloud metadata address is refused by mediagate's policy
    before anything is resolved or dialled; the refusal is a ``ValueError`` that vLLM's
    ``create_error_response`` answers 400, and nothing was downloaded or decoded."""
    message = {
        "role": "user",
        "content": [
            {"type": "text", "text": "Watch this."},
            {"type": "video_url", "video_url": {"url": METADATA_URL}},
        ],
    }
    use_connector("mediagate")
    tracker: Any
    with pytest.raises(mediagate.PolicyError, match="non-public address") as refused:
        if mode == "sync":
            tracker = StandInTracker(StandInModelConfig())
            parse_chat_message_content(message, tracker, "string", interleave_strings=False)
        else:
            tracker = AsyncStandInTracker(StandInModelConfig())
            parse_chat_message_content(message, tracker, "string", interleave_strings=False)
            assert tracker.get_num_items("video") == 1
            await tracker.resolve_items()
    assert isinstance(the_connector(tracker), VllmMediaConnector)
    error = refused.value
    assert isinstance(error, ValueError)
    assert not isinstance(error, (VLLMValidationError, VLLMUnprocessableEntityError))
    assert error.http_status == 403
    response = create_error_response(error)
    assert (response.error.code, response.error.type) == (400, "BadRequestError")
    assert offline_guard.refused() == []
    assert tracker.download_budget.used == 0 and tracker.decoded_budget.used == 0

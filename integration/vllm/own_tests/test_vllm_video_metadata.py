"""The video metadata the connector hands vLLM builds the ``VideoMetadata`` model code
makes from it: only the keys vLLM's own loaders return, whatever the backend adds."""

from __future__ import annotations

import pytest
from harness.bucket import BUCKET_URL
from transformers.video_utils import VideoMetadata
from vllm.multimodal.media import MEDIA_CONNECTOR_REGISTRY

MP4_URL = f"{BUCKET_URL}/multimodal_asset/slow_traffic_small.mp4"


@pytest.mark.parametrize("backend", ["pyav", "opencv"])
def test_metadata_builds_video_metadata_as_qwen_vl_builds_it(backend: str) -> None:
    theirs = MEDIA_CONNECTOR_REGISTRY.load("http")
    ours = MEDIA_CONNECTOR_REGISTRY.load(
        "mediagate", media_io_kwargs={"video": {"num_frames": 4, "video_backend": backend}}
    )
    _, expected = theirs.fetch_video(MP4_URL)
    _, metadata = ours.fetch_video(MP4_URL)
    # What Qwen3-VL's processor does with it (vllm/model_executor/models/qwen3_vl.py).
    built = VideoMetadata(**{k: metadata[k] for k in metadata if k != "do_sample_frames"})
    assert built.total_num_frames == expected["total_num_frames"]
    assert set(metadata) <= set(expected) | {"do_sample_frames"}

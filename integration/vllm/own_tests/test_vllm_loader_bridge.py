"""A model's video sampler that only vLLM has is handed the bytes mediagate fetched.

For a video processor mediagate has no sampler for (GLM-4.6V's ``glm46v``), the connector
loaded under the name ``mediagate`` fetches the video under its own rules and gives the
bytes to vLLM's registered loader, instead of refusing or sampling uniformly: the frames
and metadata equal those of vLLM's own connector, and the sampler picks its own frame
count (it is not cut to ``num_frames``).
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
from harness.bucket import BUCKET_URL
from vllm.multimodal.media import MEDIA_CONNECTOR_REGISTRY

from mediagate import VIDEO_LOADER_REGISTRY, PolicyError
from mediagate._vllm import VllmMediaConnector

MP4_URL = f"{BUCKET_URL}/multimodal_asset/slow_traffic_small.mp4"
PROCESSOR = "Glm46VVideoProcessor"


def test_a_sampler_only_vllm_has_gets_mediagates_bytes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    theirs = MEDIA_CONNECTOR_REGISTRY.load("http")
    ours = MEDIA_CONNECTOR_REGISTRY.load("mediagate")
    assert isinstance(ours, VllmMediaConnector)
    was_bridged = "glm46v" in VIDEO_LOADER_REGISTRY
    expected_frames, expected_meta = theirs.fetch_video(MP4_URL, video_processor=PROCESSOR)
    with caplog.at_level(logging.WARNING, logger="mediagate"):
        frames, metadata = ours.fetch_video(MP4_URL, video_processor=PROCESSOR)
        ours.fetch_video(MP4_URL, video_processor=PROCESSOR)
    assert np.array_equal(np.asarray(frames), np.asarray(expected_frames))
    assert metadata == expected_meta
    # Served by vLLM's own glm46v loader, registered once (and logged once) per process.
    assert VIDEO_LOADER_REGISTRY.get("glm46v").__module__.startswith("vllm.")
    bridged = [r for r in caplog.records if "vLLM's own" in r.getMessage()]
    assert len(bridged) == (0 if was_bridged else 1)
    assert len(frames) > 0 and metadata["frames_indices"] == expected_meta["frames_indices"]


def test_the_bridge_still_fetches_under_mediagates_rules() -> None:
    ours = MEDIA_CONNECTOR_REGISTRY.load("mediagate")
    with pytest.raises(PolicyError):
        ours.fetch_video("http://169.254.169.254/clip.mp4", video_processor=PROCESSOR)

"""Configuration from the environment, read in one place."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import mediagate
from mediagate import MediaPolicy
from mediagate._config import connector_kwargs_from_env


def test_policy_from_env_reads_every_field() -> None:
    policy = MediaPolicy.from_env(
        {
            "MEDIAGATE_ALLOW_PRIVATE_NETWORKS": "yes",
            "MEDIAGATE_ALLOWED_NETWORKS": "10.1.0.0/16, fd00::/8",
            "MEDIAGATE_MAX_REDIRECTS": "0",
            "MEDIAGATE_MAX_BYTES": "1000",
            "MEDIAGATE_TIMEOUT": "2.5",
            "MEDIAGATE_MAX_PIXELS": "100",
            "MEDIAGATE_MAX_VIDEO_FRAMES": "8",
            "MEDIAGATE_MAX_AUDIO_SECONDS": "30",
            "MEDIAGATE_MAX_TENSOR_BYTES": "4096",
            "MEDIAGATE_PROXY": "http://127.0.0.1:3128",
        }
    )
    assert policy.allow_private_networks is True
    assert [str(n) for n in policy.allowed_networks] == ["10.1.0.0/16", "fd00::/8"]
    assert (policy.max_redirects, policy.max_bytes, policy.timeout) == (0, 1000, 2.5)
    assert (policy.max_pixels, policy.max_video_frames) == (100, 8)
    assert (policy.max_audio_seconds, policy.max_tensor_bytes) == (30.0, 4096)
    assert policy.proxy == "http://127.0.0.1:3128"


def test_empty_environment_gives_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    assert MediaPolicy.from_env({}) == MediaPolicy()
    monkeypatch.setenv("MEDIAGATE_MAX_PIXELS", "77")
    assert MediaPolicy.from_env().max_pixels == 77


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("MEDIAGATE_ALLOW_PRIVATE_NETWORKS", "maybe"),
        ("MEDIAGATE_MAX_BYTES", "lots"),
        ("MEDIAGATE_TIMEOUT", "-1"),
        ("MEDIAGATE_ALLOWED_NETWORKS", "not-a-cidr"),
    ],
)
def test_bad_values_name_the_variable_or_field(name: str, value: str) -> None:
    with pytest.raises(ValueError, match=name.removeprefix("MEDIAGATE_").lower() + "|" + name):
        MediaPolicy.from_env({name: value})


def test_video_backend_becomes_a_video_default() -> None:
    kwargs = connector_kwargs_from_env({"MEDIAGATE_VIDEO_BACKEND": "opencv"})
    assert kwargs["media_io_kwargs"] == {"video": {"video_backend": "opencv"}}


def test_policy_values_are_validated() -> None:
    with pytest.raises(ValueError, match="max_pixels"):
        MediaPolicy(max_pixels=-1)
    with pytest.raises(ValueError, match="allow_private_networks"):
        MediaPolicy(allow_private_networks="yes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_redirects"):
        MediaPolicy(max_redirects=1.5)
    policy = MediaPolicy(max_bytes=10)
    assert policy.replace(max_bytes=20).max_bytes == 20 and policy.max_bytes == 10
    assert MediaPolicy() == MediaPolicy() and hash(MediaPolicy()) == hash(MediaPolicy())
    with pytest.raises(AttributeError):
        policy.max_bytes = 5  # type: ignore[misc]


def test_per_modality_defaults() -> None:
    policy = MediaPolicy()
    assert policy.max_bytes_for("image") == 32 * 2**20
    assert policy.max_bytes_for("audio") == 64 * 2**20
    assert policy.max_bytes_for("video") == 512 * 2**20
    assert policy.max_bytes_for("image_embedding") == 256 * 2**20
    assert (policy.timeout_for("image"), policy.timeout_for("video")) == (10.0, 60.0)
    assert MediaPolicy(max_bytes=5, timeout=1).max_bytes_for("video") == 5
    assert MediaPolicy(timeout=1).timeout_for("audio") == 1.0


def test_only_config_reads_the_environment() -> None:
    package = Path(mediagate.__file__).parent
    offenders = []
    for path in package.rglob("*.py"):
        if path.name == "_config.py":
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr in ("environ", "getenv"):
                offenders.append(f"{path.relative_to(package)}:{node.lineno}")
    assert offenders == []

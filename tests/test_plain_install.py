"""`pip install mediagate` with no extras: the demo and `mediagate fetch` work, and what
needs an extra says which one.

A wheel is built from a copy of the checkout, installed into a fresh virtual
environment (its dependencies from the configured package index), and the installed
`mediagate` command is run there. Run with `make test-install`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
EXTRA_MODULES = ("torch", "safetensors", "cv2", "fsspec", "s3fs", "gcsfs", "pillow_heif")


def _run(*argv: str | Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MEDIAGATE_", "PYTHON"))}
    return subprocess.run(
        [str(a) for a in argv],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env=env,
        stdin=subprocess.DEVNULL,
    )


def _build_isolation() -> list[str]:
    """Build with this environment's setuptools when it is recent enough (no download),
    else in pip's isolated build environment."""
    try:
        major = int(metadata.version("setuptools").split(".")[0])
    except (metadata.PackageNotFoundError, ValueError):
        return []
    return ["--no-build-isolation"] if major >= 68 else []


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A fresh virtual environment with the wheel of this checkout, no extras."""
    work = tmp_path_factory.mktemp("plain-install")
    source = work / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(
        ROOT / "src", source / "src", ignore=shutil.ignore_patterns("*.egg-info", "__pycache__")
    )
    built = _run(
        sys.executable, "-m", "pip", "wheel", "--no-deps", *_build_isolation(),
        "--quiet", "--wheel-dir", work / "dist", source,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr
    (wheel,) = (work / "dist").glob("mediagate-*.whl")
    made = _run(sys.executable, "-m", "venv", work / "venv")
    assert made.returncode == 0, made.stderr
    python = work / "venv" / "bin" / "python"
    installed = _run(
        python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", wheel
    )
    assert installed.returncode == 0, installed.stderr
    yield work / "venv"


def test_the_install_has_no_extra(venv: Path) -> None:
    probe = "import importlib.util as u, sys; print([m for m in sys.argv[1:] if u.find_spec(m)])"
    found = _run(venv / "bin" / "python", "-c", probe, *EXTRA_MODULES)
    assert found.returncode == 0 and found.stdout.strip() == "[]"
    version = _run(venv / "bin" / "mediagate", "--version")
    assert version.returncode == 0
    assert "extras installed: none; not installed: torch, opencv, s3, gcs, heif" in version.stdout


def test_the_demo_runs_what_it_can_and_names_the_extra_for_the_rest(venv: Path) -> None:
    demo = _run(venv / "bin" / "mediagate", "demo")
    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert demo.stderr == ""
    assert demo.stdout.count("skipped: needs the torch extra (pip install 'mediagate[torch]')") == 2
    assert demo.stdout.rstrip().endswith("demo passed")
    as_json = _run(venv / "bin" / "mediagate", "demo", "--json")
    records = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert as_json.returncode == 0
    assert sorted({r["modality"] for r in records if r["ok"]}) == ["audio", "image", "video"]
    assert [r["extra"] for r in records if r.get("skipped")] == ["torch", "torch"]


def test_fetch_loads_a_bundled_sample_and_names_the_extra_an_embedding_needs(
    venv: Path,
) -> None:
    where = _run(
        venv / "bin" / "python", "-c",
        "from importlib import resources; print(resources.files('mediagate') / '_samples')",
    )  # fmt: skip
    samples = Path(where.stdout.strip())
    mediagate = venv / "bin" / "mediagate"
    clip = _run(mediagate, "fetch", samples / "counter.mp4", "--json")
    assert clip.returncode == 0, clip.stdout + clip.stderr
    record = json.loads(clip.stdout)
    assert record["modality"] == "video" and record["result"]["shape"][1:] == [48, 64, 3]
    assert record["allowed_local_media_path"] == str(samples)
    tone = _run(mediagate, "fetch", samples / "tone.wav")
    assert tone.returncode == 0 and "sample_rate=16000" in tone.stdout
    assert f"file access is limited to {samples}" in tone.stderr
    tensor = _run(mediagate, "fetch", samples / "embedding.safetensors")
    assert tensor.returncode == 2
    assert (
        "MissingDependency" in tensor.stderr and "pip install 'mediagate[torch]'" in tensor.stderr
    )
    assert "Traceback" not in tensor.stderr
    bucket = _run(mediagate, "fetch", "s3://bucket/photo.jpg", "--json")
    assert bucket.returncode == 2 and json.loads(bucket.stdout)["extra"] == "s3"

"""The reference environment: vLLM's media layer in its own venv, ``benchmarks/.ref-venv``.

``ensure_reference_venv`` builds it once (a stamp file records what was installed) and
returns its interpreter; other bench modules find that interpreter in the environment
variable named by ``REF_PYTHON_ENV``, which ``run.py`` sets.
"""

from __future__ import annotations

import json
import platform
import re
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "EXTRA_PACKAGES",
    "MEDIA_IMPORT_PACKAGES",
    "REF_IMPORT_CHECK",
    "REF_LOG",
    "REF_PYTHON",
    "REF_PYTHON_ENV",
    "REF_STAMP",
    "REF_VENV",
    "TORCH_PIN",
    "VLLM_PIN",
    "ReferenceBuildError",
    "ensure_reference_venv",
]

BENCH = Path(__file__).resolve().parent

REF_VENV = BENCH / ".ref-venv"
REF_PYTHON = REF_VENV / "bin" / "python"
REF_STAMP = REF_VENV / ".stamp"
REF_LOG = BENCH / ".work" / "ref-venv-build.log"
#: The environment variable other bench modules read to find the reference interpreter.
REF_PYTHON_ENV = "MEDIAGATE_BENCH_REF_PYTHON"
VLLM_PIN = "vllm==0.33.0"
#: The CPU build that installs from the local wheel; any other torch is gigabytes.
TORCH_PIN = "torch==2.13.0"
#: What ``from vllm.multimodal.utils import MediaConnector`` imports, found by trying the
#: import in a bare environment; each is installed with the version range vLLM declares.
MEDIA_IMPORT_PACKAGES = (
    "aiohttp",
    "cachetools",
    "cbor2",
    "numpy",
    "openai",
    "oss-harmony",
    "pillow",
    "psutil",
    "pybase64",
    "pydantic",
    "pyzmq",
    "regex",
    "requests",
    "transformers",
)
#: The reference's audio path resamples with librosa (bench_audio compares against it).
EXTRA_PACKAGES = ("librosa",)
REF_IMPORT_CHECK = "from vllm.multimodal.utils import MediaConnector; import librosa"


class ReferenceBuildError(RuntimeError):
    """The reference environment could not be built; the message says which step failed."""


def _canonical(name: str) -> str:
    """A distribution name in its normalized form (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _stamp_spec() -> dict[str, Any]:
    """What a built environment holds; a different spec means it is built again."""
    return {
        "vllm": VLLM_PIN,
        "torch": TORCH_PIN,
        "packages": list(MEDIA_IMPORT_PACKAGES),
        "extra": list(EXTRA_PACKAGES),
        "python": platform.python_version(),
    }


def _pip(args: Sequence[str], log: Any) -> None:
    """Run the reference interpreter's pip with ``args``, its output going to ``log``.

    Raises:
        ReferenceBuildError: pip exited with a non-zero status.
    """
    command = [str(REF_PYTHON), "-m", "pip", "--disable-pip-version-check", *args]
    log.write(f"$ {' '.join(command)}\n")
    log.flush()
    done = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, check=False)
    if done.returncode != 0:
        raise ReferenceBuildError(
            f"`pip {' '.join(args)}` failed (exit {done.returncode}); see {REF_LOG}"
        )


def _declared_requirements() -> dict[str, str]:
    """vLLM's own requirement strings, by canonical package name.

    Raises:
        ReferenceBuildError: the installed vLLM's metadata could not be read.
    """
    script = "import importlib.metadata as m, json; print(json.dumps(m.requires('vllm') or []))"
    out = subprocess.run(
        [str(REF_PYTHON), "-c", script], capture_output=True, text=True, check=False
    )
    if out.returncode != 0:
        raise ReferenceBuildError(f"reading vLLM's metadata failed: {out.stderr.strip()[-300:]}")
    declared: dict[str, str] = {}
    for requirement in json.loads(out.stdout):
        match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
        if match:
            declared[_canonical(match.group(1))] = requirement
    return declared


def ensure_reference_venv(log: Callable[[str], None] = print) -> Path:
    """Build ``benchmarks/.ref-venv`` once; later calls return at once (a stamp file).

    Steps: a venv; ``pip install torch==2.13.0`` (the local CPU build); ``pip install
    --no-deps vllm==0.33.0`` (its full dependency set is CUDA kernels and serving stacks
    that media loading never imports); then the packages the media import path needs,
    with vLLM's declared version ranges, under a constraint that keeps torch at 2.13.0;
    then the import itself is checked.

    Args:
        log: Where progress lines go.

    Returns:
        The reference environment's interpreter.

    Raises:
        ReferenceBuildError: a step failed; the message names it.
    """
    spec = json.dumps(_stamp_spec(), sort_keys=True)
    if REF_STAMP.exists() and REF_PYTHON.exists() and REF_STAMP.read_text() == spec:
        return REF_PYTHON
    log(f"building the reference environment in {REF_VENV} (log: {REF_LOG})")
    REF_LOG.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with REF_LOG.open("a", encoding="utf-8") as out:
        if not REF_PYTHON.exists():
            made = subprocess.run(
                [sys.executable, "-m", "venv", str(REF_VENV)],
                stdout=out,
                stderr=subprocess.STDOUT,
                check=False,
            )
            if made.returncode != 0:
                raise ReferenceBuildError(f"creating the venv failed; see {REF_LOG}")
        constraints = REF_VENV / "constraints.txt"
        constraints.write_text(TORCH_PIN + "\n")
        log(f"  pip install {TORCH_PIN}")
        _pip(["install", "-q", TORCH_PIN], out)
        log(f"  pip install --no-deps {VLLM_PIN}")
        _pip(["install", "-q", "--no-deps", VLLM_PIN], out)
        declared = _declared_requirements()
        wanted = [declared.get(_canonical(name), name) for name in MEDIA_IMPORT_PACKAGES]
        wanted += list(EXTRA_PACKAGES)
        log(f"  pip install -c constraints.txt {' '.join(repr(w) for w in wanted)}")
        _pip(["install", "-q", "-c", str(constraints), *wanted], out)
        check = subprocess.run(
            [str(REF_PYTHON), "-c", REF_IMPORT_CHECK], capture_output=True, text=True, check=False
        )
        out.write(check.stdout + check.stderr)
        if check.returncode != 0:
            last = (check.stderr.strip().splitlines() or ["no output"])[-1]
            raise ReferenceBuildError(f"the reference import failed: {last}")
    REF_STAMP.write_text(spec)
    log(f"  reference environment ready in {time.perf_counter() - start:.0f} s")
    return REF_PYTHON

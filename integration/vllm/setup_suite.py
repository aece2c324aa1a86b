"""Build what the vLLM integration suite needs: its venv, vLLM's sdist and vLLM's tests.

Run with the project's interpreter (``.venv/bin/python integration/vllm/setup_suite.py``);
only the standard library is used here. Three steps, each skipped when already done:

1. ``vllm-0.33.0.tar.gz`` is fetched from the package index pip knows as PyPI (its simple
   page, the link's ``sha256`` fragment checked) into ``integration/vllm/.work/downloads``.
2. vLLM's ``tests/multimodal/media/*.py`` and the helper modules they import are extracted
   from it into ``integration/vllm/.work/suite``; the helper ``tests/conftest.py`` is this
   folder's ``vllm_tests_conftest.py`` (vLLM's own imports the whole engine). The suite's
   own tests (``own_tests/``) are copied beside them.
3. ``integration/vllm/.venv`` is built with the reference environment's recipe
   (``benchmarks/_reference.py``): torch 2.13.0 (the local CPU build), ``vllm==0.33.0``
   without dependencies, the packages vLLM's media layer imports; then mediagate (editable,
   without dependencies, which installs its ``vllm.general_plugins`` entry point), its
   runtime dependencies from ``pyproject.toml`` and what the tests import. Every install
   runs under a constraint pinning torch, and the result is checked for CUDA packages.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import html.parser
import json
import platform
import re
import shutil
import subprocess
import sys
import tarfile
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import IO

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from _reference import (  # noqa: E402
    EXTRA_PACKAGES,
    MEDIA_IMPORT_PACKAGES,
    REF_IMPORT_CHECK,
    TORCH_PIN,
    VLLM_PIN,
    _canonical,
)

__all__ = [
    "OWN_TESTS",
    "PYTHON",
    "SUITE",
    "TEST_PACKAGES",
    "VENV",
    "WORK",
    "SetupError",
    "ensure_all",
    "ensure_sdist",
    "ensure_suite",
    "ensure_venv",
]

WORK = HERE / ".work"
DOWNLOADS = WORK / "downloads"
SUITE = WORK / "suite"
LOG = WORK / "setup.log"
VENV = HERE / ".venv"
PYTHON = VENV / "bin" / "python"
STAMP = VENV / ".stamp"
CONSTRAINTS = VENV / "constraints.txt"

VLLM_VERSION = VLLM_PIN.split("==", 1)[1]
SDIST_NAME = f"vllm-{VLLM_VERSION}.tar.gz"
SDIST_PREFIX = f"vllm-{VLLM_VERSION}/"
#: The test modules the suite runs, as a pattern on their path inside the sdist.
TEST_GLOB = "tests/multimodal/media/test_*.py"
CONFTEST = "tests/conftest.py"
#: Data files the test modules open from the sdist (``ASSETS_DIR`` beside them).
DATA_DIRS = ("tests/multimodal/assets/",)
#: The suite's own tests (vLLM code paths its media tests do not reach), copied into the
#: suite folder as ``own_tests/`` so they run under the same rootdir and conftest.
OWN_TESTS = HERE / "own_tests"
#: The head of the suite's ``tests/conftest.py``: the imports of the pieces below.
CONFTEST_STAND_IN = HERE / "vllm_tests_conftest.py"
#: The top-level definitions of vLLM's ``tests/conftest.py`` the media tests use (names
#: they import and fixtures they request, with what those need), copied in this order.
CONFTEST_PIECES = (
    "logger",
    "VideoAssetPrompts",
    "VideoTestAssets",
    "AudioAssetPrompts",
    "AudioTestAssets",
    "VIDEO_ASSETS",
    "AUDIO_ASSETS",
    "init_test_http_connection",
    "video_assets",
    "audio_assets",
    "AssetHandler",
    "_find_free_port",
    "LocalAssetServer",
    "local_asset_server",
    "image_url",
)
#: What the test modules import beyond vLLM's media layer, found by running them (the
#: last four are what ``vllm.entrypoints.serve.create_error_response`` imports, which
#: ``test_unprocessable_entity_error.py`` calls); vLLM's declared version range is used
#: where it declares one. ``cryptography`` makes the certificate of the loopback stand-in
#: for vLLM's asset bucket; ``pytest-timeout`` bounds each test (``pytest.ini``).
TEST_PACKAGES = (
    "pytest",
    "pytest-asyncio",
    "pytest-timeout",
    "cryptography",
    "soundfile",
    "librosa",
    "opencv-python-headless",
    "av",
    "fastapi",
    "msgspec",
    "prometheus-client",
    "py-cpuinfo",
)
#: Checked in the built venv: vLLM's media layer, the test imports, mediagate's plugin.
IMPORT_CHECK = (
    REF_IMPORT_CHECK
    + "; import cv2, av, soundfile, pytest, pytest_asyncio, pytest_timeout, cryptography"
    + "; import fastapi, msgspec, prometheus_client, cpuinfo"
    + "; import mediagate._vllm"
)
#: Distributions that mean a CUDA build was pulled in.
_CUDA_DISTRIBUTIONS = re.compile(r"^(nvidia-|cuda-|cupy|triton$|pytorch-triton)")


class SetupError(RuntimeError):
    """A setup step failed; the message names it (and the log, where there is one)."""


# --- 1. vLLM's source distribution ---------------------------------------------------


class _Links(html.parser.HTMLParser):
    """The ``href`` of every ``<a>`` on a PEP 503 simple page."""

    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            href = dict(attrs).get("href")
            if href:
                self.hrefs.append(href)


def _index_page() -> str:
    """The simple page of ``vllm`` on the index pip calls PyPI."""
    from pip._internal.models.index import PyPI

    return PyPI.simple_url.rstrip("/") + "/vllm/"


def _sdist_link(page_url: str) -> tuple[str, str]:
    """The download URL of ``vllm-<version>.tar.gz`` and its sha256, from the simple page.

    Raises:
        SetupError: the page has no such link, or the link carries no sha256.
    """
    request = urllib.request.Request(page_url, headers={"Accept": "text/html"})
    with urllib.request.urlopen(request, timeout=120) as answer:
        page = answer.read().decode("utf-8", "replace")
    parser = _Links()
    parser.feed(page)
    for href in parser.hrefs:
        url = urllib.parse.urljoin(page_url, href)
        parts = urllib.parse.urlsplit(url)
        if parts.path.rsplit("/", 1)[-1] != SDIST_NAME:
            continue
        fragment = urllib.parse.parse_qs(parts.fragment)
        digest = (fragment.get("sha256") or [""])[0].lower()
        if not re.fullmatch(r"[0-9a-f]{64}", digest):
            raise SetupError(f"the index's link to {SDIST_NAME} carries no sha256")
        return urllib.parse.urlunsplit(parts._replace(fragment="")), digest
    raise SetupError(f"{page_url} lists no {SDIST_NAME}")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def ensure_sdist(log: Callable[[str], None] = print) -> Path:
    """vLLM's source distribution in the download cache, verified.

    A file whose digest was verified against the index before is used as it is; a file
    without a recorded digest is checked against the index's and fetched again if it
    differs.

    Returns:
        The path of the cached ``vllm-<version>.tar.gz``.

    Raises:
        SetupError: the index has no such file, or the download's digest is wrong.
    """
    target = DOWNLOADS / SDIST_NAME
    recorded = target.with_name(target.name + ".sha256")
    if target.exists() and recorded.exists():
        if _sha256(target) == recorded.read_text().strip():
            return target
        recorded.unlink()
    DOWNLOADS.mkdir(parents=True, exist_ok=True)
    page = _index_page()
    log(f"looking up {SDIST_NAME} on {page}")
    url, digest = _sdist_link(page)
    if not (target.exists() and _sha256(target) == digest):
        log(f"  downloading {url}")
        partial = target.with_name(target.name + ".part")
        with urllib.request.urlopen(url, timeout=300) as answer, partial.open("wb") as out:
            shutil.copyfileobj(answer, out, 1 << 20)
        got = _sha256(partial)
        if got != digest:
            partial.unlink()
            raise SetupError(f"{SDIST_NAME}: sha256 {got} is not the index's {digest}")
        partial.replace(target)
    recorded.write_text(digest + "\n")
    return target


# --- 2. vLLM's media tests ------------------------------------------------------------


def _module_path(name: str) -> str:
    return name.replace(".", "/")


def _imported_helpers(source: str, module: str) -> set[str]:
    """The ``tests.*`` modules one test module imports, as dotted names."""
    package = module.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                if node.level > 1:
                    base = base[: -(node.level - 1)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            if target == "tests" or target.startswith("tests."):
                found.add(target)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("tests."))
    return found


def ensure_suite(sdist: Path, log: Callable[[str], None] = print) -> Path:
    """Extract the media tests and their helpers from ``sdist`` into ``SUITE`` (anew), and
    copy the suite's own tests (``OWN_TESTS``) beside them.

    ``tests/conftest.py`` is not vLLM's: it is ``vllm_tests_conftest.py`` from this folder
    followed by the ``CONFTEST_PIECES`` of vLLM's file.

    Returns:
        The suite folder; the tests are under ``tests/multimodal/media``.

    Raises:
        SetupError: a helper module the tests import is not in the sdist.
    """
    if SUITE.exists():
        shutil.rmtree(SUITE)
    SUITE.mkdir(parents=True)
    with tarfile.open(sdist) as archive:
        members = {
            m.name.removeprefix(SDIST_PREFIX): m
            for m in archive.getmembers()
            if m.name.startswith(SDIST_PREFIX) and m.isfile()
        }
        tests = sorted(p for p in members if Path(p).match(TEST_GLOB))
        wanted = set(tests)
        pending = list(tests)
        while pending:
            path = pending.pop()
            module = path.removesuffix(".py").replace("/", ".")
            source = _read_member(archive, members[path])
            for helper in sorted(_imported_helpers(source, module)):
                candidates = (f"{_module_path(helper)}.py", f"{_module_path(helper)}/__init__.py")
                hit = next((c for c in candidates if c in members), None)
                if hit is None:
                    raise SetupError(f"{path} imports {helper}, which {sdist.name} lacks")
                if hit == CONFTEST or hit in wanted:
                    continue
                wanted.add(hit)
                pending.append(hit)
        for path in list(wanted):
            parts = Path(path).parts
            for depth in range(1, len(parts)):
                init = "/".join(parts[:depth]) + "/__init__.py"
                if init in members:
                    wanted.add(init)
        wanted.update(p for p in members if p.startswith(DATA_DIRS))
        for path in sorted(wanted):
            destination = SUITE / path
            destination.parent.mkdir(parents=True, exist_ok=True)
            destination.write_bytes(_read_member_bytes(archive, members[path]))
        pieces = _conftest_pieces(_read_member(archive, members[CONFTEST]))
    (SUITE / CONFTEST).write_text(CONFTEST_STAND_IN.read_text() + "\n\n" + pieces)
    shutil.copytree(OWN_TESTS, SUITE / OWN_TESTS.name, ignore=shutil.ignore_patterns("__pycache__"))
    log(f"extracted {len(tests)} test modules and {len(wanted) - len(tests)} other files")
    return SUITE


def _conftest_pieces(source: str) -> str:
    """The ``CONFTEST_PIECES`` of vLLM's ``tests/conftest.py``, decorators included.

    Raises:
        SetupError: a piece is not defined at the top level of the file.
    """
    tree = ast.parse(source)
    lines = source.splitlines()
    found: dict[str, str] = {}
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names = [node.name]
        elif isinstance(node, ast.Assign):
            names = [t.id for t in node.targets if isinstance(t, ast.Name)]
        else:
            continue
        for name in names:
            if name in CONFTEST_PIECES and name not in found:
                first = min([node.lineno, *(d.lineno for d in getattr(node, "decorator_list", []))])
                found[name] = "\n".join(lines[first - 1 : node.end_lineno])
    missing = [name for name in CONFTEST_PIECES if name not in found]
    if missing:
        raise SetupError(f"vLLM's tests/conftest.py defines no {', '.join(missing)}")
    return "\n\n\n".join(found[name] for name in CONFTEST_PIECES) + "\n"


def _read_member_bytes(archive: tarfile.TarFile, member: tarfile.TarInfo) -> bytes:
    handle = archive.extractfile(member)
    if handle is None:
        raise SetupError(f"{member.name} cannot be read from the sdist")
    with handle:
        return handle.read()


def _read_member(archive: tarfile.TarFile, member: tarfile.TarInfo) -> str:
    return _read_member_bytes(archive, member).decode("utf-8")


# --- 3. the suite's venv --------------------------------------------------------------


def _stamp_spec() -> str:
    """What a built venv holds; ``pyproject.toml`` by digest, since its dependencies and
    entry points are what the editable install took from it."""
    return json.dumps(
        {
            "vllm": VLLM_PIN,
            "torch": TORCH_PIN,
            "media": list(MEDIA_IMPORT_PACKAGES) + list(EXTRA_PACKAGES),
            "tests": list(TEST_PACKAGES),
            "pyproject": _sha256(ROOT / "pyproject.toml"),
            "python": platform.python_version(),
        },
        sort_keys=True,
    )


def _pip(args: Sequence[str], out: IO[str]) -> None:
    command = [str(PYTHON), "-m", "pip", "--disable-pip-version-check", *args]
    out.write(f"$ {' '.join(command)}\n")
    out.flush()
    done = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, check=False)
    if done.returncode != 0:
        raise SetupError(f"`pip {' '.join(args)}` failed (exit {done.returncode}); see {LOG}")


def _run_python(script: str) -> str:
    done = subprocess.run([str(PYTHON), "-c", script], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise SetupError(f"`python -c {script!r}` failed in {VENV}: {last}")
    return done.stdout


def _requirement_name(requirement: str) -> str:
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    return _canonical(match.group(1)) if match else ""


def _declared(names: Iterable[str]) -> list[str]:
    """``names`` with the version ranges the installed vLLM declares for them."""
    script = "import importlib.metadata as m, json; print(json.dumps(m.requires('vllm') or []))"
    declared: dict[str, str] = {}
    for requirement in json.loads(_run_python(script)):
        if ";" in requirement and "extra ==" in requirement.split(";", 1)[1]:
            continue
        name = _requirement_name(requirement)
        if name:
            declared.setdefault(name, requirement)
    return [declared.get(_canonical(name), name) for name in names]


def _runtime_requirements() -> list[str]:
    """mediagate's runtime dependencies (``[project].dependencies`` of ``pyproject.toml``),
    read from the metadata the editable install wrote."""
    script = "import importlib.metadata as m, json;print(json.dumps(m.requires('mediagate') or []))"
    requirements: list[str] = json.loads(_run_python(script))
    return [r for r in requirements if "extra ==" not in r.partition(";")[2]]


def _check_no_cuda() -> None:
    script = (
        "import importlib.metadata as m, json;"
        "print(json.dumps({d.metadata['Name']: d.version for d in m.distributions()}))"
    )
    installed: dict[str, str] = json.loads(_run_python(script))
    cuda = sorted(n for n in installed if _CUDA_DISTRIBUTIONS.match(_canonical(n)))
    if cuda:
        raise SetupError(f"CUDA packages were installed in {VENV}: {', '.join(cuda)}")
    torch = installed.get("torch", "")
    if torch.split("+", 1)[0] != TORCH_PIN.split("==", 1)[1]:
        raise SetupError(f"{VENV} holds torch {torch or 'none'}, not {TORCH_PIN}")


def ensure_venv(log: Callable[[str], None] = print) -> Path:
    """Build ``integration/vllm/.venv`` once; later calls return at once (a stamp file).

    Returns:
        The suite's interpreter.

    Raises:
        SetupError: a step failed; the message names it.
    """
    spec = _stamp_spec()
    if STAMP.exists() and PYTHON.exists() and STAMP.read_text() == spec:
        return PYTHON
    log(f"building the suite environment in {VENV} (log: {LOG})")
    start = time.perf_counter()
    LOG.parent.mkdir(parents=True, exist_ok=True)
    with LOG.open("a", encoding="utf-8") as out:
        if not PYTHON.exists():
            made = subprocess.run(
                [sys.executable, "-m", "venv", str(VENV)],
                stdout=out,
                stderr=subprocess.STDOUT,
                check=False,
            )
            if made.returncode != 0:
                raise SetupError(f"creating the venv failed; see {LOG}")
        CONSTRAINTS.write_text(TORCH_PIN + "\n")
        constrained = ["-c", str(CONSTRAINTS)]
        log(f"  pip install {TORCH_PIN}")
        _pip(["install", "-q", *constrained, TORCH_PIN], out)
        log(f"  pip install --no-deps {VLLM_PIN}")
        _pip(["install", "-q", "--no-deps", VLLM_PIN], out)
        media = _declared([*MEDIA_IMPORT_PACKAGES, *EXTRA_PACKAGES])
        log(f"  pip install -c constraints.txt {' '.join(media)}")
        _pip(["install", "-q", *constrained, *media], out)
        log(f"  pip install --no-deps -e {ROOT}")
        _pip(["install", "-q", "--no-deps", "-e", str(ROOT)], out)
        runtime = _runtime_requirements()
        named = {_requirement_name(r) for r in runtime} | {
            _canonical(n) for n in (*MEDIA_IMPORT_PACKAGES, *EXTRA_PACKAGES)
        }
        tests = [n for n in TEST_PACKAGES if _canonical(n) not in named]
        rest = [*runtime, *_declared(tests)]
        log(f"  pip install -c constraints.txt {' '.join(rest)}")
        _pip(["install", "-q", *constrained, *rest], out)
        _check_no_cuda()
        out.write(_run_python(IMPORT_CHECK))
    STAMP.write_text(spec)
    log(f"  suite environment ready in {time.perf_counter() - start:.0f} s")
    return PYTHON


def ensure_all(log: Callable[[str], None] = print) -> tuple[Path, Path]:
    """Every step; returns the suite's interpreter and the suite folder."""
    sdist = ensure_sdist(log)
    suite = ensure_suite(sdist, log)
    return ensure_venv(log), suite


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: build everything, or ``--rebuild`` the venv from scratch."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rebuild", action="store_true", help="remove the venv first")
    args = parser.parse_args(argv)
    if args.rebuild and VENV.exists():
        shutil.rmtree(VENV)
    try:
        python, suite = ensure_all()
    except SetupError as exc:
        print(f"setup failed: {exc}", file=sys.stderr)
        return 1
    print(f"suite interpreter: {python}\nsuite folder: {suite}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

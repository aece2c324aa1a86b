"""vLLM's media tests against mediagate's connector, loaded the way vLLM loads plugins.

At import, before anything imports aiohttp or vLLM:

- the suite's environment: loopback is the one non-public network mediagate may dial
  (``MEDIAGATE_ALLOWED_NETWORKS``), no other ``MEDIAGATE_*`` variable is inherited, vLLM's
  asset cache is a fresh folder, the process trusts the loopback bucket's CA, and Hugging
  Face libraries stay offline;
- the offline guard (``harness/offline.py``): only loopback names resolve and only loopback
  addresses can be dialled;
- vLLM's bucket URL points at the loopback stand-in (``harness/bucket.py``), which serves
  the media of ``harness/media.py``; the Hugging Face video is put in vLLM's cache;
- ``vllm.plugins.load_general_plugins()`` runs and must have registered ``mediagate`` in
  ``MEDIA_CONNECTOR_REGISTRY`` from the installed ``vllm.general_plugins`` entry point.

After collection every test module's ``MediaConnector`` (vLLM's class, imported by name) is
rebound to ``MEDIA_CONNECTOR_REGISTRY.name2class["mediagate"]``; vLLM's ``MediaIO`` classes
and helpers stay vLLM's. Each test records how many mediagate connectors it built.
"""

from __future__ import annotations

import atexit
import importlib.metadata
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

if "aiohttp" in sys.modules:
    raise pytest.UsageError(
        "aiohttp was imported before the suite's conftest, so the loopback CA is not trusted"
    )

from harness import media
from harness.bucket import BUCKET_URL, BucketServer, make_certificates
from harness.offline import OfflineGuard
from harness.report import Recorder

PLUGIN_GROUP = "vllm.general_plugins"
PLUGIN_NAME = "mediagate"
PLUGIN_VALUE = "mediagate._vllm:register"
#: The only non-public networks mediagate may dial in this suite.
LOOPBACK_NETWORKS = "127.0.0.0/8,::1/128"

_STATE = Path(tempfile.mkdtemp(prefix="vllm-suite-"))
atexit.register(shutil.rmtree, _STATE, ignore_errors=True)


def _prepare_environment() -> tuple[Path, Path]:
    """Set the suite's variables; returns the server's certificate chain and key."""
    for name in [n for n in os.environ if n.startswith("MEDIAGATE_")]:
        del os.environ[name]
    os.environ["MEDIAGATE_ALLOWED_NETWORKS"] = LOOPBACK_NETWORKS
    for name in ("VLLM_PLUGINS", "VLLM_MEDIA_CONNECTOR", "VLLM_VIDEO_LOADER_BACKEND"):
        os.environ.pop(name, None)
    os.environ["VLLM_ASSETS_CACHE"] = str(_STATE / "assets")
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    ca, chain, key = make_certificates(_STATE)
    os.environ["SSL_CERT_FILE"] = str(ca)
    os.environ["REQUESTS_CA_BUNDLE"] = str(ca)
    return chain, key


_CHAIN, _KEY = _prepare_environment()
GUARD = OfflineGuard()
GUARD.install()

import vllm.assets.audio  # noqa: E402
import vllm.assets.base  # noqa: E402
from vllm.assets.video import download_video_asset  # noqa: E402
from vllm.multimodal.media import MEDIA_CONNECTOR_REGISTRY  # noqa: E402
from vllm.multimodal.media import MediaConnector as VllmMediaConnector  # noqa: E402
from vllm.plugins import load_general_plugins  # noqa: E402

vllm.assets.base.VLLM_S3_BUCKET_URL = BUCKET_URL
vllm.assets.audio.VLLM_S3_BUCKET_URL = BUCKET_URL  # type: ignore[attr-defined]


def _load_plugin() -> type[Any]:
    """Load vLLM's general plugins and return the class registered as ``mediagate``."""
    points = {e.name: e.value for e in importlib.metadata.entry_points(group=PLUGIN_GROUP)}
    if points.get(PLUGIN_NAME) != PLUGIN_VALUE:
        raise pytest.UsageError(
            f"the {PLUGIN_GROUP} entry point {PLUGIN_NAME} = {PLUGIN_VALUE!r} is not installed "
            f"(found {points}); run integration/vllm/setup_suite.py"
        )
    load_general_plugins()  # type: ignore[no-untyped-call]
    registered = MEDIA_CONNECTOR_REGISTRY.name2class
    assert PLUGIN_NAME in registered, f"load_general_plugins() registered only {list(registered)}"
    connector: type[Any] = registered[PLUGIN_NAME]
    assert connector is not VllmMediaConnector
    return connector


CONNECTOR = _load_plugin()


def _place_hf_videos(cache: Path) -> None:
    """Put the Hugging Face video stand-ins where ``download_video_asset`` looks first."""
    folder = cache / "video-example-data"
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in media.build(media.HF_VIDEOS).items():
        (folder / name).write_bytes(data)
        assert download_video_asset(name) == str(folder / name)


def pytest_addoption(parser: pytest.Parser) -> None:
    """``--suite-report PATH``: where the per-test records go (JSON)."""
    parser.addoption("--suite-report", default=None, help="write per-test records here (JSON)")


_BUCKET: BucketServer | None = None


def pytest_configure(config: pytest.Config) -> None:
    """Start the bucket stand-in, fill vLLM's cache, and attach the recorder."""
    global _BUCKET
    _place_hf_videos(Path(os.environ["VLLM_ASSETS_CACHE"]))
    _BUCKET = BucketServer(media.build(media.BUCKET), _CHAIN, _KEY)
    try:
        _BUCKET.__enter__()
    except OSError as exc:
        raise pytest.UsageError(
            f"the bucket stand-in cannot listen on {BUCKET_URL}:443 ({exc}); the suite "
            "needs that port on loopback (root or CAP_NET_BIND_SERVICE)"
        ) from exc
    report = config.getoption("--suite-report")
    if report:
        config.pluginmanager.register(Recorder(Path(report)), "suite-recorder")


def pytest_unconfigure(config: pytest.Config) -> None:
    """Stop the bucket stand-in."""
    if _BUCKET is not None:
        _BUCKET.__exit__(None, None, None)


#: Test modules whose ``MediaConnector`` was rebound, by module name.
SWAPPED: set[str] = set()


def pytest_collection_modifyitems(
    session: pytest.Session, config: pytest.Config, items: list[pytest.Item]
) -> None:
    """Rebind each test module's ``MediaConnector`` to the plugin's class."""
    for item in items:
        module = getattr(item, "module", None)
        if module is None or module.__name__ in SWAPPED:
            continue
        current = getattr(module, "MediaConnector", None)
        if current is None:
            continue
        assert current is VllmMediaConnector or current is CONNECTOR, (
            f"{module.__name__}.MediaConnector is {current!r}, not vLLM's class"
        )
        module.MediaConnector = CONNECTOR
        SWAPPED.add(module.__name__)


@pytest.fixture
def offline_guard() -> OfflineGuard:
    """The suite's offline guard; ``refused()`` lists what this test tried to reach
    (the per-test record takes the list only after the test)."""
    return GUARD


@pytest.fixture(autouse=True)
def _mediagate_usage(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    """Count the mediagate connectors a test builds and what the guard refused it."""
    built = 0
    original = CONNECTOR.__init__

    def counting_init(self: Any, *args: Any, **kwargs: Any) -> None:
        nonlocal built
        built += 1
        original(self, *args, **kwargs)

    monkeypatch.setattr(CONNECTOR, "__init__", counting_init)
    GUARD.take()
    try:
        yield
    finally:
        request.node.user_properties.append(("connectors", built))
        request.node.user_properties.append(("refused", GUARD.take()))

"""Fixtures shared by the whole suite: a clean environment and a loopback server."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from builders import LoopbackServer
from mediagate import MediaConnector, MediaPolicy

_PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No MEDIAGATE_* or proxy variable leaks into a test from the caller's shell."""
    for name in list(os.environ):
        if name.startswith("MEDIAGATE_") or name.upper() in _PROXY_VARIABLES:
            monkeypatch.delenv(name, raising=False)


@pytest.fixture
def server() -> Iterator[LoopbackServer]:
    """A loopback HTTP server with no routes yet (unknown paths answer 404)."""
    with LoopbackServer() as srv:
        yield srv


@pytest.fixture
def loopback_policy() -> MediaPolicy:
    """The default rules, plus exactly the loopback address the test server uses."""
    return MediaPolicy(allowed_networks=["127.0.0.1/32"])


@pytest.fixture
def connector(loopback_policy: MediaPolicy) -> Iterator[MediaConnector]:
    with MediaConnector(policy=loopback_policy) as conn:
        yield conn


@pytest.fixture
def in_process_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    """Decode every modality in this process under the default policy.

    For tests that patch or spy on decoder internals: a decode in an isolated worker
    process would run the unpatched code there.
    """
    monkeypatch.setattr("mediagate._policy.DEFAULT_ISOLATED", frozenset())

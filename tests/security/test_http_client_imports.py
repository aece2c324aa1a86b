"""Only ``mediagate/_fetch/`` may import an HTTP client library (ARCHITECTURE rule 3)."""

from __future__ import annotations

import ast
from pathlib import Path

import mediagate

PACKAGE = Path(mediagate.__file__).resolve().parent
FETCH = PACKAGE / "_fetch"
HTTP_CLIENTS = frozenset(
    {"aiohttp", "httpx", "httpcore", "urllib3", "requests", "yarl", "http.client",
     "urllib.request", "pycurl", "tornado.httpclient", "h11", "h2"}
)  # fmt: skip


def imported_modules(source: str) -> set[str]:
    """Every module a source file imports, at any depth (functions and branches too)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, (ast.Name, ast.Attribute))
            and (getattr(node.func, "id", None) or getattr(node.func, "attr", None))
            in ("import_module", "__import__")
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            found.add(node.args[0].value)
    return found


def is_http_client(module: str) -> bool:
    return any(module == name or module.startswith(name + ".") for name in HTTP_CLIENTS)


def test_only_the_fetch_package_imports_an_http_client() -> None:
    offenders = {
        str(path.relative_to(PACKAGE)): sorted(
            m for m in imported_modules(path.read_text()) if is_http_client(m)
        )
        for path in sorted(PACKAGE.rglob("*.py"))
        if FETCH not in path.parents
    }
    # The proxy serves (aiohttp's server half); its one client, to the upstream, is in _fetch.
    assert offenders.pop("_proxy.py") == ["aiohttp", "aiohttp.web"]
    assert "Client" not in (PACKAGE / "_proxy.py").read_text()
    assert {path: mods for path, mods in offenders.items() if mods} == {}


def test_the_scan_sees_every_import_form() -> None:
    source = (
        "import aiohttp\n"
        "from http import client\n"
        "import urllib.request as r\n"
        "def f():\n"
        "    import requests\n"
        "    from yarl import URL\n"
        "    importlib.import_module('httpx')\n"
        "    __import__('urllib3')\n"
    )
    found = {m for m in imported_modules(source) if is_http_client(m)}
    assert found == {"aiohttp", "http.client", "urllib.request", "requests", "yarl", "yarl.URL",
                     "httpx", "urllib3"}  # fmt: skip
    assert not is_http_client("urllib.parse")
    assert not is_http_client("http")
    assert not is_http_client("aiohttpx")


def test_the_fetch_package_is_where_the_client_lives() -> None:
    # The rule is not vacuous: the fetcher really does import its client.
    sources = "".join(p.read_text() for p in FETCH.rglob("*.py"))
    assert any(is_http_client(m) for m in imported_modules(sources))

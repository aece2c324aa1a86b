"""Registries: register, no silent overwrite, lazy entries, helpful unknown-name errors."""

from __future__ import annotations

import pytest

from mediagate import MEDIA_CONNECTOR_REGISTRY, MediaConnector
from mediagate._registry import Registry


def test_register_and_load_instantiates() -> None:
    registry: Registry[type] = Registry("thing")

    @registry.register("a")
    class A:
        def __init__(self, value: int = 1) -> None:
            self.value = value

    assert registry.get("a") is A
    assert registry.load("a", value=3).value == 3
    assert registry.available() == ["a"] and "a" in registry


def test_no_silent_overwrite() -> None:
    registry: Registry[type] = Registry("thing")
    registry.register("a")(int)
    with pytest.raises(ValueError, match="already registered"):
        registry.register("a")(str)
    registry.register("a", override=True)(str)
    assert registry.get("a") is str


def test_unknown_name_lists_available() -> None:
    registry: Registry[type] = Registry("video loader")
    registry.register("pyav")(int)
    with pytest.raises(ValueError, match=r"unknown video loader 'nope'; available: pyav"):
        registry.load("nope")


def test_lazy_entry_names_its_extra_when_missing() -> None:
    registry: Registry[type] = Registry("thing")
    registry.register_lazy("ok", "fractions:Fraction")
    registry.register_lazy("missing", "mediagate_no_such_module:X", extra="gpu")
    assert registry.names() == ["missing", "ok"]
    assert registry.available() == ["ok"]
    with pytest.raises(ImportError, match=r"mediagate\[gpu\]"):
        registry.get("missing")


def test_http_connector_is_registered() -> None:
    connector = MEDIA_CONNECTOR_REGISTRY.load("http", media_io_kwargs={"image": {}})
    try:
        assert isinstance(connector, MediaConnector)
    finally:
        connector.close()


def test_threads_resolving_one_lazy_entry_at_once_all_get_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import importlib
    import json
    import threading
    import time

    real_import = importlib.import_module

    def slow_import(name: str) -> object:
        time.sleep(0.05)  # every thread is inside the lookup before any finishes it
        return real_import(name)

    monkeypatch.setattr("mediagate._registry.importlib.import_module", slow_import)
    registry: Registry[object] = Registry("thing")
    registry.register_lazy("json", "json:JSONDecoder")
    found: list[object] = []
    threads = [
        threading.Thread(target=lambda: found.append(registry.get("json"))) for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert found == [json.JSONDecoder] * 8
    assert registry.names() == ["json"]

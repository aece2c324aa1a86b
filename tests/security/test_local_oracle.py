"""B6: a refused ``file:`` reference answers the same whether its target exists or not.

Every file-system call the loader makes is recorded (``os.stat``, ``os.lstat``,
``os.open``, ``os.readlink``, ``os.path.exists`` and ``Path.resolve``), and no refused
reference may make one on a path outside the allowed root.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from PIL import Image

import mediagate._local
from builders import png_bytes
from mediagate import MediaConnector, MediaError, MediaPolicy, PolicyError

POLICY = MediaPolicy(max_bytes=1 << 20, timeout=1)


def png() -> bytes:
    return png_bytes(Image.new("RGB", (3, 2), (10, 20, 30)))


@pytest.fixture
def tree(tmp_path: Path) -> dict[str, Path]:
    """``base/m`` (the root, with img.png) and ``base/outside`` holding ``present.png``."""
    base = tmp_path / "base"
    root = base / "m"
    root.mkdir(parents=True)
    (root / "img.png").write_bytes(png())
    outside = base / "outside"
    outside.mkdir()
    (outside / "present.png").write_bytes(png())
    return {"base": base, "root": root, "outside": outside}


@pytest.fixture
def local(tree: dict[str, Path], make_connector: Callable[..., MediaConnector]) -> MediaConnector:
    return make_connector(POLICY, allowed_local_media_path=str(tree["root"]))


class Recorder:
    """The paths the loader's file-system calls named (absolute, or relative to a dir fd)."""

    def __init__(self) -> None:
        self.paths: list[str] = []

    def outside(self, root: Path) -> list[str]:
        inside = str(root)
        return [
            p
            for p in self.paths
            if os.path.isabs(p) and p != inside and not p.startswith(inside + os.sep)
        ]


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch) -> Iterator[Recorder]:
    rec = Recorder()

    def wrap(owner: Any, name: str) -> None:
        real = getattr(owner, name)

        def recorded(path: Any, *args: Any, **kwargs: Any) -> Any:
            if kwargs.get("dir_fd") is None:
                rec.paths.append(os.fspath(path))
            return real(path, *args, **kwargs)

        monkeypatch.setattr(owner, name, recorded)

    for name in ("stat", "lstat", "open", "readlink"):
        wrap(os, name)
    wrap(os.path, "exists")
    wrap(os.path, "realpath")
    real_resolve = Path.resolve

    def resolve(self: Path, strict: bool = False) -> Path:
        rec.paths.append(str(self))
        return real_resolve(self, strict=strict)

    monkeypatch.setattr(Path, "resolve", resolve)
    yield rec


def file_url(path: Path | str) -> str:
    return "file://" + quote(str(path))


def answer(conn: MediaConnector, url: str) -> tuple[type[MediaError], int, str]:
    with pytest.raises(MediaError) as info:
        conn.fetch_image(url)
    err = info.value
    return type(err), err.http_status, str(err)


OUTSIDE_ANSWER = (
    PolicyError,
    403,
    "the file is outside allowed_local_media_path (it must be a subpath of that folder)",
)


def url_pairs(tree: dict[str, Path]) -> list[tuple[str, str]]:
    """(existing target, missing target) spellings, each reaching outside the root."""
    root, outside = tree["root"], tree["outside"]
    return [
        (file_url(outside / "present.png"), file_url(outside / "missing.png")),
        (
            file_url(root) + "/../outside/present.png",
            file_url(root) + "/../outside/missing.png",
        ),
        (
            file_url(root) + "/%2e%2e/outside/present.png",
            file_url(root) + "/%2E%2E/outside/missing.png",
        ),
        (
            file_url(root) + "/img.png/../../outside/present.png",
            file_url(root) + "/nothing/../../outside/missing.png",
        ),
        (file_url(outside), file_url(tree["base"] / "no-such-dir")),
    ]


@pytest.mark.parametrize("index", range(5))
def test_existing_and_missing_outside_targets_answer_alike(
    index: int, local: MediaConnector, tree: dict[str, Path], recorder: Recorder
) -> None:
    present, missing = url_pairs(tree)[index]
    assert answer(local, present) == OUTSIDE_ANSWER
    assert answer(local, missing) == OUTSIDE_ANSWER
    assert recorder.outside(tree["root"]) == []


def test_symlinks_to_existing_and_missing_outside_targets_answer_alike(
    local: MediaConnector, tree: dict[str, Path], recorder: Recorder
) -> None:
    root, outside = tree["root"], tree["outside"]
    (root / "to-present.png").symlink_to(outside / "present.png")
    (root / "to-missing.png").symlink_to(outside / "missing.png")
    (root / "rel-present.png").symlink_to("../outside/present.png")
    (root / "rel-missing.png").symlink_to("../outside/missing.png")
    (root / "to-dir").symlink_to(outside)
    (root / "to-no-dir").symlink_to(tree["base"] / "no-such-dir")
    (root / "hop.png").symlink_to("to-missing.png")
    names = [
        "to-present.png",
        "to-missing.png",
        "rel-present.png",
        "rel-missing.png",
        "to-dir/present.png",
        "to-no-dir/present.png",
        "hop.png",
    ]
    answers = {answer(local, file_url(root / name)) for name in names}
    assert answers == {OUTSIDE_ANSWER}
    assert recorder.outside(root) == []


def test_refusal_is_decided_before_any_file_system_call(
    local: MediaConnector, tree: dict[str, Path], recorder: Recorder
) -> None:
    assert answer(local, "file:///etc/passwd") == OUTSIDE_ANSWER
    assert answer(local, "file:///etc/no-such-file-here") == OUTSIDE_ANSWER
    assert recorder.paths == []


def test_missing_inside_the_root_says_so(
    local: MediaConnector, tree: dict[str, Path], recorder: Recorder
) -> None:
    root = tree["root"]
    (root / "dangling.png").symlink_to("gone.png")
    expected = (PolicyError, 400, "cannot open the file (no such file)")
    assert answer(local, file_url(root / "missing.png")) == expected
    assert answer(local, file_url(root / "dangling.png")) == expected
    assert recorder.outside(root) == []


def test_links_that_stay_inside_still_load(
    local: MediaConnector, tree: dict[str, Path], recorder: Recorder
) -> None:
    root = tree["root"]
    (root / "sub").mkdir()
    (root / "sub" / "back.png").symlink_to("../img.png")
    (root / "out-and-in.png").symlink_to("../m/img.png")
    (root / "abs.png").symlink_to(root / "sub" / "back.png")
    for name in ("sub/back.png", "out-and-in.png", "abs.png"):
        assert local.fetch_image(file_url(root / name)).size == (3, 2)
    assert recorder.outside(root) == []


def test_a_root_configured_through_a_symlink_keeps_both_spellings(
    tree: dict[str, Path], make_connector: Callable[..., MediaConnector], recorder: Recorder
) -> None:
    alias = tree["base"] / "alias"
    alias.symlink_to(tree["root"])
    conn = make_connector(POLICY, allowed_local_media_path=str(alias))
    recorder.paths.clear()
    assert conn.fetch_image(file_url(alias / "img.png")).size == (3, 2)
    present = answer(conn, file_url(alias) + "/../outside/present.png")
    missing = answer(conn, file_url(alias) + "/../outside/missing.png")
    assert present == missing == OUTSIDE_ANSWER
    assert recorder.outside(tree["root"]) == []


def test_the_loader_function_itself_gives_one_answer(tree: dict[str, Path]) -> None:
    root = mediagate._local.check_allowed_root(tree["root"])
    seen = set()
    for relative in ("../outside/present.png", "../outside/missing.png", "/nope/x"):
        with pytest.raises(PolicyError) as info:
            mediagate._local.read_under_root(root, relative, 1 << 20)
        seen.add((info.value.http_status, str(info.value)))
    assert seen == {(403, OUTSIDE_ANSWER[2])}

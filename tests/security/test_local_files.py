"""F1-F4: ``file:`` references stay inside the allowed folder and read regular files only."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from PIL import Image

import mediagate._local
from builders import png_bytes
from mediagate import MediaConnector, MediaError, MediaPolicy, PolicyError, TooLargeError

SECRET = b"root:x:0:0:secret-marker"
POLICY = MediaPolicy(max_bytes=1 << 20, timeout=1)


def png() -> bytes:
    return png_bytes(Image.new("RGB", (3, 2), (10, 20, 30)))


@pytest.fixture
def tree(tmp_path: Path) -> dict[str, Path]:
    """``base/m`` (the root, holding img.png and sub/img.png), ``base/m-private`` and
    ``base/outside`` (holding secret files) next to it."""
    base = tmp_path / "base"
    root = base / "m"
    (root / "sub").mkdir(parents=True)
    (root / "img.png").write_bytes(png())
    (root / "sub" / "img.png").write_bytes(png())
    private = base / "m-private"
    private.mkdir()
    (private / "secret.png").write_bytes(png())
    outside = base / "outside"
    outside.mkdir()
    (outside / "passwd").write_bytes(SECRET)
    (outside / "img.png").write_bytes(png())
    return {"base": base, "root": root, "private": private, "outside": outside}


@pytest.fixture
def local(tree: dict[str, Path], make_connector: Callable[..., MediaConnector]) -> MediaConnector:
    return make_connector(POLICY, allowed_local_media_path=str(tree["root"]))


def file_url(path: Path | str) -> str:
    return "file://" + quote(str(path))


def refused(
    conn: MediaConnector,
    url: str,
    clean_error: Callable[..., None],
    kind: type[MediaError] = PolicyError,
) -> MediaError:
    start = time.monotonic()
    with pytest.raises(kind) as info:
        conn.fetch_image(url)
    assert time.monotonic() - start < 2
    clean_error(info.value, SECRET, "secret-marker")
    return info.value


def still_good(conn: MediaConnector, tree: dict[str, Path]) -> None:
    assert conn.fetch_image(file_url(tree["root"] / "img.png")).size == (3, 2)


# ---------------------------------------------------------------------------
# F1: paths outside the root, dot segments, hosts


def test_f1_a_file_inside_the_root_loads(local: MediaConnector, tree: dict[str, Path]) -> None:
    still_good(local, tree)
    assert local.fetch_image(file_url(tree["root"] / "sub" / "img.png")).size == (3, 2)
    assert local.fetch_image("file://localhost" + quote(str(tree["root"] / "img.png"))).size == (
        3,
        2,
    )
    assert local.fetch_image("file:" + quote(str(tree["root"] / "img.png"))).size == (3, 2)


@pytest.mark.parametrize(
    "make_url",
    [
        lambda t: "file:///etc/passwd",
        lambda t: file_url(t["outside"] / "passwd"),
        lambda t: file_url(t["root"]) + "/../outside/passwd",
        lambda t: file_url(t["root"]) + "/sub/../../outside/passwd",
        lambda t: file_url(t["root"]) + "/%2e%2e/outside/passwd",
        lambda t: file_url(t["root"]) + "/%2E%2E/%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
        lambda t: file_url(t["root"]) + "/..%2foutside%2fpasswd",
        lambda t: file_url(t["root"]) + "/%252e%252e/outside/passwd",
        lambda t: "file://otherhost" + quote(str(t["root"] / "img.png")),
        lambda t: "file://127.0.0.1" + quote(str(t["root"] / "img.png")),
        lambda t: "file://user@localhost" + quote(str(t["root"] / "img.png")),
        lambda t: "file:img.png",
        lambda t: "file:./img.png",
        lambda t: "file:",
        lambda t: file_url(t["root"]) + "/img.png%00.txt",
        lambda t: file_url(t["root"]) + "/%ff.png",
        lambda t: file_url(t["root"]) + "\\..\\outside\\passwd",
        lambda t: file_url(t["root"]) + "/img.png\n",
        lambda t: file_url(t["root"]) + "/missing.png",
        lambda t: file_url(t["root"]),
    ],
)
def test_f1_escapes_and_malformed_file_urls_are_refused(
    make_url: Callable[[dict[str, Path]], str],
    local: MediaConnector,
    tree: dict[str, Path],
    clean_error: Any,
) -> None:
    err = refused(local, make_url(tree), clean_error)
    assert str(tree["outside"]) not in str(err)
    still_good(local, tree)


def test_f1_async_twin_refuses_the_same(
    local: MediaConnector, tree: dict[str, Path], clean_error: Any
) -> None:
    async def main() -> None:
        with pytest.raises(PolicyError) as info:
            await local.fetch_image_async(file_url(tree["outside"] / "passwd"))
        clean_error(info.value, SECRET)
        assert (await local.fetch_image_async(file_url(tree["root"] / "img.png"))).size == (3, 2)

    asyncio.run(main())


# ---------------------------------------------------------------------------
# F2: symlinks


@pytest.mark.parametrize(
    ("name", "target"),
    [
        ("link.png", "outside/passwd"),
        ("link2.png", "outside/img.png"),
        ("dirlink", "outside"),
        ("abs.png", "/etc/passwd"),
    ],
)
def test_f2_symlink_leading_outside_is_refused(
    name: str,
    target: str,
    local: MediaConnector,
    tree: dict[str, Path],
    clean_error: Any,
) -> None:
    destination = Path(target) if target.startswith("/") else tree["base"] / target
    link = tree["root"] / name
    link.symlink_to(destination)
    url = file_url(link / "img.png") if destination.is_dir() else file_url(link)
    refused(local, url, clean_error)
    still_good(local, tree)


def test_f2_symlink_loop_and_dangling_link_are_refused(
    local: MediaConnector, tree: dict[str, Path], clean_error: Any
) -> None:
    (tree["root"] / "a.png").symlink_to(tree["root"] / "b.png")
    (tree["root"] / "b.png").symlink_to(tree["root"] / "a.png")
    (tree["root"] / "dangling.png").symlink_to(tree["root"] / "nothing.png")
    refused(local, file_url(tree["root"] / "a.png"), clean_error)
    refused(local, file_url(tree["root"] / "dangling.png"), clean_error)


def test_f2_symlink_staying_inside_is_followed(
    local: MediaConnector, tree: dict[str, Path]
) -> None:
    (tree["root"] / "alias.png").symlink_to(tree["root"] / "sub" / "img.png")
    assert local.fetch_image(file_url(tree["root"] / "alias.png")).size == (3, 2)


def test_f2_swap_between_check_and_open_is_caught(
    local: MediaConnector,
    tree: dict[str, Path],
    monkeypatch: pytest.MonkeyPatch,
    clean_error: Any,
) -> None:
    # After the path was resolved (and before it is judged and opened), "sub" becomes
    # a link to the outside.
    real_resolve = mediagate._local._resolve

    def resolve_then_swap(root: Path, candidate: Path) -> Path:
        resolved = real_resolve(root, candidate)
        sub = tree["root"] / "sub"
        sub.rename(tree["root"] / "sub-real")
        sub.symlink_to(tree["outside"])
        return resolved

    monkeypatch.setattr(mediagate._local, "_resolve", resolve_then_swap)
    refused(local, file_url(tree["root"] / "sub" / "img.png"), clean_error)


def test_f2_final_component_swapped_for_a_link_is_caught(
    local: MediaConnector,
    tree: dict[str, Path],
    monkeypatch: pytest.MonkeyPatch,
    clean_error: Any,
) -> None:
    real_resolve = mediagate._local._resolve

    def resolve_then_swap(root: Path, candidate: Path) -> Path:
        resolved = real_resolve(root, candidate)
        target = tree["root"] / "img.png"
        target.unlink()
        target.symlink_to(tree["outside"] / "passwd")
        return resolved

    monkeypatch.setattr(mediagate._local, "_resolve", resolve_then_swap)
    refused(local, file_url(tree["root"] / "img.png"), clean_error)


# ---------------------------------------------------------------------------
# F3: things that are not small regular files


def _fetch_in_thread(conn: MediaConnector, url: str) -> tuple[threading.Thread, dict[str, Any]]:
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["result"] = conn.fetch_image(url)
        except BaseException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, outcome


def test_f3_fifo_is_refused_without_blocking(
    local: MediaConnector, tree: dict[str, Path], clean_error: Any
) -> None:
    fifo = tree["root"] / "pipe.png"
    os.mkfifo(fifo)
    thread, outcome = _fetch_in_thread(local, file_url(fifo))
    thread.join(2)
    if thread.is_alive():
        # Unblock the reader so the test can end, then fail.
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        os.close(fd)
        thread.join(2)
        pytest.fail("opening a FIFO blocked")
    assert isinstance(outcome.get("error"), PolicyError)
    clean_error(outcome["error"])


def test_f3_directory_is_refused(
    local: MediaConnector, tree: dict[str, Path], clean_error: Any
) -> None:
    refused(local, file_url(tree["root"] / "sub"), clean_error)
    refused(local, file_url(tree["root"] / "sub") + "/", clean_error)


@pytest.mark.parametrize("device", ["/dev/zero", "/dev/urandom", "/dev/stdin"])
def test_f3_device_behind_a_link_is_refused(
    device: str, local: MediaConnector, tree: dict[str, Path], clean_error: Any
) -> None:
    if not os.path.exists(device):
        pytest.skip(f"no {device} here")
    link = tree["root"] / "dev.png"
    link.symlink_to(device)
    thread, outcome = _fetch_in_thread(local, file_url(link))
    thread.join(2)
    assert not thread.is_alive(), "reading a device behind a link did not end"
    assert isinstance(outcome.get("error"), PolicyError)
    clean_error(outcome["error"])


def test_f3_device_inside_an_allowed_root_is_refused(
    make_connector: Callable[..., MediaConnector], clean_error: Any
) -> None:
    # Even a (badly chosen) root that holds devices only yields regular files.
    conn = make_connector(POLICY, allowed_local_media_path="/dev")
    thread, outcome = _fetch_in_thread(conn, "file:///dev/zero")
    thread.join(2)
    assert not thread.is_alive(), "reading /dev/zero did not end"
    assert isinstance(outcome.get("error"), PolicyError)
    clean_error(outcome["error"])


def test_f3_file_over_the_budget_is_refused_before_reading(
    local: MediaConnector, tree: dict[str, Path], clean_error: Any
) -> None:
    big = tree["root"] / "big.png"
    with open(big, "wb") as handle:
        handle.truncate(8 << 30)  # sparse: 8 GiB claimed, nothing written
    start = time.monotonic()
    err = refused(local, file_url(big), clean_error, TooLargeError)
    assert isinstance(err, TooLargeError)
    assert err.limit == "max_bytes"
    assert time.monotonic() - start < 1
    small = tree["root"] / "just-over.png"
    small.write_bytes(png() + b"\0" * (1 << 20))
    refused(local, file_url(small), clean_error, TooLargeError)
    still_good(local, tree)


# ---------------------------------------------------------------------------
# F4: component-wise containment


def test_f4_sibling_with_the_root_as_prefix_is_refused(
    local: MediaConnector, tree: dict[str, Path], clean_error: Any
) -> None:
    assert str(tree["private"]).startswith(str(tree["root"]))
    refused(local, file_url(tree["private"] / "secret.png"), clean_error)
    refused(local, file_url(tree["root"]) + "/../m-private/secret.png", clean_error)
    link = tree["root"] / "sneaky.png"
    link.symlink_to(tree["private"] / "secret.png")
    refused(local, file_url(link), clean_error)


def test_f4_root_given_through_a_symlink_still_contains(
    tree: dict[str, Path], make_connector: Callable[..., MediaConnector], clean_error: Any
) -> None:
    alias = tree["base"] / "alias"
    alias.symlink_to(tree["root"])
    conn = make_connector(POLICY, allowed_local_media_path=str(alias))
    assert conn.fetch_image(file_url(alias / "img.png")).size == (3, 2)
    assert conn.fetch_image(file_url(tree["root"] / "img.png")).size == (3, 2)
    refused(conn, file_url(alias) + "/../outside/passwd", clean_error)
    refused(conn, file_url(tree["private"] / "secret.png"), clean_error)


def test_f4_root_must_be_an_existing_directory(tree: dict[str, Path]) -> None:
    with pytest.raises(ValueError):
        MediaConnector(allowed_local_media_path=str(tree["root"] / "img.png"))
    with pytest.raises(ValueError):
        MediaConnector(allowed_local_media_path=str(tree["root"] / "missing"))

"""T1-T6: tensor payloads that try to run code, lie about their size, or are not tensors.

Each refusal is a typed error with a clean message, takes bounded time and memory, and
the same MediaIO then decodes a good payload. Payloads are built here.
"""

from __future__ import annotations

import builtins
import io
import json
import os
import pickle
import re
import struct
import time
import tracemalloc
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from mediagate import DecodeError, ImageEmbeddingMediaIO, MediaError, MediaPolicy, TooLargeError

GOOD = torch.arange(6, dtype=torch.float32).reshape(2, 3)
DEADLINE = 1.0


def saved(obj: object, *, legacy: bool = False, protocol: int = 2) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer, pickle_protocol=protocol, _use_new_zipfile_serialization=not legacy)
    return buffer.getvalue()


def npy_header(descr: str, shape: tuple[int, ...], fortran: bool = False) -> bytes:
    """A version 1.0 ``.npy`` header, padded as numpy pads it."""
    text = repr({"descr": descr, "fortran_order": fortran, "shape": shape})
    text += " " * (-(10 + len(text) + 1) % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text.encode("latin-1")


def safetensors_bytes(header: dict[str, object], buffer: bytes, length: int | None = None) -> bytes:
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text) if length is None else length) + text + buffer


def refuse(
    io_: ImageEmbeddingMediaIO, payload: bytes, error: type[MediaError]
) -> tuple[MediaError, float, int]:
    """Load ``payload`` expecting ``error``; the error, seconds and traced peak bytes."""
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with pytest.raises(error) as info:
            io_.load_bytes(payload)
        elapsed = time.perf_counter() - start
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return info.value, elapsed, peak


@pytest.fixture
def io_() -> ImageEmbeddingMediaIO:
    return ImageEmbeddingMediaIO(policy=MediaPolicy(max_tensor_bytes=1 << 20))


@pytest.fixture
def still_works(io_: ImageEmbeddingMediaIO) -> Callable[[], None]:
    def check() -> None:
        assert torch.equal(io_.load_bytes(saved(GOOD)), GOOD)

    return check


# -- T1: nothing in a payload can run code ------------------------------------------------


class _OpenGadget:
    """Unpickling calls ``open(path, "w")``: the file appearing proves code ran."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self) -> tuple[object, ...]:
        return (builtins.open, (self.path, "w"))


class _SystemGadget:
    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self) -> tuple[object, ...]:
        return (os.system, (f"touch {self.path}",))


def test_the_gadget_really_runs_code_under_plain_pickle(tmp_path: Path) -> None:
    marker = tmp_path / "control"
    pickle.loads(pickle.dumps(_OpenGadget(marker))).close()
    assert marker.exists()


@pytest.mark.parametrize("gadget", [_OpenGadget, _SystemGadget])
@pytest.mark.parametrize(
    "wrap",
    [
        lambda g: saved(g),
        lambda g: saved(g, legacy=True),
        lambda g: saved({"tensor": GOOD, "extra": g}),
        lambda g: saved([GOOD, g], legacy=True),
        lambda g: pickle.dumps(g, protocol=2),
        lambda g: pickle.dumps(g, protocol=5),
        lambda g: saved(g, protocol=4),
    ],
    ids=[
        "zip",
        "legacy",
        "zip-in-dict",
        "legacy-in-list",
        "raw-pickle-2",
        "raw-pickle-5",
        "zip-pickle-4",
    ],
)
def test_a_reduce_gadget_never_runs(
    tmp_path: Path,
    io_: ImageEmbeddingMediaIO,
    still_works: Callable[[], None],
    clean_error: Callable[..., None],
    gadget: type[_OpenGadget],
    wrap: Callable[[object], bytes],
) -> None:
    marker = tmp_path / "pwned"
    payload = wrap(gadget(marker))

    err, elapsed, _ = refuse(io_, payload, DecodeError)

    assert not marker.exists()
    assert elapsed < DEADLINE
    clean_error(err, str(marker), "touch")
    still_works()


def test_an_npy_object_array_never_unpickles(
    tmp_path: Path, io_: ImageEmbeddingMediaIO, clean_error: Callable[..., None]
) -> None:
    marker = tmp_path / "pwned"
    buffer = io.BytesIO()
    np.save(buffer, np.array([_OpenGadget(marker)], dtype=object), allow_pickle=True)
    err, _, _ = refuse(io_, buffer.getvalue(), DecodeError)
    assert not marker.exists()
    clean_error(err)


# -- T2/T3: sparse tensors --------------------------------------------------------------


def test_sparse_indices_out_of_bounds_are_refused(
    io_: ImageEmbeddingMediaIO, still_works: Callable[[], None], clean_error: Callable[..., None]
) -> None:
    indices = torch.tensor([[0, 1_000_000], [0, 5]])
    bad = torch.sparse_coo_tensor(indices, torch.ones(2), (4, 6), check_invariants=False)
    err, elapsed, _ = refuse(io_, saved(bad), DecodeError)
    assert elapsed < DEADLINE
    clean_error(err)
    still_works()


def test_sparse_csr_with_broken_row_pointers_is_refused(
    io_: ImageEmbeddingMediaIO, clean_error: Callable[..., None]
) -> None:
    crow = torch.tensor([0, 5, 1])  # decreasing, and past the number of values
    col = torch.tensor([0, 1])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torch: "CSR support is in beta"
        bad = torch.sparse_csr_tensor(crow, col, torch.ones(2), (2, 3), check_invariants=False)
        err, _, _ = refuse(io_, saved(bad), DecodeError)
    clean_error(err)


def test_a_huge_sparse_tensor_is_refused_before_densifying(
    io_: ImageEmbeddingMediaIO, still_works: Callable[[], None], clean_error: Callable[..., None]
) -> None:
    side = 1 << 20
    huge = torch.sparse_coo_tensor(
        torch.tensor([[side - 1], [side - 1]]), torch.ones(1), (side, side)
    )
    err, elapsed, _ = refuse(io_, saved(huge), TooLargeError)
    assert isinstance(err, TooLargeError) and err.limit == "max_tensor_bytes"
    assert err.value == side * side * 4
    assert elapsed < DEADLINE
    clean_error(err)
    still_works()


def test_a_dense_view_stretched_over_one_element_is_refused(
    io_: ImageEmbeddingMediaIO, clean_error: Callable[..., None]
) -> None:
    stretched = torch.ones(1).expand(1 << 16, 1 << 16)  # stride 0: 16 GiB of view
    err, _, _ = refuse(io_, saved(stretched), TooLargeError)
    clean_error(err)


# -- T4: not one real-valued tensor -------------------------------------------------------


@pytest.mark.parametrize(
    "payload",
    [
        saved({"embedding": GOOD}),
        saved([GOOD, GOOD]),
        saved((GOOD,)),
        saved(3),
        saved("text"),
        saved(torch.zeros(3, dtype=torch.complex64)),
        pickle.dumps({"a": 1}, protocol=2),
    ],
    ids=["dict", "list", "tuple", "int", "str", "complex", "raw-dict"],
)
def test_anything_but_one_real_tensor_is_a_decode_error(
    io_: ImageEmbeddingMediaIO,
    still_works: Callable[[], None],
    clean_error: Callable[..., None],
    payload: bytes,
) -> None:
    err, _, _ = refuse(io_, payload, DecodeError)
    clean_error(err)
    still_works()


@pytest.mark.parametrize("descr", ["<c8", "|O", "<U4", "|V8", "<M8[s]", "<f16"])
def test_npy_dtypes_that_are_not_real_numbers_are_refused(
    io_: ImageEmbeddingMediaIO, clean_error: Callable[..., None], descr: str
) -> None:
    payload = npy_header(descr, (2,)) + b"\x00" * 64
    err, _, _ = refuse(io_, payload, DecodeError)
    clean_error(err)


def test_npy_structured_dtypes_are_refused(io_: ImageEmbeddingMediaIO) -> None:
    buffer = io.BytesIO()
    np.save(buffer, np.zeros(2, dtype=[("a", "<f4"), ("b", "<i4")]))
    refuse(io_, buffer.getvalue(), DecodeError)


# -- T5: .npy headers that claim more than was sent ------------------------------------


@pytest.mark.parametrize("shape", [(1 << 20, 1 << 20), (1 << 62, 4), (300_000,)])
def test_npy_claiming_more_than_the_budget_is_refused_before_allocating(
    io_: ImageEmbeddingMediaIO,
    still_works: Callable[[], None],
    clean_error: Callable[..., None],
    shape: tuple[int, ...],
) -> None:
    payload = npy_header("<f4", shape) + b"\x00" * 16
    err, elapsed, peak = refuse(io_, payload, TooLargeError)
    assert elapsed < DEADLINE and peak < 256 * 1024
    clean_error(err)
    still_works()


def test_npy_claiming_more_than_was_sent_is_refused_before_allocating(
    io_: ImageEmbeddingMediaIO, clean_error: Callable[..., None]
) -> None:
    payload = npy_header("<f4", (200_000,)) + b"\x00" * 16  # 800 KB declared, 16 sent
    err, _, peak = refuse(io_, payload, DecodeError)
    assert "declares 800000 bytes" in str(err)
    assert peak < 256 * 1024
    clean_error(err)


@pytest.mark.parametrize(
    "payload",
    [
        b"\x93NUMPY\x01\x00\xff\xff" + b"{" * 20,  # header longer than the payload
        b"\x93NUMPY\x01\x00\x10\x00{'descr': 1}    \n",
        b"\x93NUMPY\x09\x00\x10\x00" + b" " * 16,  # unknown version
        npy_header("<f4", (-1,)) + b"\x00" * 4,
    ],
)
def test_malformed_npy_headers_are_decode_errors(
    io_: ImageEmbeddingMediaIO, payload: bytes
) -> None:
    refuse(io_, payload, DecodeError)


# -- T6: safetensors headers and offsets ------------------------------------------------


def _entry(shape: list[int], begin: int, end: int, dtype: str = "F32") -> dict[str, object]:
    return {"dtype": dtype, "shape": shape, "data_offsets": [begin, end]}


@pytest.mark.parametrize(
    "payload,error",
    [
        (struct.pack("<Q", 1 << 40) + b"{}", TooLargeError),
        (struct.pack("<Q", (1 << 20) + 1) + b"{" + b" " * 100, TooLargeError),
        (struct.pack("<Q", 500) + b'{"a": 1}', DecodeError),
        (
            safetensors_bytes({"a": _entry([2], 0, 8), "b": _entry([2], 4, 12)}, b"\0" * 12),
            DecodeError,
        ),
        (safetensors_bytes({"a": _entry([4], 0, 16)}, b"\0" * 8), DecodeError),
        (safetensors_bytes({"a": _entry([2], 0, 8)}, b"\0" * 16), DecodeError),
        (safetensors_bytes({"a": _entry([2], 8, 16)}, b"\0" * 16), DecodeError),
        (safetensors_bytes({"a": _entry([3], 0, 8)}, b"\0" * 8), DecodeError),
        (safetensors_bytes({"a": _entry([2], 8, 0)}, b"\0" * 8), DecodeError),
        (safetensors_bytes({"a": _entry([1 << 20, 1 << 20], 0, 8)}, b"\0" * 8), TooLargeError),
        (safetensors_bytes({"a": _entry([2], 0, 16, "C64")}, b"\0" * 16), DecodeError),
        (safetensors_bytes({"a": _entry([2], 0, 8, "OBJECT")}, b"\0" * 8), DecodeError),
        (safetensors_bytes({"a": {"dtype": "F32", "shape": [2]}}, b"\0" * 8), DecodeError),
        (safetensors_bytes({"a": _entry([2.5], 0, 8)}, b"\0" * 8), DecodeError),  # type: ignore[list-item]
        (
            safetensors_bytes({"__metadata__": {"k": 1}, "a": _entry([2], 0, 8)}, b"\0" * 8),
            DecodeError,
        ),
        (struct.pack("<Q", 2002) + b"[" * 1000 + b"]" * 1000 + b"\0\0", DecodeError),
        (struct.pack("<Q", 34) + b'{"a": {"x": 1}, "a": {"x": 2}}    ', DecodeError),
        (struct.pack("<Q", 8) + b"{not js}", DecodeError),
    ],
    ids=[
        "header-2^40",
        "header-over-1MiB",
        "header-past-end",
        "overlap",
        "offsets-past-end",
        "trailing-bytes",
        "gap-at-start",
        "shape-mismatch",
        "reversed-offsets",
        "huge-shape",
        "complex",
        "unknown-dtype",
        "missing-offsets",
        "float-shape",
        "bad-metadata",
        "deep-nesting",
        "duplicate-keys",
        "not-json",
    ],
)
def test_bad_safetensors_are_refused_before_allocating(
    io_: ImageEmbeddingMediaIO,
    still_works: Callable[[], None],
    clean_error: Callable[..., None],
    payload: bytes,
    error: type[MediaError],
) -> None:
    err, elapsed, peak = refuse(io_, payload, error)
    assert elapsed < DEADLINE and peak < 256 * 1024
    clean_error(err)
    still_works()


# -- torch.save archives that would inflate ------------------------------------------------


def test_a_compressed_entry_in_a_torch_archive_is_refused(
    io_: ImageEmbeddingMediaIO, clean_error: Callable[..., None]
) -> None:
    original = zipfile.ZipFile(io.BytesIO(saved(GOOD)))
    bomb = io.BytesIO()
    with zipfile.ZipFile(bomb, "w") as out:
        for info in original.infolist():
            out.writestr(info.filename, original.read(info), zipfile.ZIP_DEFLATED)
        out.writestr("archive/data/bomb", b"\0" * (1 << 22), zipfile.ZIP_DEFLATED)
    err, _, _ = refuse(io_, bomb.getvalue(), DecodeError)
    clean_error(err)


def test_a_truncated_torch_archive_is_refused(io_: ImageEmbeddingMediaIO) -> None:
    data = saved(GOOD)
    refuse(io_, data[: len(data) // 2], DecodeError)


# -- torch.save storages that declare more than was sent ------------------------------------


def _declaring(payload: bytes, numel_from: int, numel_to: int) -> bytes:
    """``payload`` with the element count of its storage reference replaced."""
    # The reference is ("storage", <class>, key, "cpu", numel, ...): BININT1 after "cpu".
    old = re.compile(rb"(cpuq.)K" + re.escape(bytes([numel_from])), re.DOTALL)
    assert len(old.findall(payload)) == 1
    if numel_to < 2**31:
        new = b"J" + struct.pack("<i", numel_to)  # BININT
    else:
        new = b"\x8a\x08" + numel_to.to_bytes(8, "little")  # LONG1
    return old.sub(lambda m: m.group(1) + new, payload)


@pytest.mark.parametrize("numel", [10**6, 10**9, 2**40])
def test_a_legacy_storage_declaring_more_than_was_sent_is_refused_before_loading(
    io_: ImageEmbeddingMediaIO,
    still_works: Callable[[], None],
    clean_error: Callable[..., None],
    monkeypatch: pytest.MonkeyPatch,
    numel: int,
) -> None:
    from mediagate._media.embedding import torch_save

    # torch would allocate every declared storage before reading a byte of it.
    payload = _declaring(saved(GOOD, legacy=True), 6, numel)

    def never(data: bytes) -> object:
        raise AssertionError("torch.load was reached")

    with monkeypatch.context() as patched:
        patched.setattr(torch_save, "_load", never)
        err, elapsed, _ = refuse(io_, payload, DecodeError)
    assert "declares more tensor data than it holds" in str(err)
    assert elapsed < DEADLINE
    clean_error(err, payload[-24:])
    still_works()


def test_a_legacy_storage_one_element_off_is_refused(
    io_: ImageEmbeddingMediaIO, clean_error: Callable[..., None]
) -> None:
    # Within the payload's size, so torch reads it and finds the sizes disagree.
    err, _, _ = refuse(io_, _declaring(saved(GOOD, legacy=True), 6, 7), DecodeError)
    clean_error(err)


def test_a_legacy_storage_of_an_unknown_class_is_refused(
    io_: ImageEmbeddingMediaIO, clean_error: Callable[..., None]
) -> None:
    payload = saved(GOOD, legacy=True).replace(b"torch\nFloatStorage", b"torch\nEvilsStorage")
    err, _, _ = refuse(io_, payload, DecodeError)
    clean_error(err)


@pytest.mark.parametrize(
    "tensor",
    [
        torch.arange(10.0)[2:5],  # a view: the whole storage is saved
        torch.arange(6, dtype=torch.float16).reshape(2, 3),
        torch.ones(3, 4, dtype=torch.bool),
        torch.arange(4, dtype=torch.int64).reshape(4, 1).t(),
    ],
    ids=["view", "float16", "bool", "transposed"],
)
def test_legacy_payloads_with_honest_storages_load(
    io_: ImageEmbeddingMediaIO, tensor: torch.Tensor
) -> None:
    assert torch.equal(io_.load_bytes(saved(tensor, legacy=True)), tensor)

"""B7 and B2 for tensors: only dense CPU data comes back, and no declared shape escapes.

Meta, nested, quantised, subclassed and opaque-layout tensors are refused before
anything is densified; sparse layouts are densified within the budget; zero-element
shapes with huge dimensions, too many dimensions and truncated pickles are typed
errors before any allocation. Every payload is built here.
"""

from __future__ import annotations

import io
import json
import struct
import time
import tracemalloc
import zipfile
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch

import mediagate._media.embedding.torch_save as torch_save
from mediagate import DecodeError, ImageEmbeddingMediaIO, MediaError, MediaPolicy, TooLargeError
from mediagate._media.budget import DecodeLimits, decoding
from mediagate._media.embedding.npy import load_npy
from mediagate._media.embedding.safetensors_file import load_safetensors

GOOD = torch.arange(6, dtype=torch.float32).reshape(2, 3)
LIMIT = 1 << 20
MKLDNN = bool(torch.backends.mkldnn.is_available())  # type: ignore[no-untyped-call]


def saved(obj: object) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def npy(shape: tuple[int, ...], body: bytes = b"", descr: str = "<f4") -> bytes:
    text = repr({"descr": descr, "fortran_order": False, "shape": shape})
    text += " " * (-(10 + len(text) + 1) % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text.encode("latin-1") + body


def safetensors(shape: list[int], dtype: str = "F32", body: bytes = b"") -> bytes:
    header = {"t": {"dtype": dtype, "shape": shape, "data_offsets": [0, len(body)]}}
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + body


def with_pickle(payload: bytes, edit: Callable[[bytes], bytes]) -> bytes:
    """``payload`` (a torch.save archive) with its data.pkl replaced by ``edit(data.pkl)``."""
    source = zipfile.ZipFile(io.BytesIO(payload))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as archive:
        for info in source.infolist():
            data = source.read(info.filename)
            if info.filename.endswith("/data.pkl"):
                data = edit(data)
            archive.writestr(info.filename, data)
    return out.getvalue()


@pytest.fixture
def io_() -> ImageEmbeddingMediaIO:
    return ImageEmbeddingMediaIO(policy=MediaPolicy(max_tensor_bytes=LIMIT))


@pytest.fixture
def no_densify(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[torch.layout]]:
    """Records every ``to_dense`` call (by layout) made while loading."""
    calls: list[torch.layout] = []
    real = torch.Tensor.to_dense

    def to_dense(self: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        calls.append(self.layout)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "to_dense", to_dense)
    yield calls


def refuse(
    io_: ImageEmbeddingMediaIO,
    payload: bytes,
    error: type[MediaError],
    clean_error: Callable[..., None],
) -> MediaError:
    """``payload`` fails with exactly ``error``, fast, in little memory, with a clean text."""
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with pytest.raises(MediaError) as info:
            io_.load_bytes(payload)
        elapsed = time.perf_counter() - start
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert type(info.value) is error, f"{type(info.value).__name__}: {info.value}"
    assert elapsed < 1.0
    assert peak < 8 * len(payload) + (4 << 20)
    clean_error(info.value)
    assert torch.equal(io_.load_bytes(saved(GOOD)), GOOD)
    return info.value


# ---------------------------------------------------------------------------
# B7: not dense CPU data


class Tagged(torch.Tensor):
    pass


def _nested_strided() -> torch.Tensor:
    return torch.nested.nested_tensor([torch.ones(2), torch.ones(3)])


def _nested_jagged() -> torch.Tensor:
    return torch.nested.nested_tensor([torch.ones(2), torch.ones(3)], layout=torch.jagged)


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize(
    "make",
    [
        lambda: torch.empty(4, device="meta"),
        lambda: torch.empty(1 << 30, device="meta"),
        _nested_strided,
        _nested_jagged,
        lambda: torch.quantize_per_tensor(torch.ones(4), 0.1, 0, torch.quint8),
        lambda: torch.quantize_per_channel(
            torch.ones(2, 2), torch.tensor([0.1, 0.2]), torch.tensor([0, 0]), 0, torch.qint8
        ),
        lambda: torch.ones(3).as_subclass(Tagged),
    ],
    ids=["meta", "meta-huge", "nested", "nested-jagged", "quantized", "quantized-channel", "sub"],
)
def test_tensors_that_are_not_dense_cpu_data_are_refused(
    make: Callable[[], torch.Tensor],
    io_: ImageEmbeddingMediaIO,
    no_densify: list[torch.layout],
    clean_error: Callable[..., None],
) -> None:
    refuse(io_, saved(make()), DecodeError, clean_error)
    assert no_densify == []


def test_meta_and_nested_are_refused_by_the_layout_check_itself() -> None:
    with pytest.raises(DecodeError, match="meta"):
        torch_save._check_dense_cpu(torch.empty(2, 2, device="meta"))
    with pytest.raises(DecodeError, match="nested"):
        torch_save._check_dense_cpu(_nested_strided())


@pytest.mark.skipif(not MKLDNN, reason="no MKL-DNN here")
def test_an_opaque_layout_is_refused() -> None:
    opaque = torch.ones(2, 2).to_mkldnn()
    with pytest.raises(DecodeError, match="layout"):
        torch_save._check_dense_cpu(opaque)


def test_a_parameter_comes_back_as_its_plain_data(io_: ImageEmbeddingMediaIO) -> None:
    out = io_.load_bytes(saved(torch.nn.Parameter(GOOD.clone())))
    assert type(out) is torch.Tensor
    assert not out.requires_grad
    assert torch.equal(out, GOOD)


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize(
    "sparse",
    [
        lambda t: t.to_sparse(),
        lambda t: t.to_sparse_csr(),
        lambda t: t.to_sparse_csc(),
        lambda t: t.to_sparse_bsr((1, 1)),
        lambda t: t.to_sparse_bsc((1, 1)),
    ],
    ids=["coo", "csr", "csc", "bsr", "bsc"],
)
def test_every_sparse_layout_is_densified(
    sparse: Callable[[torch.Tensor], torch.Tensor],
    io_: ImageEmbeddingMediaIO,
    no_densify: list[torch.layout],
) -> None:
    source = sparse(GOOD)
    out = io_.load_bytes(saved(source))
    assert out.layout == torch.strided and out.device.type == "cpu"
    assert torch.equal(out, GOOD)
    assert no_densify == [source.layout]


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize(
    "make",
    [
        lambda: torch.sparse_coo_tensor(
            torch.tensor([[0], [0]]), torch.ones(1), (1 << 20, 1 << 20)
        ),
        lambda: torch.sparse_csr_tensor(
            torch.zeros(1 << 16, dtype=torch.int64),
            torch.zeros(0, dtype=torch.int64),
            torch.zeros(0),
            ((1 << 16) - 1, 1 << 20),
        ),
    ],
    ids=["coo", "csr"],
)
def test_a_huge_sparse_tensor_is_refused_before_densifying(
    make: Callable[[], torch.Tensor],
    io_: ImageEmbeddingMediaIO,
    no_densify: list[torch.layout],
    clean_error: Callable[..., None],
) -> None:
    err = refuse(io_, saved(make()), TooLargeError, clean_error)
    assert isinstance(err, TooLargeError) and err.limit == "max_tensor_bytes"
    assert no_densify == []


# ---------------------------------------------------------------------------
# B2: shapes that hold nothing but would overflow, too many dimensions


@pytest.mark.parametrize("shape", [(0, 1 << 62, 1 << 62), (0, 1 << 64), (1 << 63, 0), (0, 1 << 40)])
def test_npy_holding_no_element_with_huge_dims_is_too_large(
    shape: tuple[int, ...], io_: ImageEmbeddingMediaIO, clean_error: Callable[..., None]
) -> None:
    err = refuse(io_, npy(shape), TooLargeError, clean_error)
    assert isinstance(err, TooLargeError) and err.limit == "max_tensor_bytes"


def test_npy_with_more_than_64_dims_is_refused(
    io_: ImageEmbeddingMediaIO, clean_error: Callable[..., None]
) -> None:
    refuse(io_, npy((1,) * 65, b"\0" * 4), DecodeError, clean_error)
    with pytest.raises(DecodeError, match="65 dimensions"):
        load_npy(npy((1,) * 65, b"\0" * 4), LIMIT)  # typed by the parser, not the boundary
    refuse(io_, npy((0,) * 200), DecodeError, clean_error)
    assert io_.load_bytes(npy((1,) * 64, b"\0" * 4)).shape == (1,) * 64


def test_small_empty_npy_and_safetensors_still_load(io_: ImageEmbeddingMediaIO) -> None:
    assert io_.load_bytes(npy((0, 3))).shape == (0, 3)
    assert io_.load_bytes(safetensors([0, 3])).shape == (0, 3)
    assert io_.load_bytes(saved(torch.empty(0, 3))).shape == (0, 3)


@pytest.mark.parametrize("shape", [[0, 1 << 63], [0, 1 << 62, 1 << 62], [1 << 40, 0], [0, 1 << 64]])
def test_safetensors_holding_no_element_with_huge_dims_is_too_large(
    shape: list[int], io_: ImageEmbeddingMediaIO, clean_error: Callable[..., None]
) -> None:
    err = refuse(io_, safetensors(shape), TooLargeError, clean_error)
    assert isinstance(err, TooLargeError) and err.limit == "max_tensor_bytes"


def test_safetensors_with_more_than_64_dims_is_refused(
    io_: ImageEmbeddingMediaIO, clean_error: Callable[..., None]
) -> None:
    refuse(io_, safetensors([1] * 65, body=b"\0" * 4), DecodeError, clean_error)
    with pytest.raises(DecodeError, match="shape"):
        load_safetensors(safetensors([1] * 65, body=b"\0" * 4), LIMIT)


def test_torch_save_holding_no_element_with_huge_dims_is_too_large(
    io_: ImageEmbeddingMediaIO, clean_error: Callable[..., None]
) -> None:
    err = refuse(io_, saved(torch.empty(0, 1 << 40)), TooLargeError, clean_error)
    assert isinstance(err, TooLargeError) and err.limit == "max_tensor_bytes"


def test_the_decoded_output_budget_applies_to_tensors(io_: ImageEmbeddingMediaIO) -> None:
    payload = saved(torch.zeros(256))  # 1 KiB of float32
    with decoding(DecodeLimits.starting_now("image_embedding", 512, 10)):
        with pytest.raises(TooLargeError) as info:
            io_.load_bytes(payload)
    assert info.value.limit == "max_decoded_bytes"
    assert io_.load_bytes(payload).shape == (256,)


# ---------------------------------------------------------------------------
# Truncated and padded pickles inside a torch.save archive


@pytest.fixture
def loads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the payloads handed to ``torch.load``."""
    seen: list[int] = []
    real = torch_save._load

    def load(data: bytes) -> object:
        seen.append(len(data))
        return real(data)

    monkeypatch.setattr(torch_save, "_load", load)
    return seen


def _pickle_length() -> int:
    return len(zipfile.ZipFile(io.BytesIO(saved(GOOD))).read("archive/data.pkl"))


@pytest.mark.parametrize("cut", [3, 10, 40, 97, -2, -1])
def test_a_data_pkl_truncated_mid_opcode_is_refused_before_loading(
    cut: int,
    io_: ImageEmbeddingMediaIO,
    loads: list[int],
    clean_error: Callable[..., None],
) -> None:
    assert _pickle_length() > 100
    payload = with_pickle(saved(GOOD), lambda pkl: pkl[:cut])
    refuse(io_, payload, DecodeError, clean_error)
    assert loads == [len(saved(GOOD))]  # only the good payload after the refusal


def test_bytes_after_the_pickle_are_refused(
    io_: ImageEmbeddingMediaIO, loads: list[int], clean_error: Callable[..., None]
) -> None:
    payload = with_pickle(saved(GOOD), lambda pkl: pkl + b"K\x01.")
    refuse(io_, payload, DecodeError, clean_error)
    assert loads == [len(saved(GOOD))]

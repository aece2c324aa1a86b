"""The batch loading core: a column of references in, ordered rows with outcomes out.

Every bad row ends as its own typed outcome (and a refused address is never dialled),
the order of the references is kept, the decoded-bytes budget holds, and the Arrow
output survives a Parquet round trip with its shapes.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from builders import (
    LoopbackServer,
    Route,
    encode_clip,
    gradient,
    image_bytes,
    jpeg_bytes,
    png_bytes,
    soundfile_bytes,
    tone,
)
from mediagate import MediaPolicy, OptionError
from mediagate._batch import BatchLoader, BatchOptions, BatchResult, Outcomes
from mediagate._batch.arrow import metadata_from_arrow, tensor_from_arrow

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

WAV = soundfile_bytes(tone(0.5, 16000), 16000)
CLIP = encode_clip(frames=12)
BIG = b"\xff\xd8" + b"\x00" * 300_000


@pytest.fixture(scope="module")
def media_server() -> Iterator[LoopbackServer]:
    routes = {
        "/cat.jpg": Route(jpeg_bytes(64, 48)),
        "/wide.png": Route(image_bytes(gradient(80, 20), "PNG")),
        "/tone.wav": Route(WAV),
        "/clip.mp4": Route(CLIP),
        "/garbage.png": Route(b"this is not an image at all" * 4),
        "/big.jpg": Route(BIG),
        "/slow.jpg": Route(jpeg_bytes(), delay=3.0),
        "/private.png": Route(png_bytes()),
    }
    with LoopbackServer(routes) as server:
        yield server


@pytest.fixture
def policy() -> MediaPolicy:
    return MediaPolicy(allowed_networks=["127.0.0.1/32"], timeout=0.75, max_bytes=200_000)


def _loader(policy: MediaPolicy, **options: object) -> BatchLoader:
    return BatchLoader(policy, BatchOptions(**options))  # type: ignore[arg-type]


def _mixed(server: LoopbackServer) -> tuple[list[str | bytes | None], list[str]]:
    """References and the outcome each must end with."""
    cases: list[tuple[str | bytes | None, str]] = [
        (server.url("/cat.jpg"), "ok"),
        (server.url("/tone.wav"), "ok"),
        (server.url("/missing.png"), "FetchError"),
        (server.url("/clip.mp4"), "ok"),
        (server.url("/garbage.png"), "DecodeError"),
        # 0.0.0.0 would reach the loopback server if it were dialled.
        (f"http://0.0.0.0:{server.port}/private.png", "PolicyError"),
        ("http://10.0.0.1/private.png", "PolicyError"),
        (server.url("/big.jpg"), "TooLargeError"),
        (server.url("/slow.jpg"), "FetchTimeout"),
        (None, "PolicyError"),
        (jpeg_bytes(16, 8), "ok"),
        ("ftp://example.com/a.png", "PolicyError"),
        (server.url("/wide.png"), "ok"),
    ]
    return [ref for ref, _ in cases], [outcome for _, outcome in cases]


def test_mixed_rows_each_end_with_their_own_outcome_in_order(
    media_server: LoopbackServer, policy: MediaPolicy
) -> None:
    refs, expected = _mixed(media_server)
    with _loader(policy) as loader:
        result = loader.load(refs)
    assert [row.index for row in result.rows] == list(range(len(refs)))
    assert [row.outcome for row in result.rows] == expected
    rows = result.rows
    assert rows[0].modality == "image" and rows[0].media.shape == (48, 64, 3)
    samples, rate = rows[1].media
    assert rows[1].modality == "audio" and rate == 16000 and samples.dtype == np.float32
    assert samples.shape == (8000,)
    frames, metadata = rows[3].media
    assert rows[3].modality == "video" and frames.ndim == 4 and frames.shape[-1] == 3
    assert metadata["total_num_frames"] == 12
    assert rows[10].media.shape == (8, 16, 3)
    assert rows[12].media.shape == (20, 80, 3)
    assert rows[2].http_status == 404 and rows[2].media is None
    assert all(row.http_status is None for row in rows if row.index != 2)
    assert rows[7].num_bytes == 0 and "max_bytes" in (rows[7].error or "")
    assert 0.5 < rows[8].fetch_s < 3.0  # the 0.75 s deadline, with room for a loaded machine
    assert result.outcomes.as_dict() == {
        "ok": 5,
        "PolicyError": 4,
        "DecodeError": 1,
        "FetchError": 1,
        "FetchTimeout": 1,
        "TooLargeError": 1,
    }
    # The refused address was never dialled; the refused big answer was not read past.
    assert media_server.count("/private.png") == 0
    for row in rows:
        assert "0x" not in (row.error or "") and "10.0.0.1" not in (row.error or "")


def test_failed_rows_can_be_dropped_and_are_still_counted(
    media_server: LoopbackServer, policy: MediaPolicy
) -> None:
    refs, expected = _mixed(media_server)
    with _loader(policy, keep_failed=False) as loader:
        result = loader.load(refs)
    kept = [i for i, outcome in enumerate(expected) if outcome == "ok"]
    assert [row.index for row in result.rows] == kept
    assert all(row.ok for row in result.rows)
    assert result.outcomes.total == len(refs) and result.outcomes.failed == len(refs) - 5
    assert result.to_arrow().num_rows == len(kept)


def test_a_declared_modality_decodes_every_row_as_it(
    media_server: LoopbackServer, policy: MediaPolicy
) -> None:
    refs = [media_server.url("/tone.wav"), media_server.url("/cat.jpg")]
    with _loader(policy, modality="audio") as loader:
        result = loader.load(refs)
    assert [row.outcome for row in result.rows] == ["ok", "DecodeError"]
    assert result.present() == ("audio",)


def test_the_connector_options_apply_to_every_row(
    media_server: LoopbackServer, policy: MediaPolicy
) -> None:
    options = {"video": {"num_frames": 4}, "image": {"image_mode": "L"}}
    with _loader(policy, media_io_kwargs=options) as loader:
        result = loader.load([media_server.url("/clip.mp4"), media_server.url("/cat.jpg")])
    frames, metadata = result.rows[0].media
    assert frames.shape[0] == 4 and len(metadata["frames_indices"]) == 4
    assert result.rows[1].media.shape == (48, 64, 1)


def test_a_bad_option_is_refused_when_the_loader_is_made(policy: MediaPolicy) -> None:
    with pytest.raises(OptionError) as info:
        BatchOptions(max_in_flight=0)
    assert info.value.option == "max_in_flight"
    with pytest.raises(OptionError) as info:
        BatchOptions(image_size=(0, 10))
    assert info.value.option == "image_size"
    with pytest.raises(OptionError):
        BatchOptions(modality="smell")
    with pytest.raises(OptionError):
        BatchLoader(policy, BatchOptions(media_io_kwargs={"video": {"no_such_option": 1}}))
    assert BatchOptions(modality="image_embeds").modality == "image_embedding"


def test_image_size_letterboxes_every_image_to_one_shape(
    media_server: LoopbackServer, policy: MediaPolicy
) -> None:
    refs = [media_server.url("/cat.jpg"), media_server.url("/wide.png")]
    with _loader(policy, image_size=(32, 32)) as loader:
        result = loader.load(refs)
    cat, wide = (row.media for row in result.rows)
    assert cat.shape == wide.shape == (32, 32, 3)
    # 80x20 fits as 32x8, centred: black bands above and below.
    assert not wide[:12].any() and not wide[-12:].any() and wide[12:20].any()
    table = result.to_arrow()
    assert table.schema.field("image").type.extension_name == "arrow.fixed_shape_tensor"


def test_bytes_data_urls_and_base64_tensors_are_rows_too(policy: MediaPolicy) -> None:
    torch = pytest.importorskip("torch")
    png = png_bytes()
    data_url = "data:image/png;base64," + base64.b64encode(png).decode()
    with _loader(policy) as loader:
        result = loader.load([png, data_url])
    assert [row.outcome for row in result.rows] == ["ok", "ok"]
    buffer = io.BytesIO()
    torch.save(torch.arange(12, dtype=torch.int16).reshape(3, 4), buffer)
    payload = base64.b64encode(buffer.getvalue()).decode()
    with _loader(policy, modality="image_embeds") as loader:
        result = loader.load([payload, "bm90IGEgdGVuc29y"])
    assert [row.outcome for row in result.rows] == ["ok", "DecodeError"]
    tensor = result.rows[0].media
    assert tensor.dtype == np.int16 and tensor.shape == (3, 4)
    table = result.to_arrow()
    back = tensor_from_arrow(table.column("tensor")[0])
    assert back is not None and back.dtype == np.int16
    np.testing.assert_array_equal(back, tensor)


def test_a_row_larger_than_the_whole_budget_is_that_rows_too_large_error(
    policy: MediaPolicy,
) -> None:
    small = image_bytes(gradient(40, 40), "PNG")  # 4800 decoded bytes
    large = image_bytes(gradient(100, 100), "PNG")  # 30000
    with _loader(policy, max_decoded_bytes=20_000) as loader:
        result = loader.load([small, large, small])
    assert [row.outcome for row in result.rows] == ["ok", "TooLargeError", "ok"]
    assert "max_decoded_bytes" in (result.rows[1].error or "")


def test_the_decoded_budget_bounds_what_is_held_before_it_is_handed_back(
    policy: MediaPolicy,
) -> None:
    images = [image_bytes(gradient(200, 100 + i), "PNG") for i in range(24)]
    one = 200 * 110 * 3
    budget = 4 * one
    with _loader(policy, modality="image", max_decoded_bytes=budget, max_in_flight=8) as loader:
        chunks = list(loader.iter_load(images))
        assert loader.peak_decoded_bytes <= budget
        assert len(chunks) > 1
        assert all(chunk.decoded_bytes <= budget for chunk in chunks)
        rows = [row for chunk in chunks for row in chunk.rows]
        assert [row.index for row in rows] == list(range(24))
        assert all(row.ok for row in rows)
        assert Outcomes.of(row.outcome for row in rows).as_dict() == {"ok": 24}

        # Measured: pulling chunk after chunk holds about the budget, not the batch.
        tracemalloc.start()
        try:
            for chunk in loader.iter_load(images):
                del chunk
            _, streamed = tracemalloc.get_traced_memory()
            tracemalloc.reset_peak()
            whole = loader.load(images)
            _, loaded = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert whole.decoded_bytes > 5 * budget
        assert streamed < 2 * budget < loaded


def test_fetches_in_flight_never_exceed_max_in_flight(policy: MediaPolicy) -> None:
    routes = {f"/{i}.jpg": Route(jpeg_bytes(), delay=0.05) for i in range(24)}
    with LoopbackServer(routes) as server:
        with _loader(policy, max_in_flight=3) as loader:
            result = loader.load([server.url(f"/{i}.jpg") for i in range(24)])
        assert result.outcomes.as_dict() == {"ok": 24}
        assert server.gauge.peak <= 3


def test_a_cache_folder_serves_the_second_batch(
    tmp_path: Path, media_server: LoopbackServer, policy: MediaPolicy
) -> None:
    url = media_server.url("/wide.png")
    before = media_server.count("/wide.png")
    with BatchLoader(policy, BatchOptions(), cache=str(tmp_path / "cache")) as loader:
        first = loader.load([url])
        second = loader.load([url])
    assert not first.rows[0].cached and second.rows[0].cached
    assert media_server.count("/wide.png") == before + 1
    np.testing.assert_array_equal(first.rows[0].media, second.rows[0].media)


def test_the_async_twin_runs_inside_a_loop_and_the_blocking_one_says_so(
    media_server: LoopbackServer, policy: MediaPolicy
) -> None:
    async def main() -> BatchResult:
        with _loader(policy) as loader:
            with pytest.raises(RuntimeError, match="load_async"):
                loader.load([media_server.url("/cat.jpg")])
            return await loader.load_async([media_server.url("/cat.jpg"), None])

    result = asyncio.run(main())
    assert [row.outcome for row in result.rows] == ["ok", "PolicyError"]


def test_a_closed_loader_refuses_to_load(policy: MediaPolicy) -> None:
    loader = _loader(policy)
    loader.close()
    with pytest.raises(RuntimeError, match="closed"):
        loader.load([None])


def test_arrow_output_round_trips_through_parquet_with_its_shapes(
    tmp_path: Path, media_server: LoopbackServer, policy: MediaPolicy
) -> None:
    refs, expected = _mixed(media_server)
    with _loader(policy) as loader:
        result = loader.load(refs)
    path = tmp_path / "rows.parquet"
    pq.write_table(result.to_arrow(), path)
    table = pq.read_table(path)
    assert table.num_rows == len(refs)
    for name in ("image", "video_frames"):
        assert table.schema.field(name).type.extension_name == "arrow.variable_shape_tensor"
    columns = table.to_pydict()
    assert columns["error_type"] == [None if e == "ok" else e for e in expected]
    assert columns["http_status"][2] == 404
    for row in result.rows:
        i = row.index
        if row.modality == "image" and row.ok:
            back = tensor_from_arrow(table.column("image")[i])
            assert back is not None
            np.testing.assert_array_equal(back, row.media)
        elif row.modality == "video" and row.ok:
            back = tensor_from_arrow(table.column("video_frames")[i])
            assert back is not None and back.shape == row.media[0].shape
            meta = metadata_from_arrow(table.column("video_metadata")[i])
            assert meta == json.loads(json.dumps(row.media[1], default=str))
        elif row.modality == "audio" and row.ok:
            np.testing.assert_array_equal(np.asarray(columns["audio"][i]), row.media[0])
            assert columns["sample_rate"][i] == 16000
        else:
            assert tensor_from_arrow(table.column("image")[i]) is None
            assert columns["audio"][i] is None


def test_outcomes_merge_and_print_as_a_table() -> None:
    a = Outcomes.of(["ok", "ok", "FetchError"])
    b = Outcomes.from_dict({"ok": 1, "DecodeError": 2})
    merged = a.merge(b)
    assert merged.as_dict() == {"ok": 3, "DecodeError": 2, "FetchError": 1}
    assert a.as_dict() == {"ok": 2, "FetchError": 1}
    assert (a + b).total == 6 and merged.failed == 3
    text = merged.table()
    assert text.splitlines()[0].split() == ["outcome", "rows", "share"]
    assert "DecodeError" in text and "50.0%" in text and text.splitlines()[-1].startswith("total")


def test_a_header_estimate_that_falls_short_costs_a_retry_not_the_row(
    monkeypatch: pytest.MonkeyPatch, policy: MediaPolicy
) -> None:
    monkeypatch.setattr(BatchLoader, "_estimate", lambda self, modality, fetched, cap: 1)
    images = [image_bytes(gradient(60, 40), "PNG") for _ in range(6)]
    budget = 60 * 40 * 3 * 8
    with _loader(policy, modality="image", max_decoded_bytes=budget) as loader:
        result = loader.load(images)
        assert loader.peak_decoded_bytes <= budget
    assert result.outcomes.as_dict() == {"ok": 6}
    assert all(row.media.shape == (40, 60, 3) for row in result.rows)


def test_small_images_decode_side_by_side_under_a_large_budget(policy: MediaPolicy) -> None:
    # Reservations come from each image's header, not the modality's worst case.
    images = [jpeg_bytes(64, 48) for _ in range(32)]
    with _loader(policy, modality="image", max_in_flight=8) as loader:
        result = loader.load(images)
        assert loader.peak_decoded_bytes < 16 << 20
    assert result.outcomes.as_dict() == {"ok": 32}


def test_an_empty_batch_and_an_abandoned_iteration_leave_the_loader_usable(
    policy: MediaPolicy,
) -> None:
    images = [png_bytes()] * 40
    with _loader(policy, modality="image", max_decoded_bytes=20_000) as loader:
        empty = loader.load([])
        assert len(empty) == 0 and empty.outcomes.total == 0
        assert empty.to_arrow().column_names[0] == "error_type"
        for chunk in loader.iter_load(images):
            assert 0 < len(chunk) < 40
            break
        assert loader.load(images[:5]).outcomes.as_dict() == {"ok": 5}


def test_a_consumer_that_pauses_between_chunks_gets_every_row_in_order(
    policy: MediaPolicy,
) -> None:
    # While the consumer waits, every started row finishes; the stream must go on
    # with the next ones rather than fail.
    images = [image_bytes(gradient(32, 16), "PNG") for _ in range(300)]
    # Room for more than the window of rows started ahead (64): a chunk is
    # handed back when the budget runs out, and the rows started meanwhile all finish
    # while the consumer waits.
    budget = 100 * 32 * 16 * 4

    async def consume(loader: BatchLoader) -> list[int]:
        seen: list[int] = []
        async for chunk in loader.iter_load_async(images):
            seen.extend(row.index for row in chunk.rows if row.ok)
            await asyncio.sleep(0.05)
        return seen

    with _loader(policy, modality="image", max_decoded_bytes=budget, max_in_flight=4) as loader:
        assert asyncio.run(consume(loader)) == list(range(300))


def test_an_interrupt_inside_a_chunk_reaches_the_caller_as_itself(
    policy: MediaPolicy, monkeypatch: pytest.MonkeyPatch
) -> None:
    images = [image_bytes(gradient(32, 16), "PNG") for _ in range(8)]
    with _loader(policy, modality="image") as loader:
        calls = 0
        decode = BatchLoader._decode

        def interrupted(self: BatchLoader, *args: object) -> object:
            nonlocal calls
            calls += 1
            if calls == 3:
                raise KeyboardInterrupt
            return decode(self, *args)  # type: ignore[arg-type]

        monkeypatch.setattr(BatchLoader, "_decode", interrupted)
        with pytest.raises(KeyboardInterrupt):
            loader.load(images)
        monkeypatch.undo()
        # The loader is still usable afterwards.
        assert [row.outcome for row in loader.load(images[:2]).rows] == ["ok", "ok"]

"""mediagate.ray on a local cluster: thousands of mixed rows, an actor that dies, summaries.

Each row's outcome must be the one its reference calls for, in the order of the input,
with no row lost or doubled, and a refused address never reached.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
import ray
import ray.cloudpickle

from mediagate._loopback import LoopbackServer
from mediagate.ray import MediaLoader, summarize

pytestmark = pytest.mark.usefixtures("cluster")

# The dying loader below is defined here; Ray's workers get it by value.
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


def _row(i: int, server: LoopbackServer) -> tuple[str, str]:
    """Row ``i``'s reference and the outcome it must end with."""
    slot = i % 20
    if i % 100 == 18:
        return server.url(f"/slow/{i}.jpg"), "FetchTimeout"
    if slot < 6:
        return server.url(f"/img/{i}.jpg"), "ok"
    if slot < 8:
        return server.url(f"/png/{i}.png"), "ok"
    if slot < 10:
        return server.url(f"/wav/{i}.wav"), "ok"
    if slot == 10:
        return server.url(f"/mp4/{i}.mp4"), "ok"
    if slot < 13:
        return server.url(f"/missing/{i}.png"), "FetchError"
    if slot < 15:
        return server.url(f"/garbage/{i}.png"), "DecodeError"
    if slot == 15:
        # 0.0.0.0 reaches the loopback server if dialled; the policy must refuse it.
        return f"http://0.0.0.0:{server.port}/private/{i}.png", "PolicyError"
    if slot == 16:
        return f"http://192.168.7.7:{server.port}/private/{i}.png", "PolicyError"
    if slot == 17:
        return server.url(f"/big/{i}.jpg"), "TooLargeError"
    return server.url(f"/img/{i}.jpg"), "ok"


def _dataset(n: int, server: LoopbackServer) -> tuple[ray.data.Dataset, list[str]]:
    rows = [_row(i, server) for i in range(n)]
    table = pa.table({"id": list(range(n)), "url": [url for url, _ in rows]})
    return _blocks(table, 8), [o for _, o in rows]


def _blocks(table: pa.Table, count: int) -> ray.data.Dataset:
    """``table`` as a dataset of ``count`` blocks (no repartition task: the two actors
    hold both CPUs of the cluster while they run)."""
    step = -(-table.num_rows // count)
    return ray.data.from_arrow([table.slice(i, step) for i in range(0, table.num_rows, step)])


def test_thousands_of_mixed_rows_each_end_as_their_reference_calls_for(
    media_server: LoopbackServer, policy: dict[str, object]
) -> None:
    n = 2000
    ds, expected = _dataset(n, media_server)
    out = ds.map_batches(
        MediaLoader,
        fn_constructor_kwargs={"policy": policy, "options": {"max_in_flight": 16}},
        compute=ray.data.ActorPoolStrategy(size=2),
        batch_size=100,
        batch_format="pyarrow",
    ).materialize()
    rows = out.take_all()
    assert [row["id"] for row in rows] == list(range(n))
    got = [row["error_type"] or "ok" for row in rows]
    assert got == expected
    for row, outcome in zip(rows, expected, strict=True):
        if outcome != "ok":
            assert row["image"].size == 0 and row["audio"] is None
            continue
        kind = row["url"].split("/")[3]
        if kind in ("img", "png"):
            assert row["image"].ndim == 3 and row["image"].shape[-1] == 3 and row["image"].size
        elif kind == "wav":
            assert row["sample_rate"] == 16000 and len(row["audio"]) == 4000
        else:
            assert row["video_frames"].shape[0] == 8 and row["video_frames"].ndim == 4
    statuses = [
        row["http_status"] for row, o in zip(rows, expected, strict=True) if o == "FetchError"
    ]
    assert statuses and set(statuses) == {404}
    # Refused addresses were never dialled; every good row was fetched once.
    assert media_server.count() > 0
    assert not [r for r in media_server.requests_for() if r.path.startswith("/private/")]
    fetched = [r.path for r in media_server.requests_for() if r.path.startswith("/img/")]
    assert (
        len(fetched)
        == len(set(fetched))
        == expected.count("ok") - sum(1 for i in range(n) if i % 20 in (6, 7, 8, 9, 10))
    )

    summary = summarize(out)
    assert summary.as_dict() == {name: expected.count(name) for name in set(expected)}
    assert summary.total == n


def test_output_columns_take_the_prefix_and_never_clobber_input_columns(
    tmp_path: Path, media_server: LoopbackServer, policy: dict[str, object]
) -> None:
    ds = ray.data.from_items(
        [{"ref": media_server.url(f"/img/p{i}.jpg"), "image": "keep me"} for i in range(8)]
    )
    kwargs: dict[str, Any] = {"column": "ref", "policy": policy, "options": {"modality": "image"}}
    with pytest.raises(Exception, match="overwrite=True or a prefix"):
        ds.map_batches(
            MediaLoader, fn_constructor_kwargs=kwargs, compute=ray.data.ActorPoolStrategy(size=1)
        ).take_all()
    out = ds.map_batches(
        MediaLoader,
        fn_constructor_kwargs={
            **kwargs,
            "prefix": "m_",
            "options": {"modality": "image", "image_size": [32, 32]},
            "cache_dir": str(tmp_path / "cache"),
        },
        compute=ray.data.ActorPoolStrategy(size=1),
        batch_size=4,
        batch_format="pyarrow",
    )
    rows = out.take_all()
    assert [row["image"] for row in rows] == ["keep me"] * 8
    assert all(row["m_image"].shape == (32, 32, 3) for row in rows)
    assert summarize(out, prefix="m_").as_dict() == {"ok": 8}
    batch = out.take_batch(8, batch_format="numpy")
    assert batch["m_image"].shape == (8, 32, 32, 3) and batch["m_image"].dtype == np.uint8
    # The dataset ran three times; the actors' shared cache folder answered the later runs.
    fetched = [r.path for r in media_server.requests_for() if r.path.startswith("/img/p")]
    assert sorted(fetched) == sorted(f"/img/p{i}.jpg" for i in range(8))


class DyingLoader(MediaLoader):
    """A ``MediaLoader`` whose process exits after handing back part of its third batch,
    once: the first process to find ``flag`` removes it and dies."""

    def __init__(self, flag: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.flag = Path(flag)
        self.batches = 0

    def __call__(self, batch: Any) -> Any:
        self.batches += 1
        for number, table in enumerate(super().__call__(batch)):
            yield table
            if self.batches == 3 and number == 0:
                try:
                    self.flag.unlink()
                except FileNotFoundError:
                    continue
                os._exit(1)


def test_an_actor_killed_mid_run_loses_and_doubles_no_row(
    tmp_path: Path, media_server: LoopbackServer, policy: dict[str, object]
) -> None:
    n = 600
    flag = tmp_path / "die-once"
    flag.write_text("")
    urls = [media_server.url(f"/png/k{i}.png") for i in range(n)]
    ds = _blocks(pa.table({"id": list(range(n)), "url": urls}), 6)
    out = ds.map_batches(
        DyingLoader,
        fn_constructor_kwargs={
            "flag": str(flag),
            "policy": policy,
            # A small budget splits each batch into several tables, so the death comes
            # after part of a batch was handed back.
            "options": {"modality": "image", "max_decoded_bytes": 64 * 1024},
        },
        compute=ray.data.ActorPoolStrategy(size=2),
        batch_size=50,
        batch_format="pyarrow",
    ).materialize()
    ids = [row["id"] for row in out.select_columns(["id"]).take_all()]
    assert not flag.exists(), "no actor died: the test proved nothing"
    assert ids == list(range(n))
    assert summarize(out).as_dict() == {"ok": n}


def test_a_column_of_media_bytes_decodes_under_a_policy_object() -> None:
    from mediagate import MediaPolicy
    from mediagate._build import png_bytes

    cells = [png_bytes(), b"garbage bytes", None, png_bytes()]
    ds = ray.data.from_arrow(pa.table({"blob": pa.array(cells, type=pa.binary())}))
    out = ds.map_batches(
        MediaLoader,
        fn_constructor_kwargs={
            "column": "blob",
            "policy": MediaPolicy(max_bytes=1000),
            "options": {"modality": "image", "keep_failed": False},
            "keep_column": False,
        },
        compute=ray.data.ActorPoolStrategy(size=1),
        batch_format="pyarrow",
    )
    rows = out.take_all()
    assert len(rows) == 2 and "blob" not in rows[0]
    assert all(row["image"].ndim == 3 and row["error_type"] is None for row in rows)

"""``mediagate batch``: per-row outcomes in Parquet and WebDataset shards, resuming, usage
errors and the summary, run through the command line against loopback-served media."""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Callable, Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import soundfile
from PIL import Image

from builders import LoopbackServer, Route, data_url, png_bytes, soundfile_bytes, tone
from mediagate._cli import main

SAMPLES = Path(str(resources.files("mediagate") / "_samples"))
MP4 = (SAMPLES / "counter.mp4").read_bytes()
PNG = png_bytes()  # 40 x 30
WAV = soundfile_bytes(tone(0.25, 16000, channels=1), 16000)
MAX_BYTES = 20_000
TIMEOUT = 0.6


@pytest.fixture(autouse=True)
def only_the_test_server(monkeypatch: pytest.MonkeyPatch) -> None:
    """Loopback is reachable only at the test server's address (127.0.0.1)."""
    monkeypatch.setenv("MEDIAGATE_ALLOWED_NETWORKS", "127.0.0.1/32")


@pytest.fixture
def media() -> Iterator[LoopbackServer]:
    routes = {
        "/a.png": Route(PNG, headers={"Content-Type": "image/png"}),
        "/b.wav": Route(WAV, headers={"Content-Type": "audio/wav"}),
        "/c.mp4": Route(MP4, headers={"Content-Type": "video/mp4"}),
        "/garbage.png": Route(os.urandom(500), headers={"Content-Type": "image/png"}),
        "/big.png": Route(b"\x89PNG" + bytes(3 * MAX_BYTES)),
        "/slow.png": Route(PNG, delay=TIMEOUT + 1.5),
    }
    with LoopbackServer(routes) as server:
        yield server


#: Each row's path (None: a reference that is not on the server) and its outcome.
MIXED = [
    ("/a.png", "ok"),
    ("/b.wav", "ok"),
    ("/c.mp4", "ok"),
    ("/missing.png", "FetchError"),
    ("/garbage.png", "DecodeError"),
    (None, "PolicyError"),  # a private address the policy refuses
    ("/big.png", "TooLargeError"),
    ("/slow.png", "FetchTimeout"),
]


def _mixed_lines(server: LoopbackServer) -> list[str]:
    lines = []
    for path, _ in MIXED:
        if path is None:
            lines.append(f"http://127.0.0.2:{server.port}/private.png")
        else:
            lines.append(server.url(path))
    return lines


def _write_text(path: Path, lines: list[str]) -> Path:
    path.write_text("# references\n\n" + "\n".join(lines) + "\n", encoding="utf-8")
    return path


def _batch(*argv: str) -> list[str]:
    return [
        "batch",
        *argv,
        "--max-bytes",
        str(MAX_BYTES),
        "--timeout",
        str(TIMEOUT),
        "--no-progress",
    ]


def _read_parquet(folder: Path) -> pa.Table:
    """The output folder read as one Parquet dataset (the manifest and lock skipped)."""
    return pq.read_table(folder).sort_by("row")


def test_mixed_rows_each_get_their_outcome_in_the_parquet_shards(
    media: LoopbackServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = _write_text(tmp_path / "urls.txt", _mixed_lines(media))
    out = tmp_path / "out"
    assert main(_batch(str(source), "--out", str(out), "--shard-size", "3", "--json")) == 0
    captured = capsys.readouterr()

    assert sorted(p.name for p in out.glob("part-*")) == [
        "part-00000.parquet",
        "part-00001.parquet",
        "part-00002.parquet",
    ]
    # Every shard has the same columns (a shard of failures too), so the folder is one
    # dataset.
    schemas = [pq.read_schema(shard) for shard in sorted(out.glob("part-*"))]
    assert all(schema.equals(schemas[0]) for schema in schemas)
    assert {"image", "audio", "video_frames", "sample_rate"} <= set(schemas[0].names)
    table = _read_parquet(out)
    assert table.column("row").to_pylist() == list(range(len(MIXED)))
    outcomes = [e or "ok" for e in table.column("error_type").to_pylist()]
    assert outcomes == [outcome for _, outcome in MIXED]
    statuses = table.column("http_status").to_pylist()
    assert statuses[3] == 404 and statuses[0] is None
    assert table.column("url").to_pylist()[0] == media.url("/a.png")
    errors = table.column("error").to_pylist()
    assert errors[0] is None and all(errors[3:])
    assert table.column("num_bytes").to_pylist()[0] == len(PNG)

    # The refused address was never dialled; every other row was asked once.
    assert media.count("/private.png") == 0
    assert sorted(r.path for r in media.requests) == sorted(p for p, _ in MIXED if p)

    summary = json.loads(captured.out)
    assert summary["ok"] is True and summary["rows"] == len(MIXED)
    assert summary["shards_written"] == 3 and summary["rows_kept"] == 0
    assert summary["outcomes"] == {
        "ok": 3,
        "DecodeError": 1,
        "FetchError": 1,
        "FetchTimeout": 1,
        "PolicyError": 1,
        "TooLargeError": 1,
    }
    # The summary table on standard error: outcome, count, share.
    assert "outcome" in captured.err and "share" in captured.err
    assert any(line.split()[:3] == ["ok", "3", "37.5%"] for line in captured.err.splitlines())
    assert "Traceback" not in captured.err


def test_decoded_columns_hold_the_media(
    media: LoopbackServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = _write_text(tmp_path / "urls.txt", [media.url("/a.png")] * 2)
    out = tmp_path / "out"
    argv = _batch(str(source), "--out", str(out), "--modality", "image", "--image-size", "20x20")
    assert main(argv) == 0
    table = _read_parquet(out)
    images = table.column("image").combine_chunks()
    assert images.to_numpy_ndarray().shape == (2, 20, 20, 3)
    assert "ok" in capsys.readouterr().err


def test_drop_failed_leaves_failed_rows_out_and_counts_them(
    media: LoopbackServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = _write_text(tmp_path / "urls.txt", _mixed_lines(media))
    out = tmp_path / "out"
    assert main(_batch(str(source), "--out", str(out), "--drop-failed", "--json")) == 0
    table = _read_parquet(out)
    assert table.column("row").to_pylist() == [0, 1, 2]
    assert table.column("error_type").null_count == 3
    summary = json.loads(capsys.readouterr().out)
    assert summary["rows_written"] == 3 and sum(summary["outcomes"].values()) == len(MIXED)


@pytest.mark.parametrize("kind", ["csv", "jsonl", "parquet", "stdin"])
def test_csv_jsonl_parquet_and_stdin_inputs(
    kind: str,
    media: LoopbackServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    refs = [media.url("/a.png"), None, media.url("/missing.png")]
    if kind == "csv":
        source = tmp_path / "rows.csv"
        source.write_text(
            "id,image_url\n" + "".join(f"{i},{r or ''}\n" for i, r in enumerate(refs))
        )
    elif kind == "jsonl":
        source = tmp_path / "rows.jsonl"
        source.write_text("".join(json.dumps({"image_url": r, "id": 1}) + "\n" for r in refs))
    elif kind == "parquet":
        source = tmp_path / "rows.parquet"
        pq.write_table(pa.table({"image_url": pa.array(refs, pa.string())}), source)
    else:
        refs = [media.url("/a.png"), media.url("/missing.png")]
        text = "\n".join(r for r in refs if r) + "\n"
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(text.encode())))
        source = Path("-")
    out = tmp_path / "out"
    argv = _batch(str(source), "--out", str(out), "--json")
    if kind != "stdin":
        argv += ["--column", "image_url"]
    assert main(argv) == 0, capsys.readouterr()
    table = _read_parquet(out)
    assert table.column("row").to_pylist() == list(range(len(refs)))
    outcomes = table.column("error_type").to_pylist()
    assert outcomes[0] is None and outcomes[-1] == "FetchError"
    if None in refs:
        assert outcomes[1] is not None  # a row without a reference
    assert media.count("/a.png") == 1


def test_webdataset_shards_read_with_tarfile(
    media: LoopbackServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = _write_text(tmp_path / "urls.txt", _mixed_lines(media))
    out = tmp_path / "wds"
    argv = _batch(str(source), "--out", str(out), "--format", "webdataset", "--shard-size", "4")
    assert main(argv) == 0
    shards = sorted(out.glob("part-*.tar"))
    assert [s.name for s in shards] == ["part-00000.tar", "part-00001.tar"]
    members: dict[str, bytes] = {}
    for shard in shards:
        with tarfile.open(shard) as tar:
            for info in tar.getmembers():
                extracted = tar.extractfile(info)
                assert extracted is not None
                members[info.name] = extracted.read()
    records = {name: json.loads(data) for name, data in members.items() if name.endswith(".json")}
    assert len(records) == len(MIXED)
    for row, (_, outcome) in enumerate(MIXED):
        record = records[f"{row:09d}.json"]
        assert record["row"] == row and (record["error_type"] or "ok") == outcome
    assert records["000000003.json"]["http_status"] == 404

    image = Image.open(io.BytesIO(members["000000000.png"]))
    assert image.size == (40, 30)
    samples, rate = soundfile.read(io.BytesIO(members["000000001.wav"]), dtype="float32")
    assert rate == 16000 and samples.ndim == 1 and len(samples) == 4000
    frames = np.load(io.BytesIO(members["000000002.npy"]), allow_pickle=False)
    assert frames.ndim == 4 and frames.dtype == np.uint8
    assert records["000000002.json"]["video_metadata"]["total_num_frames"] > 0
    # A failed row has its JSON and nothing else.
    assert sorted(n for n in members if n.startswith("000000003.")) == ["000000003.json"]


# -- resuming ------------------------------------------------------------------------------


def _mediagate(*args: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "MEDIAGATE_ALLOWED_NETWORKS": "127.0.0.1/32"}
    return subprocess.Popen(
        [sys.executable, "-m", "mediagate", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        preexec_fn=_default_sigint,
    )


def _default_sigint() -> None:
    # A suite started as a background job inherits SIGINT ignored; the command under
    # test gets Ctrl-C as a terminal would deliver it.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _wait_until(ready: Callable[[], bool], proc: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 30
    while not ready():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, f"{what} never happened"
        time.sleep(0.01)


#: The most a held answer waits to be released (a bound for a test that fails early).
HOLD_S = 30.0
FAST = [f"/fast{i}.png" for i in range(60)]
SLOW = [f"/slow{i}.png" for i in range(4)]
SIZE = 8
SHARDS = -(-(len(FAST) + len(SLOW)) // SIZE)


@pytest.fixture
def held() -> Iterator[tuple[LoopbackServer, threading.Event]]:
    """Fast rows, then slow ones whose answers wait until the event is set: a run
    cannot finish, nor its last shard be written, before that."""
    release = threading.Event()

    def slow(request: Any, nth: int) -> Route:
        release.wait(HOLD_S)
        return Route(PNG)

    routes = {path: Route(PNG) for path in FAST}
    routes.update({path: Route(respond=slow) for path in SLOW})
    with LoopbackServer(routes) as server:
        try:
            yield server, release
        finally:
            release.set()


def _resumable_argv(server: LoopbackServer, tmp_path: Path, out: Path) -> list[str]:
    source = tmp_path / "urls.txt"
    if not source.exists():
        _write_text(source, [server.url(p) for p in FAST + SLOW])
    shards = ["--out", str(out), "--shard-size", str(SIZE)]
    return ["batch", str(source), *shards, "--timeout", str(2 * HOLD_S), "--json"]


def _finished(out: Path, *, killed: bool = False) -> list[str]:
    """The shards ``out`` records as finished, each there and whole; none half written
    and none unrecorded (a killed run may leave a hidden unfinished file and one shard
    in place but not yet recorded: a rerun writes it again)."""
    names = sorted(p.name for p in out.glob("part-*"))
    recorded = json.loads((out / "_manifest.json").read_text())["shards"]
    if killed:
        names = [name for name in names if name in recorded]
    else:
        assert not list(out.glob(".*.tmp"))
        assert set(names) <= set(recorded)
    for name in names:
        number = int(name[5:10])
        rows = pq.read_table(out / name).column("row").to_pylist()
        assert rows == list(range(number * SIZE, (number + 1) * SIZE))
    return names


def _rerun_keeps(server: LoopbackServer, argv: list[str], out: Path, finished: list[str]) -> None:
    """A rerun writes the shards left and fetches no row of the ``finished`` ones again."""
    before = {path: server.count(path) for path in FAST}
    rerun = _mediagate(*argv)
    stdout, err = rerun.communicate(timeout=60)
    assert rerun.returncode == 0, err
    summary = json.loads(stdout)
    assert summary["shards_kept"] == len(finished)
    assert summary["shards_written"] == SHARDS - len(finished)
    assert summary["outcomes"] == {"ok": len(FAST) + len(SLOW)}
    table = _read_parquet(out)
    assert table.column("row").to_pylist() == list(range(len(FAST) + len(SLOW)))
    assert table.column("error_type").null_count == table.num_rows
    kept = {int(name[5:10]) for name in finished}
    refetched = {i for i, path in enumerate(FAST) if server.count(path) > before[path]}
    assert not {i // SIZE for i in refetched} & kept
    assert sorted(p.name for p in out.iterdir() if p.name != ".lock") == [
        "_manifest.json",
        *(f"part-{n:05d}.parquet" for n in range(SHARDS)),
    ]


def _requested_after(server: LoopbackServer, seen: int) -> Callable[[], bool]:
    return lambda: server.count() > seen


#: The last shard the fast rows fill alone: written while the run waits for the slow
#: rows (the next one shares its slice of rows with them).
HELD = f"part-{SHARDS - 3:05d}.parquet"
#: When Ctrl-C comes: once the first request was made (nothing written yet), once a
#: given shard is in place, or a while after the fast rows' shards are, the run
#: waiting for the slow rows.
MOMENTS = [
    ("request", 0.0),
    ("part-00000.parquet", 0.0),
    ("part-00001.parquet", 0.0),
    ("part-00003.parquet", 0.0),
    ("held", 0.0),
    ("held", 0.1),
    ("held", 0.3),
    ("held", 1.0),
]


def test_ctrl_c_at_any_moment_ends_the_run_at_once_with_130_and_it_resumes(
    held: tuple[LoopbackServer, threading.Event], tmp_path: Path
) -> None:
    server, release = held
    for n, (moment, delay) in enumerate(MOMENTS):
        out = tmp_path / f"out{n}"
        argv = _resumable_argv(server, tmp_path, out)
        seen = server.count()
        proc = _mediagate(*argv)
        try:
            if moment == "request":
                _wait_until(_requested_after(server, seen), proc, "a first request")
            else:
                name = HELD if moment == "held" else moment
                _wait_until((out / name).exists, proc, f"{name} written")
            time.sleep(delay)
            proc.send_signal(signal.SIGINT)
            sent = time.monotonic()
            stdout, err = proc.communicate(timeout=30)
            took = time.monotonic() - sent
        finally:
            proc.kill()
        where = f"Ctrl-C at {moment} (+{delay} s)"
        assert proc.returncode == 130, (where, err)
        assert err.endswith(b"mediagate: interrupted\n") and b"Traceback" not in err, where
        assert json.loads(stdout)["error"] == "Interrupted"
        assert took < 4.0, (where, took)  # the slow rows would hold it for HOLD_S
        finished = _finished(out)
        assert len(finished) < SHARDS, where  # the last shard, with the slow rows, is not
        if moment.startswith("part-"):
            assert moment in finished
        if moment == "held":
            assert HELD in finished
    release.set()
    # The last run resumes: the shards it finished are kept, not fetched again.
    _rerun_keeps(server, argv, out, finished)


def test_ctrl_c_taken_by_another_thread_still_ends_the_run_at_once(
    held: tuple[LoopbackServer, threading.Event],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # SIGINT may land on any thread (a fetch, decode or native library's one) while
    # the main one waits for the slow rows: it still ends the run, at once.
    server, _ = held
    out = tmp_path / "out"
    sent: list[float] = []

    def interrupt() -> None:
        deadline = time.monotonic() + 30
        while not (out / HELD).exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        sent.append(time.monotonic())
        signal.pthread_kill(threading.get_ident(), signal.SIGINT)

    helper = threading.Thread(target=interrupt)
    helper.start()
    try:
        code = main(_resumable_argv(server, tmp_path, out))
    finally:
        helper.join()
    assert code == 130
    assert time.monotonic() - sent[0] < 4.0  # not when the slow rows come, HOLD_S later
    assert capsys.readouterr().err.endswith("mediagate: interrupted\n")
    assert HELD in _finished(out)


def test_ctrl_c_while_the_run_cleans_up_is_not_lost(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shutdown = asyncio.BaseEventLoop.shutdown_asyncgens

    async def interrupted(self: asyncio.BaseEventLoop) -> None:
        os.kill(os.getpid(), signal.SIGINT)  # as the loader's event loop is shut down
        await shutdown(self)

    monkeypatch.setattr(asyncio.BaseEventLoop, "shutdown_asyncgens", interrupted)
    with LoopbackServer({"/a.png": Route(PNG)}) as server:
        source = _write_text(tmp_path / "urls.txt", [server.url("/a.png")])
        assert main(_batch(str(source), "--out", str(tmp_path / "out"))) == 130
    assert capsys.readouterr().err.endswith("mediagate: interrupted\n")


def test_a_killed_run_resumes_without_refetching_finished_shards(
    held: tuple[LoopbackServer, threading.Event], tmp_path: Path
) -> None:
    server, release = held
    out = tmp_path / "out"
    argv = _resumable_argv(server, tmp_path, out)
    proc = _mediagate(*argv)
    try:
        _wait_until((out / "part-00002.parquet").exists, proc, "part-00002.parquet written")
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == -signal.SIGKILL
    finished = _finished(out, killed=True)
    assert 2 <= len(finished) < SHARDS
    release.set()
    _rerun_keeps(server, argv, out, finished)


def test_a_finished_run_rerun_fetches_nothing_and_other_options_need_overwrite(
    media: LoopbackServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = _write_text(tmp_path / "urls.txt", [media.url("/a.png"), media.url("/b.wav")])
    out = tmp_path / "out"
    assert main(_batch(str(source), "--out", str(out))) == 0
    assert main(_batch(str(source), "--out", str(out), "--json")) == 0
    captured = capsys.readouterr()
    summary = json.loads(captured.out)
    assert summary["shards_kept"] == 1 and summary["rows_loaded"] == 0
    assert "nothing left to load" in captured.err
    assert summary["outcomes"] == {"ok": 2}
    assert media.count() == 2

    for changed in (["--shard-size", "1"], ["--modality", "image"], ["--format", "webdataset"]):
        assert main(_batch(str(source), "--out", str(out), *changed, "--json")) == 2
        record = json.loads(capsys.readouterr().out)
        assert record["error"] == "UsageError" and "--overwrite" in record["message"]
    _write_text(source, [media.url("/a.png")])
    assert main(_batch(str(source), "--out", str(out))) == 2
    assert "another input" in capsys.readouterr().err
    assert media.count() == 2

    assert main(_batch(str(source), "--out", str(out), "--shard-size", "1", "--overwrite")) == 0
    assert [p.name for p in sorted(out.glob("part-*"))] == ["part-00000.parquet"]
    assert _read_parquet(out).num_rows == 1


# -- usage errors --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "content", "argv", "expected"),
    [
        ("huge.txt", b"http://x/" + b"a" * 200_000 + b"\n", [], "line 1 is longer"),
        ("nul.txt", b"http://x/a\nhttp://x/\x00b\n", [], "line 2 holds a NUL"),
        ("latin.txt", b"http://x/a\nhttp://x/\xe9\n", [], "line 2 is not UTF-8"),
        ("empty.txt", b"", [], "is empty"),
        ("comments.txt", b"# nothing\n\n", [], "holds no rows"),
        ("rows.csv", b"id,link\n1,http://x/a\n", [], "no column 'url'"),
        ("rows.jsonl", b'{"url": "http://x/a"}\n{"link": 1}\n', [], "line 2 has no 'url'"),
        ("rows.jsonl", b'{"url": 7}\n', [], "is int, not a string"),
        ("rows.jsonl", b"[1]\n", [], "not a JSON object"),
        ("rows.parquet", b"PAR1 not really", [], "is not a Parquet file"),
        ("urls.txt", b"http://x/a\n", ["--image-size", "224"], "WIDTHxHEIGHT"),
        ("urls.txt", b"http://x/a\n", ["--shard-size", "0"], "not a positive number"),
        ("urls.txt", b"http://x/a\n", ["--media-io-kwargs", "{"], "not valid JSON"),
    ],
)
@pytest.mark.parametrize("as_json", [False, True])
def test_bad_input_is_a_usage_error_before_any_fetch(
    name: str,
    content: bytes,
    argv: list[str],
    expected: str,
    as_json: bool,
    server: LoopbackServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    source = tmp_path / name
    source.write_bytes(content.replace(b"http://x/", server.url("/").encode()))
    out = tmp_path / "out"
    extra = ["--json"] if as_json else []
    assert main(_batch(str(source), "--out", str(out), *argv, *extra)) == 2
    captured = capsys.readouterr()
    if as_json:
        record = json.loads(captured.out)
        assert record["ok"] is False and expected in record["message"]
        assert record["error"] in {"UsageError", "OptionError"}
    else:
        assert expected in captured.err and captured.out == ""
    assert "Traceback" not in captured.err
    assert server.count() == 0
    assert not list(out.glob("part-*")) if out.exists() else True


def test_missing_input_and_an_out_that_is_a_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(_batch(str(tmp_path / "none.txt"), "--out", str(tmp_path / "o"))) == 2
    assert "no such file" in capsys.readouterr().err
    source = _write_text(tmp_path / "urls.txt", ["http://127.0.0.1:9/a.png"])
    (tmp_path / "file").write_text("x")
    assert main(_batch(str(source), "--out", str(tmp_path / "file"))) == 2
    assert "not a folder" in capsys.readouterr().err


def test_a_folder_with_shards_but_no_manifest_is_left_alone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = _write_text(tmp_path / "urls.txt", ["http://127.0.0.1:9/a.png"])
    out = tmp_path / "out"
    out.mkdir()
    (out / "part-00000.parquet").write_bytes(b"someone else's")
    assert main(_batch(str(source), "--out", str(out))) == 2
    assert "no _manifest.json" in capsys.readouterr().err
    assert (out / "part-00000.parquet").read_bytes() == b"someone else's"


# -- progress ------------------------------------------------------------------------------


def test_progress_without_tqdm_is_a_plain_line(
    media: LoopbackServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setitem(sys.modules, "tqdm", None)  # as if it were not installed
    source = _write_text(tmp_path / "urls.txt", [media.url("/a.png"), media.url("/missing.png")])
    argv = [*_batch(str(source), "--out", str(tmp_path / "out")), "--progress"]
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "2/2 rows (100%)" in err and "rows/s" in err and "ETA" in err and "1 failed" in err


def test_progress_is_off_when_standard_error_is_not_a_terminal(
    media: LoopbackServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = _write_text(tmp_path / "urls.txt", [media.url("/a.png")])
    argv = _batch(str(source), "--out", str(tmp_path / "out"))
    argv.remove("--no-progress")
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "rows/s," not in err.split("outcome")[0]  # nothing before the summary table


def test_data_urls_are_shown_short_in_the_url_column(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = _write_text(tmp_path / "urls.txt", [data_url(PNG)])
    out = tmp_path / "out"
    assert main(_batch(str(source), "--out", str(out))) == 0
    table = _read_parquet(out)
    assert table.column("error_type").to_pylist() == [None]
    shown = table.column("url").to_pylist()[0]
    assert shown.startswith("data:image/png;base64,<") and len(shown) < 60


def test_parquet_output_without_pyarrow_names_the_extra_before_any_fetch(
    media: LoopbackServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # as if it were not installed
    source = _write_text(tmp_path / "urls.txt", [media.url("/a.png")])
    assert main(_batch(str(source), "--out", str(tmp_path / "out"), "--json")) == 2
    record = json.loads(capsys.readouterr().out)
    assert record["error"] == "MissingDependency" and record["extra"] == "batch"
    assert media.count() == 0


def test_max_in_flight_bounds_concurrent_fetches_and_workers_size_the_decode_pool(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from mediagate._batch import BatchLoader

    pools: list[int] = []
    original = BatchLoader.close

    def close(self: BatchLoader) -> None:
        pools.append(self.connector.max_workers)
        original(self)

    monkeypatch.setattr(BatchLoader, "close", close)
    routes = {f"/{i}.png": Route(PNG, delay=0.15) for i in range(6)}
    with LoopbackServer(routes) as server:
        source = _write_text(tmp_path / "urls.txt", [server.url(p) for p in routes])
        argv = ["--max-in-flight", "2", "--workers", "3", "--json"]
        assert main(_batch(str(source), "--out", str(tmp_path / "out"), *argv)) == 0
        assert server.gauge.peak == 2
    assert json.loads(capsys.readouterr().out)["outcomes"] == {"ok": 6}
    assert pools == [3]


def test_media_io_kwargs_reach_every_row(
    media: LoopbackServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = _write_text(tmp_path / "urls.txt", [media.url("/c.mp4")] * 2)
    out = tmp_path / "out"
    argv = ["--modality", "video", "--media-io-kwargs", '{"num_frames": 4}']
    assert main(_batch(str(source), "--out", str(out), *argv)) == 0
    table = _read_parquet(out)
    metadata = [json.loads(m) for m in table.column("video_metadata").to_pylist()]
    assert [len(m["frames_indices"]) for m in metadata] == [4, 4]


def test_a_parquet_column_of_media_bytes_and_file_references(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "media"
    folder.mkdir()
    (folder / "a.png").write_bytes(PNG)
    source = tmp_path / "rows.parquet"
    pq.write_table(pa.table({"url": pa.array([PNG, b"not media", None], pa.binary())}), source)
    out = tmp_path / "bytes"
    assert main(_batch(str(source), "--out", str(out), "--modality", "image")) == 0
    table = _read_parquet(out)
    assert table.column("error_type").to_pylist()[0] is None
    assert table.column("error_type").to_pylist()[1] == "DecodeError"
    assert table.column("url").to_pylist() == [None, None, None]  # bytes are not copied

    files = _write_text(
        tmp_path / "files.txt",
        [(folder / "a.png").as_uri(), (tmp_path / "rows.parquet").as_uri()],
    )
    out = tmp_path / "files"
    argv = ["--allowed-local-media-path", str(folder)]
    assert main(_batch(str(files), "--out", str(out), *argv)) == 0
    outcomes = _read_parquet(out).column("error_type").to_pylist()
    assert outcomes == [None, "PolicyError"]  # outside the allowed folder


def test_progress_with_tqdm_draws_a_bar(
    media: LoopbackServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("tqdm")
    source = _write_text(tmp_path / "urls.txt", [media.url("/a.png"), media.url("/missing.png")])
    argv = [*_batch(str(source), "--out", str(tmp_path / "out")), "--progress"]
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "2/2" in err and "row/s" in err and "failed=1" in err


def test_a_shard_left_half_written_is_removed_and_written_again(
    media: LoopbackServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = _write_text(tmp_path / "urls.txt", [media.url("/a.png"), media.url("/b.wav")])
    out = tmp_path / "out"
    argv = _batch(str(source), "--out", str(out), "--shard-size", "1", "--json")
    assert main(argv) == 0
    capsys.readouterr()
    # As a run killed while writing its second shard leaves the folder: the shard's
    # temporary file, and the manifest without it.
    manifest = json.loads((out / "_manifest.json").read_text())
    del manifest["shards"]["part-00001.parquet"]
    (out / "_manifest.json").write_text(json.dumps(manifest))
    (out / "part-00001.parquet").rename(out / ".part-00001.parquet.999.tmp")
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["shards_kept"] == 1 and summary["shards_written"] == 1
    assert not list(out.glob(".*.tmp"))
    assert _read_parquet(out).column("row").to_pylist() == [0, 1]
    assert media.count("/a.png") == 1 and media.count("/b.wav") == 2


def test_a_damaged_manifest_is_a_usage_error_until_overwrite(
    media: LoopbackServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = _write_text(tmp_path / "urls.txt", [media.url("/a.png")])
    out = tmp_path / "out"
    assert main(_batch(str(source), "--out", str(out))) == 0
    (out / "_manifest.json").write_bytes(b"\xff{")
    assert main(_batch(str(source), "--out", str(out), "--json")) == 2
    assert "--overwrite" in json.loads(capsys.readouterr().out)["message"]
    assert main(_batch(str(source), "--out", str(out), "--overwrite")) == 0
    assert _read_parquet(out).num_rows == 1 and media.count() == 2


def test_one_shard_holds_one_type_per_column(tmp_path: Path) -> None:
    from mediagate._batch import BatchResult, Outcomes, RowResult
    from mediagate._batch_output import ShardWriter
    from mediagate._cli_input import UsageError

    def tensors(dtype: type) -> BatchResult:
        row = RowResult(0, "image_embedding", np.ones((2, 3), dtype))
        return BatchResult([row], Outcomes.of(["ok"]), modalities=("image_embedding",))

    def sounds(rows: int) -> BatchResult:
        found = [RowResult(0, "audio", (np.zeros(8, np.float32), 8000))][:rows]
        return BatchResult(found, Outcomes.of(["ok"] * rows), modalities=("audio",))

    writer = ShardWriter(tmp_path / "part-00000.parquet", "parquet", 0, ["ref"])
    writer.add(sounds(1))
    writer.add(sounds(0))  # an all-null audio column is the same column
    writer.commit()
    assert pq.read_table(tmp_path / "part-00000.parquet").num_rows == 1

    writer = ShardWriter(tmp_path / "part-00001.parquet", "parquet", 0, ["ref"])
    writer.add(tensors(np.float32))
    with pytest.raises(UsageError, match="tensor"):
        writer.add(tensors(np.float16))
    writer.abort()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["part-00000.parquet"]


@pytest.mark.parametrize(
    ("table", "expected"),
    [
        (pa.table({"link": ["http://x/a"]}), "no column 'url' (its columns: 'link'"),
        (pa.table({"url": [1, 2]}), "column 'url' is int64, not strings"),
        (pa.table({"url": pa.array([], pa.string())}), "holds no rows"),
    ],
)
def test_a_parquet_input_without_a_column_of_references_is_a_usage_error(
    table: pa.Table, expected: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "rows.parquet"
    pq.write_table(table, source)
    assert main(_batch(str(source), "--out", str(tmp_path / "out"), "--json")) == 2
    record = json.loads(capsys.readouterr().out)
    assert record["error"] == "UsageError" and expected in record["message"]

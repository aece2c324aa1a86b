"""The command line: output, JSON, one-line errors and exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from builders import LoopbackServer, Route, data_url, jpeg_bytes, png_bytes
from mediagate._cli import main


def test_fetch_data_url_prints_what_was_loaded(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["fetch", data_url(png_bytes())]) == 0
    out = capsys.readouterr().out
    assert "image" in out and "size=[40,30]" in out and "shape=[30,40,3]" in out
    assert "bytes=" in out and "decode" in out


def test_fetch_json(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    (tmp_path / "a.jpg").write_bytes(jpeg_bytes(20, 10))
    code = main(
        [
            "fetch",
            (tmp_path / "a.jpg").as_uri(),
            "--allowed-local-media-path",
            str(tmp_path),
            "--json",
        ]
    )
    record = json.loads(capsys.readouterr().out)
    assert code == 0 and record["ok"] is True
    assert record["source"] == "file" and record["bytes"] > 0
    assert record["result"]["shape"] == [10, 20, 3]


def test_http_needs_private_networks_flag_for_loopback(
    server: LoopbackServer, capsys: pytest.CaptureFixture[str]
) -> None:
    server.routes["/a.png"] = Route(png_bytes())
    assert main(["fetch", server.url("/a.png")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "PolicyError" in err and "Traceback" not in err
    assert server.count() == 0
    assert main(["fetch", server.url("/a.png"), "--allow-private-networks", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["result"]["size"] == [40, 30]


@pytest.mark.parametrize(
    ("argv", "code", "error"),
    [
        (["fetch", "ftp://example/a.png", "--json"], 1, "PolicyError"),
        (["fetch", "data:image/png;base64,AAAA", "--json"], 1, "DecodeError"),
        (["fetch", "data:image/png,x", "--media-io-kwargs", "{bad", "--json"], 2, "OptionError"),
        (
            ["fetch", "data:image/png,x", "--media-io-kwargs", '{"image": {"nope": 1}}', "--json"],
            2,
            "OptionError",
        ),
    ],
)
def test_errors_are_one_json_line_with_exit_code(
    argv: list[str], code: int, error: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == code
    record = json.loads(capsys.readouterr().out)
    assert record["ok"] is False and record["error"] == error


def test_bad_local_root_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["fetch", "file:///x.png", "--allowed-local-media-path", "/no/such/dir"])
    assert code == 2
    assert "does not exist" in capsys.readouterr().err


def test_python_dash_m_runs_the_cli() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "mediagate", "fetch", "gopher://x/"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 1
    assert (
        proc.stderr.startswith("mediagate: error: PolicyError") and "Traceback" not in proc.stderr
    )


def test_demo_loads_every_sample_and_refuses_the_hostile_ones(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["demo", "--json"]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    loaded = [(r["modality"], r["source"]) for r in records if r["ok"]]
    for expected in [
        ("image", "http"),
        ("image", "data"),
        ("image", "file"),
        ("audio", "http"),
        ("audio", "data"),
        ("video", "http"),
        ("video", "file"),
        ("image-embedding", "b64"),
    ]:
        assert expected in loaded
    refused = [r["error"] for r in records if not r["ok"]]
    assert refused == ["PolicyError"] * 3
    video = next(r for r in records if r["ok"] and r["modality"] == "video")
    assert video["result"]["shape"] == [8, 48, 64, 3]

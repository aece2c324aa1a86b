"""The command line: output, JSON, one-line errors and exit codes."""

from __future__ import annotations

import argparse
import io
import json
import signal
import subprocess
import sys
import time
from importlib import metadata, resources
from pathlib import Path
from typing import Any

import pytest

from builders import (
    LoopbackServer,
    Route,
    data_url,
    jpeg_bytes,
    png_bytes,
    pyav_audio_bytes,
    soundfile_bytes,
    tone,
)
from mediagate import MediaConnector
from mediagate._cli import _parser, main
from mediagate._extras import MissingExtra, missing_extra
from mediagate._present import ellipsis_for

SAMPLES = Path(str(resources.files("mediagate") / "_samples"))
SAMPLE_MP4 = (SAMPLES / "counter.mp4").read_bytes()
WAV = soundfile_bytes(tone(0.5, 16000, channels=1), 16000)


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


# -- modality from content ----------------------------------------------------------------


def test_a_url_without_an_extension_is_decoded_as_its_content(
    server: LoopbackServer, capsys: pytest.CaptureFixture[str]
) -> None:
    server.routes["/clip"] = Route(SAMPLE_MP4)
    server.routes["/voice"] = Route(pyav_audio_bytes(tone(1.0, 48000), 48000, "webm", "libopus"))
    private = ["--allow-private-networks", "--json"]
    assert main(["fetch", server.url("/clip"), *private]) == 0
    assert json.loads(capsys.readouterr().out)["modality"] == "video"
    assert main(["fetch", server.url("/voice"), *private]) == 0
    assert json.loads(capsys.readouterr().out)["modality"] == "audio"


def test_a_modality_that_is_not_the_content_s_suggests_the_right_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "tone.wav").write_bytes(WAV)
    assert main(["fetch", str(tmp_path / "tone.wav"), "--modality", "image"]) == 1
    err = capsys.readouterr().err
    assert "DecodeError" in err and "--modality audio" in err and err.count("\n") == 2
    code = main(["fetch", data_url(WAV, "image/png"), "--modality", "image", "--json"])
    record = json.loads(capsys.readouterr().out)
    assert code == 1 and record["suggested_modality"] == "audio"
    code = main(["fetch", data_url(png_bytes()), "--modality", "video", "--json"])
    record = json.loads(capsys.readouterr().out)
    assert code == 1 and record["suggested_modality"] == "image"


def test_long_lists_print_with_a_plain_ellipsis(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    kwargs = ["--media-io-kwargs", '{"video": {"num_frames": 16}}']
    assert main(["fetch", data_url(SAMPLE_MP4, "video/mp4"), *kwargs]) == 0
    out = capsys.readouterr().out
    assert "frames_indices=[0,1,2,3,4,5,…,13,14,15]" in out
    assert "'...'" not in out and "'" not in out
    ascii_out = io.TextIOWrapper(io.BytesIO(), encoding="ascii")
    assert ellipsis_for(ascii_out) == "..."


# -- options, the environment and usage errors -------------------------------------------


def test_media_io_kwargs_nested_or_flat_with_a_named_modality(
    capsys: pytest.CaptureFixture[str],
) -> None:
    png = data_url(png_bytes())
    for kwargs, modality in [
        ('{"image": {"image_mode": "L"}}', "auto"),
        ('{"image": {"image_mode": "L"}}', "image"),
        ('{"image_mode": "L"}', "image"),
    ]:
        argv = ["fetch", png, "--modality", modality, "--media-io-kwargs", kwargs, "--json"]
        assert main(argv) == 0
        assert json.loads(capsys.readouterr().out)["result"]["mode"] == "L"
    argv = ["fetch", data_url(SAMPLE_MP4, "video/mp4"), "--modality", "video", "--json"]
    assert main([*argv, "--media-io-kwargs", '{"num_frames": 3}']) == 0
    assert json.loads(capsys.readouterr().out)["result"]["shape"][0] == 3


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ('{"image_mode": "L"}', "needs --modality"),
        ('{"image": {"image_mode": "L"}, "num_frames": 3}', "mixes modalities and options"),
        ('{"image": "L"}', "must be an object"),
        ("[1, 2]", "must be a JSON object"),
        ('{"image": {', "not valid JSON"),
    ],
)
def test_media_io_kwargs_mistakes_show_the_nested_shape(
    kwargs: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["fetch", data_url(png_bytes()), "--media-io-kwargs", kwargs, "--json"])
    record = json.loads(capsys.readouterr().out)
    assert code == 2 and record["error"] == "OptionError" and message in record["message"]
    assert '{"image": {"image_mode": "L"}}' in record["message"]


def test_every_mediagate_variable_goes_through_from_env(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "clip.mp4").write_bytes(SAMPLE_MP4)
    monkeypatch.setenv("MEDIAGATE_ALLOWED_LOCAL_MEDIA_PATH", str(tmp_path))
    monkeypatch.setenv("MEDIAGATE_VIDEO_BACKEND", "opencv")
    url = (tmp_path / "clip.mp4").as_uri()
    assert main(["fetch", url, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["result"]["video_backend"] == "opencv"
    # Options win over the variables, and merge with them.
    kwargs = '{"video": {"video_backend": "pyav", "num_frames": 2}}'
    assert main(["fetch", url, "--media-io-kwargs", kwargs, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)["result"]
    assert result["video_backend"] == "pyav" and result["shape"][0] == 2
    monkeypatch.setenv("MEDIAGATE_MAX_BYTES", "100")
    assert main(["fetch", url, "--json"]) == 1
    record = json.loads(capsys.readouterr().out)
    assert record["error"] == "TooLargeError" and "--max-bytes" in record["message"]
    assert main(["fetch", url, "--max-bytes", "100000", "--json"]) == 0
    capsys.readouterr()


@pytest.mark.parametrize(
    ("env", "argv", "message"),
    [
        ({"MEDIAGATE_TIMEOUT": "abc"}, [], "MEDIAGATE_TIMEOUT must be a float"),
        ({"MEDIAGATE_ALLOW_PRIVATE_NETWORKS": "maybe"}, [], "MEDIAGATE_ALLOW_PRIVATE_NETWORKS"),
        ({"MEDIAGATE_DECODE_WORKERS": "x"}, [], "MEDIAGATE_DECODE_WORKERS"),
        ({"MEDIAGATE_ALLOWED_LOCAL_MEDIA_PATH": "/no/such/dir"}, [], "does not exist"),
        ({}, ["--allowed-local-media-path", "/no/such/dir"], "--allowed-local-media-path"),
        ({}, ["--timeout", "0"], "--timeout"),
        ({}, ["--max-bytes", "-5"], "--max-bytes"),
    ],
)
def test_configuration_mistakes_are_usage_errors(
    env: dict[str, str],
    argv: list[str],
    message: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert main(["fetch", data_url(png_bytes()), *argv, "--json"]) == 2
    record = json.loads(capsys.readouterr().out)
    assert record["error"] == "UsageError" and message in record["message"]
    assert main(["fetch", data_url(png_bytes()), *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mediagate: error: UsageError") and err.count("\n") == 1


def test_a_bad_video_backend_variable_is_an_option_error(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MEDIAGATE_VIDEO_BACKEND", "no-such-backend")
    assert main(["fetch", data_url(png_bytes()), "--json"]) == 2
    record = json.loads(capsys.readouterr().out)
    assert record["error"] == "OptionError" and "no-such-backend" in record["message"]


@pytest.mark.parametrize(
    "argv",
    [
        ["fetch", "--bogus"],
        ["fetch", "a.png", "--timeout", "soon"],
        ["fetch", "a.png", "--modality", "pictures"],
        ["nonsense"],
        [],
    ],
)
def test_argument_errors_honour_json(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*argv, "--json"]) == 2
    captured = capsys.readouterr()
    record = json.loads(captured.out)
    assert record["ok"] is False and record["error"] == "UsageError" and captured.err == ""
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "usage: mediagate" in captured.err
    assert "error:" in captured.err and "Traceback" not in captured.err


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"mediagate {metadata.version('mediagate')}\n")
    assert "extras installed: torch" in out


def _options(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [a for a in parser._actions if a.option_strings and a.dest not in ("help", "version")]


def test_every_option_s_help_shows_an_example() -> None:
    parser = _parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, sub in subparsers.choices.items():
        for action in _options(sub):
            assert action.help and any(flag in action.help for flag in action.option_strings), (
                f"{name} {action.option_strings}"
            )
    fetch_help = " ".join(subparsers.choices["fetch"].format_help().split())
    for example in ['{"image": {"image_mode": "L"}}', '{"audio": {"sample_rate": 16000}}']:
        assert example in fetch_help
    assert '{"video": {"num_frames": 8}}' in fetch_help and "image_embedding" in fetch_help
    assert "mediagate fetch photo.jpg" in fetch_help and "@FILE" in fetch_help


# -- faults, closed pipes, interrupts and missing extras ----------------------------------


def test_internal_error_only_for_real_faults(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("secret payload bytes")

    monkeypatch.setattr(MediaConnector, "load_media", broken)
    assert main(["fetch", data_url(png_bytes()), "--json"]) == 3
    record = json.loads(capsys.readouterr().out)
    assert record["error"] == "InternalError" and "secret" not in record["message"]


def test_a_missing_extra_is_named_not_an_import_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` fails from here on
    sample = SAMPLES / "embedding.safetensors"
    assert main(["fetch", str(sample), "--json"]) == 2
    record = json.loads(capsys.readouterr().out)
    assert record["error"] == "MissingDependency" and record["extra"] == "torch"
    assert "pip install 'mediagate[torch]'" in record["message"]
    assert main(["fetch", str(sample)]) == 2
    err = capsys.readouterr().err
    assert "MissingDependency" in err and "mediagate[torch]" in err and "Traceback" not in err


def test_the_demo_skips_what_needs_a_missing_extra_and_passes(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "torch", None)
    assert main(["demo", "--json"]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    skipped = [r for r in records if r.get("skipped")]
    assert [r["modality"] for r in skipped] == ["image-embedding"] * 2
    assert {r["install"] for r in skipped} == {"pip install 'mediagate[torch]'"}
    assert sum(1 for r in records if r["ok"]) == 8
    assert main(["demo"]) == 0
    out = capsys.readouterr().out
    assert "skipped: needs the torch extra" in out and out.rstrip().endswith("demo passed")


def test_missing_extras_are_told_apart_from_broken_installs() -> None:
    cv2 = ImportError("No module named 'cv2'", name="cv2")
    assert missing_extra(cv2) == MissingExtra(
        "opencv", "cv2 is not installed: pip install 'mediagate[opencv]'"
    )
    wrapped = ImportError("source 's3' needs a missing dependency (pip install 'mediagate[s3]')")
    wrapped.__cause__ = ImportError("No module named 's3fs'", name="s3fs")
    assert missing_extra(wrapped) is not None and missing_extra(wrapped).extra == "s3"  # type: ignore[union-attr]
    assert missing_extra(ImportError("No module named 'numpy'", name="numpy")) is None


def _mediagate(*args: str, **kwargs: Any) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "mediagate", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        preexec_fn=_default_sigint,
        **kwargs,
    )


def _default_sigint() -> None:
    # A suite started as a background job inherits SIGINT ignored; the command under
    # test gets Ctrl-C as a terminal would deliver it.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_a_closed_pipe_ends_the_demo_without_a_traceback() -> None:
    proc = _mediagate("demo", "--json")
    assert proc.stdout is not None and proc.stderr is not None
    first = [proc.stdout.readline() for _ in range(3)]
    proc.stdout.close()  # as `| head -3` does
    err = proc.stderr.read().decode()
    proc.stderr.close()
    assert proc.wait(timeout=120) == 141
    assert all(json.loads(line)["ok"] for line in first)
    assert err == ""


def test_ctrl_c_is_one_line_and_exit_130() -> None:
    proc = _mediagate("fetch", "-", stdin=subprocess.PIPE)
    wchan = Path(f"/proc/{proc.pid}/wchan")
    deadline = time.monotonic() + 60
    while "pipe" not in wchan.read_text() and time.monotonic() < deadline:
        time.sleep(0.05)  # until it waits for the reference on its standard input
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert out == b"" and err == b"mediagate: interrupted\n"

"""``mediagate fetch`` takes references the way people have them: paths, -, @FILE, bytes.

Every read of standard input or ``@FILE`` is bounded: the tests count the bytes an
endless stream served and show the read stopped one byte past the limit.
"""

from __future__ import annotations

import base64
import io
import json
import os
import tempfile
import textwrap
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from builders import data_url, jpeg_bytes, png_bytes, pyav_audio_bytes, soundfile_bytes, tone
from mediagate._cli import main
from mediagate._cli_input import _HEADER_SLACK
from mediagate._policy import MediaPolicy

SAMPLES = Path(str(resources.files("mediagate") / "_samples"))
WAV = soundfile_bytes(tone(0.5, 16000, channels=1), 16000)


class Endless(io.RawIOBase):
    """A stream that never ends, counting what it served."""

    def __init__(self, prefix: bytes = b"", fill: bytes = b"A") -> None:
        self.pending = prefix
        self.fill = fill
        self.served = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        size = 1 << 16 if size is None or size < 0 else size
        chunk = (self.pending + self.fill * size)[:size]
        self.pending = self.pending[len(chunk) :]
        self.served += len(chunk)
        return chunk


class Stdin:
    """What ``sys.stdin`` is to the command: a text face over a binary ``buffer``."""

    def __init__(self, buffer: io.RawIOBase | io.BytesIO, tty: bool = False) -> None:
        self.buffer = buffer
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


@pytest.fixture
def stdin(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    def feed(data: bytes | io.RawIOBase, tty: bool = False) -> None:
        stream = io.BytesIO(data) if isinstance(data, bytes) else data
        monkeypatch.setattr("sys.stdin", Stdin(stream, tty))

    yield feed


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, Any]]:
    code = main([*argv, "--json"])
    return code, json.loads(capsys.readouterr().out)


# -- plain paths -------------------------------------------------------------------------


def test_a_plain_path_loads_under_its_own_folder_and_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "photo.jpg").write_bytes(jpeg_bytes(20, 10))
    assert main(["fetch", str(tmp_path / "photo.jpg")]) == 0
    captured = capsys.readouterr()
    assert "shape=[10,20,3]" in captured.out
    assert f"file access is limited to {tmp_path}" in captured.err
    code, record = run(["fetch", str(tmp_path / "photo.jpg")], capsys)
    assert code == 0 and record["source"] == "file"
    assert record["allowed_local_media_path"] == str(tmp_path)


def test_a_relative_path_and_a_symlinked_one_load(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "a.png").write_bytes(png_bytes())
    (tmp_path / "link.png").symlink_to(tmp_path / "real" / "a.png")
    monkeypatch.chdir(tmp_path)
    assert run(["fetch", "real/a.png"], capsys)[1]["result"]["size"] == [40, 30]
    code, record = run(["fetch", "link.png"], capsys)
    # The link's target is what is read, under the target's own folder.
    assert code == 0 and record["allowed_local_media_path"] == str(tmp_path / "real")


def test_a_configured_folder_is_kept_for_a_plain_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    allowed, elsewhere = tmp_path / "allowed", tmp_path / "elsewhere"
    allowed.mkdir()
    elsewhere.mkdir()
    (allowed / "a.png").write_bytes(png_bytes())
    (elsewhere / "b.png").write_bytes(png_bytes())
    flag = ["--allowed-local-media-path", str(allowed)]
    assert run(["fetch", str(allowed / "a.png"), *flag], capsys)[0] == 0
    code, record = run(["fetch", str(elsewhere / "b.png"), *flag], capsys)
    assert code == 1 and record["error"] == "PolicyError" and "outside" in record["message"]
    # The environment's folder counts as configured too.
    monkeypatch.setenv("MEDIAGATE_ALLOWED_LOCAL_MEDIA_PATH", str(allowed))
    code, record = run(["fetch", str(elsewhere / "b.png")], capsys)
    assert code == 1 and record["error"] == "PolicyError"
    assert run(["fetch", (allowed / "a.png").as_uri()], capsys)[0] == 0


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("missing.png", "no such file"),
        ("folder", "is a directory"),
        ("fifo", "--stdin-bytes"),
    ],
)
def test_paths_that_are_no_file_are_usage_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, message: str
) -> None:
    (tmp_path / "folder").mkdir()
    os.mkfifo(tmp_path / "fifo")  # opening it for reading would hang: it is never opened
    code, record = run(["fetch", str(tmp_path / name)], capsys)
    assert code == 2 and record["error"] == "UsageError" and message in record["message"]


# -- a reference on standard input or in a file -------------------------------------------


def test_a_reference_on_stdin(stdin: Any, capsys: pytest.CaptureFixture[str]) -> None:
    stdin(data_url(WAV, "audio/wav").encode() + b"\n")
    code, record = run(["fetch", "-"], capsys)
    assert code == 0 and record["modality"] == "audio" and record["source"] == "data"


def test_a_long_data_url_from_a_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Far over what one command-line argument may be (128 KiB on Linux).
    big = soundfile_bytes(tone(8.0, 16000, channels=1), 16000)
    assert len(base64.b64encode(big)) > 300_000
    (tmp_path / "ref.txt").write_text(data_url(big, "audio/wav"))
    code, record = run(["fetch", f"@{tmp_path / 'ref.txt'}"], capsys)
    assert code == 0 and record["result"]["seconds"] == 8.0
    # Base64 wrapped over lines, as `base64` writes it, is one payload.
    wrapped = "data:image/png;base64,\n" + textwrap.fill(base64.b64encode(png_bytes()).decode())
    (tmp_path / "wrapped.txt").write_text(wrapped + "\n")
    code, record = run(["fetch", f"@{tmp_path / 'wrapped.txt'}"], capsys)
    assert code == 0 and record["result"]["size"] == [40, 30]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "is empty"),
        (b"  \n\n", "is empty"),
        (b"https://a.test/x.png https://a.test/y.png", "more than one reference"),
        (png_bytes(), "holds image bytes, not a reference"),
        (b"\x80\x81 binary", "not UTF-8"),
    ],
)
def test_reference_files_that_hold_no_reference_are_usage_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes, message: str
) -> None:
    (tmp_path / "ref").write_bytes(content)
    code, record = run(["fetch", f"@{tmp_path / 'ref'}"], capsys)
    assert code == 2 and record["error"] == "UsageError" and message in record["message"]


@pytest.mark.parametrize(
    ("argument", "message"),
    [("@", "@ needs a file name"), ("@/no/such/ref.txt", "no such file"), ("@/", "directory")],
)
def test_bad_reference_files_are_usage_errors(
    argument: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, record = run(["fetch", argument], capsys)
    assert code == 2 and record["error"] == "UsageError" and message in record["message"]


def test_a_path_read_from_stdin_gets_no_folder_of_its_own(
    stdin: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A reference that arrives on a stream is data, not the user's typing: /etc/passwd
    # there must not open /etc for reading.
    (tmp_path / "a.png").write_bytes(png_bytes())
    stdin(str(tmp_path / "a.png").encode())
    code, record = run(["fetch", "-"], capsys)
    assert code == 1 and record["error"] == "LocalMediaDisabledError"
    assert "--allowed-local-media-path" in record["message"]
    stdin(str(tmp_path / "a.png").encode())
    flag = ["--allowed-local-media-path", str(tmp_path)]
    assert run(["fetch", "-", *flag], capsys)[0] == 0


def test_an_endless_stdin_reference_is_refused_one_byte_past_a_url(
    stdin: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    stream = Endless(b"https://example.test/")
    stdin(stream)
    code, record = run(["fetch", "-"], capsys)
    cap = MediaPolicy().max_url_length + _HEADER_SLACK
    assert code == 1 and record["error"] == "TooLargeError" and "one URL" in record["message"]
    assert stream.served == cap + 1


def test_an_endless_data_url_is_refused_past_what_max_bytes_allows(
    stdin: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    stream = Endless(b"data:image/png;base64,")
    stdin(stream)
    code, record = run(["fetch", "-", "--max-bytes", "30000"], capsys)
    assert code == 1 and record["error"] == "TooLargeError"
    assert "--max-bytes" in record["message"]
    assert stream.served == 4 * 10_000 + _HEADER_SLACK + 1


def test_an_endless_reference_file_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    code, record = run(["fetch", "@/dev/zero"], capsys)
    cap = MediaPolicy().max_url_length + _HEADER_SLACK
    assert code == 1 and record["error"] == "TooLargeError"
    assert f"holds more than {cap} bytes, longer than a URL may be" in record["message"]


# -- media bytes on standard input --------------------------------------------------------


def test_media_bytes_on_stdin_are_sniffed(stdin: Any, capsys: pytest.CaptureFixture[str]) -> None:
    stdin(pyav_audio_bytes(tone(1.0, 48000), 48000, "webm", "libopus"))
    code, record = run(["fetch", "--stdin-bytes"], capsys)
    assert code == 0 and record["modality"] == "audio" and record["source"] == "stdin"
    assert record["url_shown"] == "<stdin>"
    stdin((SAMPLES / "counter.mp4").read_bytes())
    code, record = run(["fetch", "-", "--stdin-bytes"], capsys)
    assert code == 0 and record["modality"] == "video"


def test_endless_media_bytes_stop_one_byte_past_the_budget_and_leave_no_file(
    stdin: Any,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    stream = Endless(png_bytes())
    stdin(stream)
    code, record = run(["fetch", "--stdin-bytes", "--max-bytes", "100000"], capsys)
    assert code == 1 and record["error"] == "TooLargeError"
    assert "standard input holds more than 100000 bytes" in record["message"]
    assert stream.served == 100_001
    assert list(tmp_path.iterdir()) == []
    # Without --max-bytes, an image is held to the image budget.
    stream = Endless(png_bytes())
    stdin(stream)
    code, record = run(["fetch", "--stdin-bytes", "--modality", "image"], capsys)
    assert code == 1 and stream.served == MediaPolicy().max_bytes_for("image") + 1


@pytest.mark.parametrize(
    ("argv", "data", "tty", "message"),
    [
        (["fetch", "--stdin-bytes"], b"", False, "standard input is empty"),
        (["fetch", "--stdin-bytes"], b"x", True, "not a terminal"),
        (["fetch", "https://a.test/x.png", "--stdin-bytes"], b"x", False, "drop the URL"),
        (["fetch"], b"", False, "fetch needs a reference"),
        (["fetch", "-"], b"", False, "standard input is empty"),
    ],
)
def test_stdin_mistakes_are_usage_errors(
    stdin: Any,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    data: bytes,
    tty: bool,
    message: str,
) -> None:
    stdin(data, tty)
    code, record = run(argv, capsys)
    assert code == 2 and record["error"] == "UsageError" and message in record["message"]

"""Format sniffing, decoder routing and fallback, and what is refused as undecodable."""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from mediagate import AudioMediaIO, DecodeError, MediaPolicy, TooLargeError
from mediagate._media.audio import decode
from mediagate._media.audio.sniff import sniff_audio


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Count how often each decoder runs (they still run)."""
    counts = {"soundfile": 0, "pyav": 0}

    def counting(name: str, real: Callable[..., Any]) -> Callable[..., Any]:
        def run(*args: Any) -> Any:
            counts[name] += 1
            return real(*args)

        return run

    for name in counts:
        real = getattr(decode, f"_decode_{name}")
        monkeypatch.setattr(decode, f"_decode_{name}", counting(name, real))
    return counts


def _broken(*args: Any) -> None:
    raise RuntimeError("decoder cannot read this")


@pytest.mark.parametrize(
    "name,decoder",
    [
        ("wav-pcm16", "soundfile"),
        ("flac", "soundfile"),
        ("mp3", "soundfile"),
        ("ogg-vorbis", "pyav"),
        ("ogg-opus", "pyav"),
        ("m4a-aac", "pyav"),
        ("webm-opus", "pyav"),
    ],
)
def test_each_format_goes_straight_to_its_faster_decoder(
    kit: SimpleNamespace, calls: dict[str, int], name: str, decoder: str
) -> None:
    build, rate, _ = kit.FORMATS[name]
    AudioMediaIO().load_bytes(build(kit.tone(0.2, rate), rate))
    other = "pyav" if decoder == "soundfile" else "soundfile"
    assert calls == {decoder: 1, other: 0}


def test_falls_back_to_ffmpeg_when_libsndfile_cannot_read(
    kit: SimpleNamespace, monkeypatch: pytest.MonkeyPatch
) -> None:
    build, rate, _ = kit.FORMATS["flac"]
    source = kit.tone(0.2, rate)
    monkeypatch.setattr(decode, "_decode_soundfile", _broken)
    audio, sr = AudioMediaIO().load_bytes(build(source, rate))
    assert sr == rate
    np.testing.assert_allclose(audio, source.mean(axis=1), atol=1e-4)


def test_falls_back_to_libsndfile_when_ffmpeg_cannot_read(
    kit: SimpleNamespace, monkeypatch: pytest.MonkeyPatch
) -> None:
    build, rate, _ = kit.FORMATS["ogg-vorbis"]
    monkeypatch.setattr(decode, "_decode_pyav", _broken)
    audio, sr = AudioMediaIO().load_bytes(build(kit.tone(0.5, rate), rate))
    assert sr == rate and abs(len(audio) / sr - 0.5) < 0.06


def test_a_limit_hit_is_final_not_a_reason_to_try_the_other_decoder(
    kit: SimpleNamespace, calls: dict[str, int]
) -> None:
    build, rate, _ = kit.FORMATS["flac"]
    with pytest.raises(TooLargeError):
        AudioMediaIO(max_seconds=0.1).load_bytes(build(kit.tone(0.5, rate), rate))
    assert calls == {"soundfile": 1, "pyav": 0}


def test_when_both_decoders_fail_the_error_is_clean(
    kit: SimpleNamespace, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(decode, "_decode_soundfile", _broken)
    monkeypatch.setattr(decode, "_decode_pyav", _broken)
    build, rate, _ = kit.FORMATS["wav-pcm16"]
    with pytest.raises(DecodeError) as info:
        AudioMediaIO().load_bytes(build(kit.tone(0.1, rate), rate))
    assert str(info.value) == "WAV audio could not be decoded"
    assert isinstance(info.value.__cause__, RuntimeError)


def test_mp3_behind_an_id3_tag_is_recognised(kit: SimpleNamespace) -> None:
    build, rate, _ = kit.FORMATS["mp3"]
    mp3 = build(kit.tone(0.3, rate), rate)
    if mp3.startswith(b"ID3"):
        pytest.skip("the encoder already wrote a tag")
    tag_body = b"TIT2\x00\x00\x00\x05\x00\x00\x03abcd" + b"\x00" * 20
    size = len(tag_body)
    syncsafe = bytes([(size >> 21) & 0x7F, (size >> 14) & 0x7F, (size >> 7) & 0x7F, size & 0x7F])
    tagged = b"ID3\x03\x00\x00" + syncsafe + tag_body + mp3
    assert sniff_audio(tagged).name == "MP3"
    audio, sr = AudioMediaIO().load_bytes(tagged)
    assert sr == rate and abs(len(audio) / sr - 0.3) < 0.06


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"RIF",
        b"\x89PNG\r\n\x1a\n" + b"\x00" * 64,
        b"%PDF-1.7\n" + b"\x00" * 64,
        b"#EXTM3U\n#EXT-X-TARGETDURATION:10\nfile:///etc/passwd\n",
        b"ffconcat version 1.0\nfile '/etc/passwd'\n",
        b"\x00" * 1000,
    ],
)
def test_non_audio_is_a_decode_error(payload: bytes) -> None:
    with pytest.raises(DecodeError) as info:
        AudioMediaIO().load_bytes(payload)
    assert "passwd" not in str(info.value)


def test_an_ogg_stream_of_another_codec_is_refused() -> None:
    page = b"OggS\x00\x02" + b"\x00" * 20 + b"\x01\x1c" + b"Speex   " + b"\x00" * 20
    with pytest.raises(DecodeError, match="unsupported codec in an Ogg container"):
        AudioMediaIO().load_bytes(page)


def test_a_codec_off_the_allowlist_is_refused(kit: SimpleNamespace) -> None:
    data = kit.pyav_audio_bytes(kit.tone(0.2, 16000, channels=1), 16000, "mov", "adpcm_ima_qt")
    with pytest.raises(DecodeError, match=r"codec .* not supported"):
        AudioMediaIO().load_bytes(data)


def test_a_video_without_audio_is_refused(kit: SimpleNamespace) -> None:
    import io

    import av

    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as out:
        stream = out.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        for index in range(3):
            frame = av.VideoFrame.from_ndarray(np.zeros((32, 32, 3), np.uint8), format="rgb24")
            frame.pts = index
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    with pytest.raises(DecodeError, match="no audio track"):
        AudioMediaIO().load_bytes(buffer.getvalue())


@pytest.mark.parametrize("name", ["ogg-opus", "wav-pcm16", "m4a-aac"])
def test_a_payload_cut_before_any_audio_is_refused(kit: SimpleNamespace, name: str) -> None:
    build, rate, _ = kit.FORMATS[name]
    data = build(kit.tone(0.5, rate), rate)
    cut = data[:40]  # inside the first header or page
    with pytest.raises(DecodeError):
        AudioMediaIO().load_bytes(cut)


def test_a_truncated_file_decodes_what_it_holds(kit: SimpleNamespace) -> None:
    build, rate, _ = kit.FORMATS["wav-pcm16"]
    data = build(kit.tone(1.0, rate), rate)
    audio, _ = AudioMediaIO(policy=MediaPolicy()).load_bytes(data[: len(data) // 2])
    assert 0.4 < len(audio) / rate < 0.6

"""D10: audio that claims or expands to far more than it weighs.

Every case must end in a typed ``TooLargeError`` within a bounded time, with an error
text that leaks nothing, and the next good request must still succeed. The payloads
are built here: an Ogg/Opus stream written page by page (one 2-byte packet is 120 ms
of silence, so an hour weighs about 90 KB), and WAV/FLAC headers edited to lie.
"""

from __future__ import annotations

import io
import struct
import time
import tracemalloc
from collections.abc import Callable

import numpy as np
import pytest
import soundfile as sf

from builders import soundfile_bytes
from mediagate import AudioMediaIO, DecodeError, MediaPolicy, TooLargeError
from mediagate._media.audio import MAX_CHANNELS, MAX_SAMPLE_RATE

#: A CELT-only Opus packet: TOC 0x9b (20 ms frames, mono, code 3) and 6 empty frames.
SILENT_OPUS_PACKET = b"\x9b\x06"
SAMPLES_PER_PACKET = 6 * 960  # 120 ms at 48 kHz
DEADLINE = 1.0  # seconds any refusal may take


def _crc_table() -> list[int]:
    table = []
    for index in range(256):
        crc = index << 24
        for _ in range(8):
            crc = ((crc << 1) ^ 0x04C11DB7) if crc & 0x80000000 else crc << 1
        table.append(crc & 0xFFFFFFFF)
    return table


_CRC = _crc_table()


def _ogg_page(packets: list[bytes], granule: int, sequence: int, flags: int = 0) -> bytes:
    lacing = b"".join(b"\xff" * (len(p) // 255) + bytes([len(p) % 255]) for p in packets)
    header = struct.pack("<4sBBqIIIB", b"OggS", 0, flags, granule, 7, sequence, 0, len(lacing))
    page = bytearray(header + lacing + b"".join(packets))
    crc = 0
    for byte in page:
        crc = ((crc << 8) & 0xFFFFFFFF) ^ _CRC[(crc >> 24) ^ byte]
    page[22:26] = struct.pack("<I", crc)
    return bytes(page)


def opus_silence(seconds: float, *, honest_granules: bool = True) -> bytes:
    """Ogg/Opus of ``seconds`` of silence; with lying granules it claims 20 ms."""
    head = b"OpusHead" + struct.pack("<BBHIhB", 1, 1, 0, 48000, 0, 0)
    tags = b"OpusTags" + struct.pack("<I", 0) + struct.pack("<I", 0)
    pages = [_ogg_page([head], 0, 0, flags=2), _ogg_page([tags], 0, 1)]
    total = int(seconds * 48000 / SAMPLES_PER_PACKET)
    written = 0
    while written < total:
        count = min(255, total - written)
        written += count
        granule = written * SAMPLES_PER_PACKET if honest_granules else 960
        flags = 4 if written == total else 0
        pages.append(_ogg_page([SILENT_OPUS_PACKET] * count, granule, len(pages), flags))
    return b"".join(pages)


def wav(samples: np.ndarray, rate: int) -> bytes:
    return soundfile_bytes(samples, rate, "WAV", "PCM_16")


def wav_header(*, rate: int, channels: int, frames: int, data_len: int | None = None) -> bytes:
    """A PCM_16 WAV header declaring the given format, followed by ``frames`` of zeros."""
    block = channels * 2
    data = b"\x00" * (frames * block)
    size = len(data) if data_len is None else data_len
    fmt = struct.pack("<HHIIHH", 1, channels, rate, (rate * block) & 0xFFFFFFFF, block, 16)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data"
    body += struct.pack("<I", size) + data
    return b"RIFF" + struct.pack("<I", min(len(body), 0xFFFFFFFF)) + body


@pytest.fixture
def good_request() -> Callable[[AudioMediaIO], None]:
    """Decode a short honest file with the same instance: it must still work."""

    def check(io_: AudioMediaIO) -> None:
        frames = int(16000 * min(0.1, io_.max_seconds / 2))
        audio, rate = io_.load_bytes(wav(np.full((frames, 2), 0.1, np.float32), 16000))
        assert rate == 16000 and len(audio) == frames
        np.testing.assert_allclose(audio, 0.1, atol=1e-4)

    return check


def refuse(io_: AudioMediaIO, payload: bytes) -> tuple[TooLargeError, float]:
    start = time.perf_counter()
    with pytest.raises(TooLargeError) as info:
        io_.load_bytes(payload)
    return info.value, time.perf_counter() - start


def test_an_hour_of_opus_in_a_few_kilobytes_is_refused_from_its_length(
    clean_error: Callable[..., None], good_request: Callable[[AudioMediaIO], None]
) -> None:
    payload = opus_silence(3600)
    assert len(payload) < 100_000
    io_ = AudioMediaIO(policy=MediaPolicy(max_audio_seconds=30))

    err, elapsed = refuse(io_, payload)

    assert err.limit == "max_audio_seconds" and err.maximum == 30
    assert elapsed < DEADLINE
    clean_error(err, payload[:64], "OpusHead")
    good_request(io_)


@pytest.mark.parametrize("sample_rate", [None, 16000])
def test_opus_whose_pages_lie_about_length_stops_at_the_cap_while_decoding(
    clean_error: Callable[..., None],
    good_request: Callable[[AudioMediaIO], None],
    sample_rate: int | None,
) -> None:
    # With a sample rate, blocks are being resampled beside the decoding when the
    # cap is hit: that stops too.
    payload = opus_silence(2 * 3600, honest_granules=False)
    io_ = AudioMediaIO(sample_rate=sample_rate, policy=MediaPolicy(max_audio_seconds=30))

    tracemalloc.start()
    try:
        err, elapsed = refuse(io_, payload)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()

    # 30 s of mono float32 is 5.8 MB; two hours would be 1.4 GB.
    assert peak < 32 * 1024 * 1024

    assert err.limit == "max_audio_seconds"
    assert "decodes to" in str(err)  # found by counting samples, not from a header
    assert err.value is not None and 30 < err.value < 31  # stopped right past the cap
    assert elapsed < DEADLINE
    clean_error(err, payload[:64])
    good_request(io_)


def test_two_minutes_of_opus_against_a_thirty_second_cap(
    clean_error: Callable[..., None], good_request: Callable[[AudioMediaIO], None]
) -> None:
    for honest in (True, False):
        io_ = AudioMediaIO(policy=MediaPolicy(max_audio_seconds=30))
        err, elapsed = refuse(io_, opus_silence(120, honest_granules=honest))
        assert elapsed < DEADLINE
        clean_error(err)
        good_request(io_)
    # Under the cap it decodes in full: the checks are not over-eager.
    audio, rate = AudioMediaIO(policy=MediaPolicy(max_audio_seconds=130)).load_bytes(
        opus_silence(120)
    )
    assert rate == 48000 and len(audio) == 120 * 48000


def test_a_wav_header_claiming_one_hertz_is_refused(
    clean_error: Callable[..., None], good_request: Callable[[AudioMediaIO], None]
) -> None:
    payload = wav_header(rate=1, channels=1, frames=4000)
    io_ = AudioMediaIO(policy=MediaPolicy(max_audio_seconds=60))
    err, elapsed = refuse(io_, payload)
    assert err.limit == "max_audio_seconds" and elapsed < DEADLINE
    clean_error(err)
    good_request(io_)


@pytest.mark.parametrize("rate", [MAX_SAMPLE_RATE + 1, 100_000_000])
def test_a_wav_header_claiming_an_absurd_rate_is_refused(
    clean_error: Callable[..., None], good_request: Callable[[AudioMediaIO], None], rate: int
) -> None:
    io_ = AudioMediaIO()
    err, elapsed = refuse(io_, wav_header(rate=rate, channels=1, frames=100))
    assert err.limit == "sample_rate" and elapsed < DEADLINE
    clean_error(err)
    good_request(io_)


def test_a_wav_rate_neither_decoder_accepts_is_a_decode_error(
    clean_error: Callable[..., None], good_request: Callable[[AudioMediaIO], None]
) -> None:
    io_ = AudioMediaIO()
    with pytest.raises(DecodeError) as info:
        io_.load_bytes(wav_header(rate=0xFFFFFFFF, channels=1, frames=100))
    clean_error(info.value)
    good_request(io_)


def test_absurd_channel_counts_are_refused(
    clean_error: Callable[..., None], good_request: Callable[[AudioMediaIO], None]
) -> None:
    io_ = AudioMediaIO()
    err, _ = refuse(io_, wav_header(rate=8000, channels=MAX_CHANNELS + 1, frames=10))
    assert err.limit == "channels"
    clean_error(err)
    good_request(io_)


def test_many_channels_at_a_high_rate_hit_the_decoded_size_budget(
    clean_error: Callable[..., None], good_request: Callable[[AudioMediaIO], None]
) -> None:
    # 0.005 s of 32 channels at 96 kHz: short enough for the duration cap, but twice
    # the PCM that stereo at the highest accepted rate would give in 0.01 s.
    io_ = AudioMediaIO(policy=MediaPolicy(max_audio_seconds=0.01))
    err, _ = refuse(io_, wav_header(rate=96000, channels=32, frames=480))
    assert err.limit == "decoded_bytes"
    clean_error(err)
    good_request(io_)


def test_a_flac_header_claiming_hours_is_refused_before_decoding(
    clean_error: Callable[..., None], good_request: Callable[[AudioMediaIO], None]
) -> None:
    buffer = io.BytesIO()
    sf.write(buffer, np.zeros(1000, np.float32), 8000, format="FLAC")
    flac = bytearray(buffer.getvalue())
    # STREAMINFO starts at byte 8; its 36-bit total sample count ends at byte 8 + 18.
    packed = int.from_bytes(flac[18:26], "big")
    packed = (packed & ~((1 << 36) - 1)) | (8000 * 3600 * 5)
    flac[18:26] = packed.to_bytes(8, "big")
    io_ = AudioMediaIO(policy=MediaPolicy(max_audio_seconds=60))

    err, elapsed = refuse(io_, bytes(flac))

    assert err.limit == "max_audio_seconds" and "declares" in str(err)
    assert elapsed < DEADLINE
    clean_error(err)
    good_request(io_)


def test_a_wav_data_chunk_claiming_gigabytes_yields_only_what_is_there(
    good_request: Callable[[AudioMediaIO], None],
) -> None:
    payload = wav_header(rate=16000, channels=2, frames=800, data_len=0xFFFFFF00)
    io_ = AudioMediaIO()
    start = time.perf_counter()
    audio, rate = io_.load_bytes(payload)
    assert time.perf_counter() - start < DEADLINE
    assert rate == 16000 and len(audio) == 800
    good_request(io_)


def test_a_long_mp3_is_counted_while_decoding(
    clean_error: Callable[..., None], good_request: Callable[[AudioMediaIO], None]
) -> None:
    buffer = io.BytesIO()
    with sf.SoundFile(buffer, "w", 8000, 1, format="MP3", subtype="MPEG_LAYER_III") as snd:
        for _ in range(60):
            snd.write(np.zeros(8000, np.float32))
    io_ = AudioMediaIO(policy=MediaPolicy(max_audio_seconds=5))
    err, elapsed = refuse(io_, buffer.getvalue())
    assert err.limit == "max_audio_seconds" and elapsed < DEADLINE
    clean_error(err)
    good_request(io_)

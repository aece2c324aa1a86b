"""Fuzz targets for the reference parsers: the only failure they may show is a
``MediaError``, and what they accept is canonical and stable."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mediagate import MediaConnector, MediaError, MediaPolicy, PolicyError
from mediagate._policy import check_address
from mediagate._urls import (
    ParsedURL,
    check_data_url_size,
    parse_data_url,
    parse_url,
    redirect_target,
)

FUZZ = settings(
    max_examples=300,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
# The same, for targets that share a module-scoped connector between examples.
FUZZ_SHARED = settings(
    FUZZ, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)

# Pieces that tend to confuse URL parsers, mixed with arbitrary text.
TRICKY = [
    "@", ":", "/", "\\", "?", "#", "[", "]", "%", "%2e", "%00", "%ff", "..", ".", "\t", "\n",
    "\r", " ", "\x00", "\x7f", "\u3002", "\uff0e", "\u200b", "\ud800", "ß", "ü", "xn--", "0x",
    "127.0.0.1", "::1", "localhost", "a.test", "80", "65536", "-", "_", "~", "*",
]  # fmt: skip
SCHEMES = ["http", "https", "HTTP", "file", "data", "ftp", "gopher", "javascript", "", "h\ttp"]

pieces = st.one_of(st.sampled_from(TRICKY), st.text(max_size=6))
url_like = st.builds(
    lambda scheme, slashes, parts: scheme + slashes + "".join(parts),
    st.sampled_from(SCHEMES),
    st.sampled_from([":", "://", ":/", ":///", "://@", ":\\\\"]),
    st.lists(pieces, max_size=12),
)


def _checked_parse(url: str) -> ParsedURL | None:
    try:
        return parse_url(url)
    except MediaError:
        return None


@FUZZ
@given(st.one_of(url_like, st.text(max_size=80)))
def test_parse_url_fails_only_with_media_errors_and_is_canonical(url: str) -> None:
    parsed = _checked_parse(url)
    if parsed is None or parsed.scheme == "data":
        return
    assert parsed.url.isascii()
    assert not any(ch in parsed.url for ch in "\\ \t\r\n\x00\x7f")
    if parsed.scheme in ("http", "https"):
        netloc = parsed.url.split("://", 1)[1].split("/", 1)[0]
        assert "@" not in netloc
        assert parsed.host and parsed.host == parsed.host.lower()
        # The canonical form is a fixed point: what is judged again is what is sent.
        again = parse_url(parsed.url)
        assert again == parsed
    else:
        assert parsed.scheme == "file"
        assert parsed.path.startswith("/")
        assert "\x00" not in parsed.path
        assert parse_url(parsed.url) == parsed


@FUZZ
@given(url_like, st.one_of(url_like, st.lists(pieces, max_size=8).map("".join)))
def test_redirect_target_fails_only_with_media_errors(base: str, location: str) -> None:
    current = _checked_parse(base)
    if current is None or current.scheme not in ("http", "https"):
        current = parse_url("http://a.test/dir/page")
    try:
        target = redirect_target(current, location)
    except MediaError:
        return
    assert target.scheme in ("http", "https")
    assert parse_url(target.url) == target


data_header = st.lists(
    st.one_of(
        st.sampled_from(["image/png", "text/plain", "", "base64", "charset=x", "a=b=c", "%3B"]),
        st.text(max_size=8),
    ),
    max_size=5,
).map(";".join)
data_url = st.builds(
    lambda header, comma, payload: "data:" + header + comma + payload,
    data_header,
    st.sampled_from([",", "", ",,", "%2C"]),
    st.one_of(
        st.text(max_size=60), st.binary(max_size=60).map(lambda b: base64.b64encode(b).decode())
    ),
)


@FUZZ
@given(st.one_of(data_url, st.text(max_size=60).map(lambda t: "data:" + t)))
def test_parse_data_url_fails_only_with_media_errors(url: str) -> None:
    try:
        data = parse_data_url(url)
        check_data_url_size(data, 1024)
    except MediaError:
        return
    assert "/" in data.media_type
    assert data.payload_length == len(data.payload)
    assert str(data.payload_length) in repr(data)


@pytest.fixture(scope="module")
def connector() -> Iterator[MediaConnector]:
    with MediaConnector(policy=MediaPolicy(max_bytes=4096, max_pixels=4096, timeout=1)) as conn:
        yield conn


@FUZZ_SHARED
@given(
    url=st.one_of(
        data_url,
        st.binary(max_size=200).map(
            lambda b: "data:image/png;base64," + base64.b64encode(b"\x89PNG\r\n\x1a\n" + b).decode()
        ),
    )
)
def test_connector_data_path_fails_only_with_media_errors(
    connector: MediaConnector, url: str
) -> None:
    try:
        result = connector.fetch_image(url)
    except MediaError:
        return
    assert result.size[0] * result.size[1] <= 4096


@FUZZ_SHARED
@given(st.one_of(url_like, st.text(max_size=40)))
def test_connector_refuses_fuzzed_references_before_io(
    connector: MediaConnector, loopback_only: Any, url: str
) -> None:
    parsed = _checked_parse(url)
    if parsed is not None:
        # Only references the policy refuses are fetched here: nothing may leave.
        if parsed.scheme == "data":
            return  # the data: target above covers these
        if parsed.scheme in ("http", "https"):
            address = parsed.ip
            if address is None or check_address(address, connector.policy) is None:
                return
    with pytest.raises(MediaError):
        connector.fetch_image(url)
    assert loopback_only.attempts == []


def test_fuzz_targets_see_policy_errors_for_what_they_refuse() -> None:
    # Anchors: the fuzz targets above would pass vacuously if everything were refused.
    assert parse_url("http://a.test/x").url == "http://a.test/x"
    assert parse_data_url("data:,x").payload == "x"
    with pytest.raises(PolicyError):
        parse_url("http://a.test\\@b.test/")

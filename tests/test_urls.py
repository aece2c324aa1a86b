"""Unit tests of the pure reference parsers in ``mediagate._urls``."""

from __future__ import annotations

import pytest

from mediagate import DecodeError, PolicyError, TooLargeError
from mediagate._policy import normalize_domains
from mediagate._urls import (
    MAX_URL_LENGTH,
    base64_payload,
    check_data_url_size,
    check_domain,
    data_url_size,
    decode_data_url,
    parse_data_url,
    parse_url,
    redirect_target,
)


@pytest.mark.parametrize(
    ("url", "canonical", "host", "port"),
    [
        ("http://a.test/x", "http://a.test/x", "a.test", 80),
        ("HTTP://A.Test/x", "http://a.test/x", "a.test", 80),
        ("http://a.test", "http://a.test/", "a.test", 80),
        ("http://a.test:80/x", "http://a.test/x", "a.test", 80),
        ("https://a.test:443/x", "https://a.test/x", "a.test", 443),
        ("https://a.test:8443/x", "https://a.test:8443/x", "a.test", 8443),
        ("http://a.test./x", "http://a.test/x", "a.test", 80),
        (
            "http://bücher.test/ü?q=ä#frag",
            "http://xn--bcher-kva.test/%C3%BC?q=%C3%A4",
            "xn--bcher-kva.test",
            80,
        ),
        ("http://a.test/a%20b?x=%41", "http://a.test/a%20b?x=%41", "a.test", 80),
        ("http://[::1]:8080/x", "http://[::1]:8080/x", "[::1]", 8080),
        ("http://[0:0::FFFF:7f00:1]/", "http://[::ffff:7f00:1]/", "[::ffff:7f00:1]", 80),
        ("http://127.0.0.1/", "http://127.0.0.1/", "127.0.0.1", 80),
    ],
)
def test_http_urls_are_canonicalised(url: str, canonical: str, host: str, port: int) -> None:
    parsed = parse_url(url)
    assert parsed.url == canonical
    assert parsed.host == host
    assert parsed.port == port
    assert parse_url(parsed.url) == parsed


def test_ip_property_reads_literals_only() -> None:
    assert str(parse_url("http://[::1]/").ip) == "::1"
    assert str(parse_url("http://10.0.0.1/").ip) == "10.0.0.1"
    assert parse_url("http://a.test/").ip is None


@pytest.mark.parametrize(
    "url",
    [
        "http://u:p@a.test/",
        "http://u@a.test/",
        "http://a.test\\@b.test/",
        "http://a.test/\\x",
        "http://a .test/",
        "http://a.test/ x",
        "http://a.test/\tx",
        "http://a.test/\x00",
        "http://a.test/\x7f",
        "http://%61.test/",
        "http://[::1%25eth0]/",
        "http://2130706433/",
        "http://0x7f000001/",
        "http://0177.0.0.1/",
        "http://127.1/",
        "http://1.2.3/",
        "http://",
        "http:///x",
        "http:/x",
        "http:x",
        "http://:80/",
        "http://a.test:0/",
        "http://a.test:65536/",
        "http://a.test:8o/",
        "http://[::1/",
        "http://[nothex]/",
        "http://[::1]x/",
        "http://a..test/",
        "http://-a.test/",
        "http://a_b.test:/x y",
        "http://" + "a" * 64 + ".test/",
        "http://a.test/" + "x" * MAX_URL_LENGTH,
        "ftp://a.test/",
        "gopher://a.test/",
        "javascript:alert(1)",
        "a.test/x",
        "",
        ":x",
    ],
)
def test_ambiguous_or_unsupported_urls_are_refused(url: str) -> None:
    with pytest.raises(PolicyError) as info:
        parse_url(url)
    assert info.value.http_status in (400, 403)


def test_non_string_is_refused() -> None:
    with pytest.raises(PolicyError):
        parse_url(b"http://a.test/")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("file:///srv/media/a.png", "/srv/media/a.png"),
        ("file://localhost/srv/a.png", "/srv/a.png"),
        ("file:/srv/a%20b.png", "/srv/a b.png"),
        ("file:///srv/%2e%2e/etc", "/srv/../etc"),
        ("file:///srv/a.png?x=1#f", "/srv/a.png"),
    ],
)
def test_file_urls_give_a_decoded_absolute_path(url: str, path: str) -> None:
    assert parse_url(url).path == path


@pytest.mark.parametrize(
    "url",
    [
        "file://otherhost/srv/a.png",
        "file://127.0.0.1/srv/a.png",
        "file:relative.png",
        "file:",
        "file:///srv/a%00.png",
        "file:///srv/%ff.png",
        "file:///srv/%ed%a0%80.png",
        "file:///srv/a\\b.png",
    ],
)
def test_bad_file_urls_are_refused(url: str) -> None:
    with pytest.raises(PolicyError):
        parse_url(url)


def test_check_domain_is_an_exact_match() -> None:
    allowed = normalize_domains(["Allowed.Test.", "bücher.test"])
    assert allowed == {"allowed.test", "xn--bcher-kva.test"}
    check_domain(parse_url("http://ALLOWED.test./x"), allowed)
    check_domain(parse_url("http://BÜCHER.test/x"), allowed)
    for host in ["allowed.test.evil.test", "evilallowed.test", "sub.allowed.test"]:
        with pytest.raises(PolicyError):
            check_domain(parse_url(f"http://{host}/"), allowed)
    check_domain(parse_url("http://anything.test/"), frozenset())


@pytest.mark.parametrize(
    ("location", "target"),
    [
        ("/y", "http://a.test/y"),
        ("y", "http://a.test/dir/y"),
        ("../y", "http://a.test/y"),
        ("?q=1", "http://a.test/dir/page?q=1"),
        ("//b.test/z", "http://b.test/z"),
        ("https://b.test:444/z", "https://b.test:444/z"),
        ("  /y  ", "http://a.test/y"),
    ],
)
def test_redirect_targets_resolve_against_the_current_hop(location: str, target: str) -> None:
    current = parse_url("http://a.test/dir/page")
    assert redirect_target(current, location).url == target


@pytest.mark.parametrize(
    "location",
    [
        "file:///etc/passwd",
        "data:,x",
        "gopher://a.test/",
        "ftp://a.test/",
        "http://u@b.test/",
        "/a\\b",
        "/a\nb",
        "http://b.test\\@c.test/",
        "http://2130706433/",
    ],
)
def test_redirect_to_anything_but_a_clean_http_url_is_refused(location: str) -> None:
    with pytest.raises(PolicyError):
        redirect_target(parse_url("http://a.test/dir/page"), location)


# ---------------------------------------------------------------------------
# data:


def test_data_url_parts() -> None:
    data = parse_data_url("data:Image/PNG;name=x.png;base64,AAAA")
    assert (data.media_type, data.params, data.is_base64) == (
        "image/png",
        (("name", "x.png"),),
        True,
    )
    assert data.payload == "AAAA"
    assert data.payload_length == 4
    assert "AAAA" not in repr(data)
    plain = parse_data_url("data:,hello%20world")
    assert plain.media_type == "text/plain"
    assert decode_data_url(plain, 100) == b"hello world"
    assert base64_payload(parse_data_url("data:a/b;base64,AA%3D%3D")) == "AA=="


@pytest.mark.parametrize(
    "url",
    [
        "data:",
        "data:image/png",
        "data:image/png;base64",
        "data:imagepng,x",
        "data:image/png;bogus,x",
        "data:" + "a" * 2000 + ",x",
    ],
)
def test_malformed_data_urls_are_decode_errors(url: str) -> None:
    with pytest.raises(DecodeError):
        parse_data_url(url)


def test_data_url_size_is_judged_from_length() -> None:
    assert data_url_size(parse_data_url("data:,abc")) == 3
    assert data_url_size(parse_data_url("data:,%41%42")) == 2
    # A stray % decodes to itself and counts as a byte.
    assert data_url_size(parse_data_url("data:,%%%zz")) == 5
    assert data_url_size(parse_data_url("data:;base64,AAAAAAAA")) >= 6
    check_data_url_size(parse_data_url("data:,%41" * 1 + "x" * 99), 100)
    with pytest.raises(TooLargeError) as info:
        check_data_url_size(parse_data_url("data:," + "x" * 200), 100)
    assert info.value.limit == "max_bytes"
    with pytest.raises(TooLargeError):
        decode_data_url(parse_data_url("data:," + "%" * 200), 100)
    with pytest.raises(TooLargeError):
        check_data_url_size(parse_data_url("data:;base64," + "A" * 1000), 100)


@pytest.mark.parametrize(
    "location", ["http://[", "//[::1", "http://[::1]x/", "https://a.test:99999/"]
)
def test_malformed_redirect_targets_are_policy_errors(location: str) -> None:
    with pytest.raises(PolicyError):
        redirect_target(parse_url("http://a.test/"), location)


@pytest.mark.parametrize(
    "host", ["1.2.3.4.5", "example.0x10", "a.b.2130706433", "0x7f.1", "10.0.1."]
)
def test_hosts_that_end_in_a_number_must_be_canonical_addresses(host: str) -> None:
    with pytest.raises(PolicyError):
        parse_url(f"http://{host}/a.png")


@pytest.mark.parametrize("host", ["cafe.face", "1a.example", "x.1a", "0x.example", "10.0.1.2"])
def test_hosts_that_only_look_numeric_are_names_or_addresses(host: str) -> None:
    assert parse_url(f"http://{host}/a.png").host == host

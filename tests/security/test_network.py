"""N1-N8: SSRF and friends. Every refused target sees zero connections.

All traffic stays on loopback: non-loopback addresses are refused by policy before any
connection (and the ``loopback_only`` guard fails the test if one were attempted);
names resolve through ``fake_dns``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest
from PIL import Image

from builders import png_bytes
from mediagate import (
    DecodeError,
    FetchError,
    LocalMediaDisabledError,
    MediaConnector,
    MediaError,
    MediaPolicy,
    PolicyError,
)
from mediagate._urls import parse_url

pytestmark = pytest.mark.usefixtures("loopback_only")

LOOPBACK = MediaPolicy(allowed_networks=["127.0.0.1/32"], timeout=2)
DEFAULT = MediaPolicy(timeout=2)


def png(color: tuple[int, int, int] = (10, 20, 30)) -> bytes:
    return png_bytes(Image.new("RGB", (3, 2), color))


def refused(
    connector: MediaConnector,
    url: str,
    kind: type[MediaError],
    clean_error: Callable[..., None],
    *secrets: str,
) -> MediaError:
    """Fetching ``url`` fails fast with ``kind`` and a message that leaks nothing."""
    start = time.monotonic()
    with pytest.raises(kind) as info:
        connector.fetch_image(url)
    assert time.monotonic() - start < 3
    clean_error(info.value, *secrets)
    return info.value


def good(connector: MediaConnector, url: str) -> None:
    """The next good request still succeeds."""
    assert connector.fetch_image(url).size == (3, 2)


# ---------------------------------------------------------------------------
# N1: internal addresses written plainly


def test_n1_loopback_server_is_refused_by_default(http_server: Any, make_connector: Any) -> None:
    http_server.route("/img", lambda *a: pytest.fail("never answered"))
    conn = make_connector(DEFAULT)
    err = refused(conn, http_server.url("/img"), PolicyError, lambda e, *s: None)
    assert err.http_status == 403
    assert "127.0.0.1" not in str(err)
    assert http_server.connections == 0


def test_n1_ipv6_loopback_server_is_refused(http_server_v6: Any, make_connector: Any) -> None:
    conn = make_connector(DEFAULT)
    with pytest.raises(PolicyError):
        conn.fetch_image(http_server_v6.url("/img"))
    assert http_server_v6.connections == 0


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1",
        "127.255.255.254",
        "[::1]",
        "0.0.0.0",
        "[::]",
        "169.254.169.254",
        "10.0.0.1",
        "172.16.5.4",
        "192.168.1.1",
        "100.64.0.1",
        "[fd00::1]",
        "[fe80::1]",
        "[fec0::1]",
        "224.0.0.1",
        "[ff02::1]",
        "255.255.255.255",
        "198.18.0.1",
        "240.0.0.1",
    ],
)
def test_n1_internal_literal_is_refused_before_connecting(
    host: str, loopback_only: Any, make_connector: Any, clean_error: Any
) -> None:
    conn = make_connector(DEFAULT)
    refused(conn, f"http://{host}/latest/meta-data/", PolicyError, clean_error, host.strip("[]"))
    assert loopback_only.attempts == []


def test_n1_async_twin_refuses_the_same(
    http_server: Any, loopback_only: Any, make_connector: Any
) -> None:
    conn = make_connector(DEFAULT)

    async def main() -> None:
        with pytest.raises(PolicyError):
            await conn.fetch_image_async(http_server.url("/img"))
        with pytest.raises(PolicyError):
            await conn.fetch_image_async("http://169.254.169.254/")

    asyncio.run(main())
    assert http_server.connections == 0
    assert loopback_only.attempts == []


def test_n1_allowed_network_reaches_the_server_and_nothing_else(
    http_server: Any, make_connector: Any, respond: Any
) -> None:
    http_server.route("/img", respond.reply(png()))
    conn = make_connector(LOOPBACK)
    good(conn, http_server.url("/img"))
    with pytest.raises(PolicyError):
        conn.fetch_image("http://127.0.0.2:1/img")
    assert http_server.count("/img") == 1


# ---------------------------------------------------------------------------
# N2: the same addresses spelled differently


@pytest.mark.parametrize(
    "host",
    [
        "2130706433",
        "0x7f000001",
        "0x7F.0.0.1",
        "0177.0.0.1",
        "017700000001",
        "127.1",
        "127.0.1",
        "0x7f.1",
        "[::ffff:127.0.0.1]",
        "[::ffff:7f00:1]",
        "[0:0:0:0:0:ffff:127.0.0.1]",
        "[::127.0.0.1]",
        "[::ffff:0:127.0.0.1]",
        "[64:ff9b::127.0.0.1]",
        "[64:ff9b::a9fe:a9fe]",
        "[64:ff9b:1::7f00:1]",
        "[2002:7f00:1::1]",
        "[2002:a9fe:a9fe::1]",
        "[2001:0:4136:e378:8000:63bf:80ff:fffe]",
        "[::ffff:169.254.169.254]",
        "[::ffff:10.0.0.1]",
    ],
)
def test_n2_disguised_internal_address_is_refused(
    host: str, http_server: Any, loopback_only: Any, make_connector: Any, clean_error: Any
) -> None:
    conn = make_connector(DEFAULT)
    refused(conn, f"http://{host}:{http_server.port}/img", PolicyError, clean_error)
    assert http_server.connections == 0
    assert loopback_only.attempts == []


@pytest.mark.parametrize(
    "answer",
    [
        "127.0.0.1",
        "::ffff:127.0.0.1",
        "64:ff9b::7f00:1",
        "2002:7f00:1::1",
        "::ffff:0:7f00:1",
        "169.254.169.254",
        "fd12::1",
    ],
)
def test_n2_name_is_judged_on_the_address_it_resolves_to(
    answer: str,
    http_server: Any,
    fake_dns: Any,
    loopback_only: Any,
    make_connector: Any,
    clean_error: Any,
) -> None:
    fake_dns.set("media.test", [answer])
    conn = make_connector(DEFAULT)
    refused(conn, http_server.url("/img", "media.test"), PolicyError, clean_error, answer)
    assert fake_dns.lookups("media.test") == 1
    assert http_server.connections == 0
    assert loopback_only.attempts == []


def test_n2_every_answer_is_judged_not_only_the_first(
    http_server: Any,
    fake_dns: Any,
    loopback_only: Any,
    make_connector: Any,
    clean_error: Any,
    respond: Any,
) -> None:
    # The allowed address comes first; the forbidden one must still refuse the hop.
    fake_dns.set("media.test", ["127.0.0.1", "10.1.2.3"])
    http_server.route("/img", respond.reply(png()))
    conn = make_connector(LOOPBACK)
    refused(conn, http_server.url("/img", "media.test"), PolicyError, clean_error, "10.1.2.3")
    assert http_server.connections == 0
    assert loopback_only.attempts == []


def test_n2_checked_address_is_dialled_with_the_host_header_kept(
    http_server: Any, fake_dns: Any, loopback_only: Any, make_connector: Any, respond: Any
) -> None:
    fake_dns.set("media.test", ["127.0.0.1"])
    http_server.route("/img", respond.reply(png()))
    conn = make_connector(LOOPBACK)
    good(conn, http_server.url("/img", "media.test"))
    assert fake_dns.lookups("media.test") == 1
    assert [a[0] for a in loopback_only.attempts] == ["127.0.0.1"]
    assert http_server.requests[0].headers["host"] == f"media.test:{http_server.port}"


def test_n2_unresolvable_name_is_a_fetch_error(
    fake_dns: Any, make_connector: Any, clean_error: Any
) -> None:
    conn = make_connector(DEFAULT)
    err = refused(conn, "http://nowhere.test/img", FetchError, clean_error)
    assert not isinstance(err, PolicyError)


# ---------------------------------------------------------------------------
# N3: parser differentials


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1\\@allowed.test:{port}/img",
        "http://allowed.test\\@127.0.0.1:{port}/img",
        "http://allowed.test@127.0.0.1:{port}/img",
        "http://user:pw@allowed.test:{port}/img",
        "http://allowed.test:{port}@127.0.0.1/img",
        "http://allowed.test:{port}\\img",
        "http://allowed.test\t:{port}/img",
        "http://allo\nwed.test:{port}/img",
        "http://allowed.test\r\n:{port}/img",
        "http://allowed.test\x00.evil.test:{port}/img",
        "http://allowed.test\x0b:{port}/img",
        " http://allowed.test:{port}/img",
        "http://allowed.test:{port}/img ",
        "http://allowed.test:{port}/i mg",
        "http://%61llowed.test:{port}/img",
        "http://allowed%2etest:{port}/img",
        "http://%31%32%37.0.0.1:{port}/img",
        "http://[::1]@allowed.test:{port}/img",
        "http://[::ffff:127.0.0.1%25lo]:{port}/img",
        "http:\\\\allowed.test:{port}/img",
        "http:/allowed.test:{port}/img",
        "http:allowed.test:{port}/img",
        "http://allowed.test:+{port}/img",
        "http://allowed.test:-1/img",
        "http://allowed.test:99999/img",
        "http://allowed.test:{port}:{port}/img",
        "http://[allowed.test]:{port}/img",
    ],
)
def test_n3_ambiguous_url_is_refused_before_any_io(
    url: str,
    http_server: Any,
    fake_dns: Any,
    loopback_only: Any,
    make_connector: Any,
    clean_error: Any,
    respond: Any,
) -> None:
    fake_dns.set("allowed.test", ["127.0.0.1"])
    http_server.route("/img", respond.reply(png()))
    conn = make_connector(LOOPBACK, allowed_media_domains=["allowed.test"])
    refused(conn, url.format(port=http_server.port), PolicyError, clean_error)
    assert fake_dns.calls == []
    assert http_server.connections == 0
    good(conn, http_server.url("/img", "allowed.test"))


def test_n3_the_url_validated_is_the_url_sent(
    http_server: Any, fake_dns: Any, make_connector: Any, respond: Any
) -> None:
    fake_dns.set("xn--bcher-kva.test", ["127.0.0.1"])
    url = f"http://BÜCHER.test:{http_server.port}/a%20b/ü%2F%zz/../x?q=ä&r=%41#frag"
    canonical = parse_url(url)
    path = canonical.url.split(f":{http_server.port}", 1)[1]
    http_server.route(path, respond.reply(png()))
    conn = make_connector(LOOPBACK)
    good(conn, url)
    [seen] = http_server.requests
    assert seen.path == path
    assert seen.headers["host"] == f"xn--bcher-kva.test:{http_server.port}"
    assert canonical.host == "xn--bcher-kva.test"
    assert "#" not in seen.path


# ---------------------------------------------------------------------------
# N4: allowlist look-alikes


@pytest.mark.parametrize(
    "host",
    [
        "allowed.test.evil.test",
        "evilallowed.test",
        "sub.allowed.test",
        "allowed.tes",
        "allowed.test..",
        "allowed-test",
        "xn--allowed-test",
    ],
)
def test_n4_lookalike_host_is_refused(
    host: str, http_server: Any, fake_dns: Any, make_connector: Any, clean_error: Any
) -> None:
    fake_dns.set(host.rstrip("."), ["127.0.0.1"])
    conn = make_connector(LOOPBACK, allowed_media_domains=["allowed.test"])
    refused(conn, http_server.url("/img", host), PolicyError, clean_error)
    assert fake_dns.calls == []
    assert http_server.connections == 0


@pytest.mark.parametrize("host", ["allowed.test", "ALLOWED.TEST.", "Allowed.Test"])
def test_n4_exact_match_after_case_and_one_trailing_dot(
    host: str, http_server: Any, fake_dns: Any, make_connector: Any, respond: Any
) -> None:
    fake_dns.set("allowed.test", ["127.0.0.1"])
    http_server.route("/img", respond.reply(png()))
    conn = make_connector(LOOPBACK, allowed_media_domains=["allowed.test"])
    good(conn, http_server.url("/img", host))
    assert http_server.count("/img") == 1


@pytest.mark.parametrize(
    ("allowed", "host"),
    [("bücher.test", "xn--bcher-kva.test"), ("xn--bcher-kva.test", "BÜCHER.test")],
)
def test_n4_idna_forms_match_each_other(
    allowed: str, host: str, http_server: Any, fake_dns: Any, make_connector: Any, respond: Any
) -> None:
    fake_dns.set("xn--bcher-kva.test", ["127.0.0.1"])
    http_server.route("/img", respond.reply(png()))
    conn = make_connector(LOOPBACK, allowed_media_domains=[allowed])
    good(conn, http_server.url("/img", host))


def test_n4_allowlist_does_not_lift_the_address_rules(
    http_server: Any, fake_dns: Any, make_connector: Any, clean_error: Any
) -> None:
    fake_dns.set("allowed.test", ["127.0.0.1"])
    conn = make_connector(DEFAULT, allowed_media_domains=["allowed.test"])
    refused(conn, http_server.url("/img", "allowed.test"), PolicyError, clean_error, "127.0.0.1")
    assert http_server.connections == 0


# ---------------------------------------------------------------------------
# N5: redirects


@pytest.mark.parametrize(
    "location",
    [
        "http://10.0.0.1/img",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::ffff:127.0.0.2]/img",
        "http://2130706433/img",
        "http://127.0.0.2:{port}/img",
        "file:///etc/passwd",
        "gopher://127.0.0.1:{port}/_GET",
        "ftp://127.0.0.1:{port}/img",
        "data:image/png;base64,iVBORw0KGgo=",
        "dict://127.0.0.1:{port}/",
        "http://user@127.0.0.1:{port}/img",
        "http://127.0.0.1:{port}\\@evil.test/img",
        "http://[",
        "http://[::1",
    ],
)
def test_n5_redirect_to_a_forbidden_target_is_refused(
    location: str,
    http_server: Any,
    loopback_only: Any,
    make_connector: Any,
    clean_error: Any,
    respond: Any,
) -> None:
    http_server.route("/start", respond.redirect(location.format(port=http_server.port)))
    http_server.route("/img", respond.reply(png()))
    conn = make_connector(LOOPBACK)
    refused(conn, http_server.url("/start"), PolicyError, clean_error, "/etc/passwd")
    assert http_server.count("/start") == 1
    assert http_server.count("/img") == 0
    assert {a[0] for a in loopback_only.attempts} <= {"127.0.0.1"}
    good(conn, http_server.url("/img"))


def test_n5_redirect_to_a_name_resolving_inside_is_refused(
    http_server: Any,
    fake_dns: Any,
    loopback_only: Any,
    make_connector: Any,
    clean_error: Any,
    respond: Any,
) -> None:
    fake_dns.set("inside.test", ["192.168.0.10"])
    http_server.route("/start", respond.redirect("http://inside.test/admin"))
    conn = make_connector(LOOPBACK)
    refused(conn, http_server.url("/start"), PolicyError, clean_error, "192.168.0.10")
    assert fake_dns.lookups("inside.test") == 1
    assert {a[0] for a in loopback_only.attempts} == {"127.0.0.1"}


def test_n5_redirect_off_the_allowlist_is_refused(
    http_server: Any,
    fake_dns: Any,
    make_connector: Any,
    clean_error: Any,
    respond: Any,
    start_server: Any,
) -> None:
    other = start_server()
    fake_dns.set("allowed.test", ["127.0.0.1"])
    fake_dns.set("other.test", ["127.0.0.1"])
    other.route("/img", respond.reply(png()))
    http_server.route("/start", respond.redirect(other.url("/img", "other.test")))
    conn = make_connector(LOOPBACK, allowed_media_domains=["allowed.test"])
    refused(conn, http_server.url("/start", "allowed.test"), PolicyError, clean_error)
    assert other.connections == 0
    assert fake_dns.lookups("other.test") == 0


def test_n5_redirect_loop_and_long_chain_are_capped(
    http_server: Any, make_connector: Any, clean_error: Any, respond: Any
) -> None:
    http_server.route("/loop", respond.redirect("/loop"))
    for i in range(20):
        http_server.route(
            f"/r{i}", respond.redirect(f"/r{i + 1}", status=(301, 302, 303, 307, 308)[i % 5])
        )
    conn = make_connector(LOOPBACK.replace(max_redirects=3))
    refused(conn, http_server.url("/loop"), FetchError, clean_error)
    assert http_server.count("/loop") == 4
    refused(conn, http_server.url("/r0"), FetchError, clean_error)
    assert [r.path for r in http_server.requests[4:]] == ["/r0", "/r1", "/r2", "/r3"]


def test_n5_max_redirects_zero_disables_redirects(
    http_server: Any, make_connector: Any, clean_error: Any, respond: Any
) -> None:
    http_server.route("/start", respond.redirect("/img"))
    http_server.route("/img", respond.reply(png()))
    conn = make_connector(LOOPBACK.replace(max_redirects=0))
    refused(conn, http_server.url("/start"), FetchError, clean_error)
    assert http_server.count("/img") == 0


@pytest.mark.parametrize(
    ("start", "location"),
    [
        ("/a/b/start", "../img"),
        ("/a/start", "img"),
        ("/start", "/a/img"),
        ("/start", "//127.0.0.1:{port}/a/img"),
        ("/start", "?q=1"),
        ("/start", "  /a/img  "),
    ],
)
def test_n5_relative_location_is_resolved_against_the_hop(
    start: str, location: str, http_server: Any, make_connector: Any, respond: Any
) -> None:
    http_server.route(start, respond.redirect(location.format(port=http_server.port)))
    http_server.route("/a/img", respond.reply(png()))
    http_server.route("/img", respond.reply(png()))
    http_server.route("/start?q=1", respond.reply(png()))
    conn = make_connector(LOOPBACK)
    good(conn, http_server.url(start))
    assert len(http_server.requests) == 2


def test_n5_no_cookie_or_authorization_follows_a_redirect(
    http_server: Any, fake_dns: Any, make_connector: Any, start_server: Any, respond: Any
) -> None:
    other = start_server()
    fake_dns.set("one.test", ["127.0.0.1"])
    fake_dns.set("two.test", ["127.0.0.1"])
    cookie = [("Set-Cookie", "session=s3cr3t; Path=/")]
    http_server.route("/start", respond.redirect("/same", headers=cookie))
    http_server.route("/same", respond.redirect(other.url("/img", "two.test"), headers=cookie))
    other.route("/img", respond.reply(png()))
    conn = make_connector(LOOPBACK)
    good(conn, http_server.url("/start", "one.test"))
    seen = [*http_server.requests, *other.requests]
    assert [r.path for r in seen] == ["/start", "/same", "/img"]
    for request in seen:
        assert "cookie" not in request.headers
        assert "authorization" not in request.headers
        assert "proxy-authorization" not in request.headers
    # And nothing is remembered for the next request either.
    good(conn, http_server.url("/start", "one.test"))
    assert all("cookie" not in r.headers for r in http_server.requests)


# ---------------------------------------------------------------------------
# N6: DNS rebinding


def test_n6_one_resolution_per_hop_and_the_checked_answer_is_dialled(
    http_server: Any, fake_dns: Any, loopback_only: Any, make_connector: Any, respond: Any
) -> None:
    # A check-then-connect fetcher would look up twice and dial the second answer.
    fake_dns.set("rebind.test", ["127.0.0.1"], ["127.0.0.2"])
    http_server.route("/img", respond.reply(png(), close=True))
    conn = make_connector(LOOPBACK)
    good(conn, http_server.url("/img", "rebind.test"))
    assert fake_dns.lookups("rebind.test") == 1
    assert [a[0] for a in loopback_only.attempts] == ["127.0.0.1"]


def test_n6_a_new_connection_resolves_again_and_is_judged_again(
    http_server: Any,
    fake_dns: Any,
    loopback_only: Any,
    make_connector: Any,
    clean_error: Any,
    respond: Any,
) -> None:
    fake_dns.set("rebind.test", ["127.0.0.1"], ["127.0.0.2"])
    http_server.route("/img", respond.reply(png(), close=True))
    conn = make_connector(LOOPBACK)
    good(conn, http_server.url("/img", "rebind.test"))
    refused(conn, http_server.url("/img", "rebind.test"), PolicyError, clean_error, "127.0.0.2")
    assert fake_dns.lookups("rebind.test") == 2
    assert "127.0.0.2" not in {a[0] for a in loopback_only.attempts}
    assert http_server.count("/img") == 1


def test_n6_rebinding_between_redirect_hops_is_caught(
    http_server: Any,
    fake_dns: Any,
    loopback_only: Any,
    make_connector: Any,
    clean_error: Any,
    respond: Any,
) -> None:
    fake_dns.set("rebind.test", ["127.0.0.1"], ["10.9.8.7"])
    http_server.route("/start", respond.redirect("/img", headers=[("Connection", "close")]))
    http_server.route("/img", respond.reply(png()))
    conn = make_connector(LOOPBACK)
    # The redirect answer closes its connection, so the second hop dials afresh.
    with pytest.raises(PolicyError) as info:
        conn.fetch_image(http_server.url("/start", "rebind.test"))
    clean_error(info.value, "10.9.8.7")
    assert http_server.count("/img") == 0
    assert "10.9.8.7" not in {a[0] for a in loopback_only.attempts}


# ---------------------------------------------------------------------------
# N7: proxy variables


@pytest.mark.parametrize(
    "names",
    [
        ("HTTP_PROXY", "http_proxy"),
        ("HTTPS_PROXY", "https_proxy"),
        ("ALL_PROXY", "all_proxy"),
    ],
)
def test_n7_proxy_variables_are_ignored(
    names: tuple[str, ...],
    http_server: Any,
    monkeypatch: pytest.MonkeyPatch,
    make_connector: Any,
    respond: Any,
    start_server: Any,
) -> None:
    proxy = start_server()
    proxy.routes.clear()
    for name in names:
        monkeypatch.setenv(name, proxy.url("/"))
    monkeypatch.setenv("NO_PROXY", "")
    monkeypatch.setenv("no_proxy", "")
    http_server.route("/img", respond.reply(png()))
    conn = make_connector(LOOPBACK)
    good(conn, http_server.url("/img"))
    assert proxy.connections == 0
    assert http_server.count("/img") == 1


def test_n7_no_proxy_cannot_open_a_refused_target(
    http_server: Any, monkeypatch: pytest.MonkeyPatch, make_connector: Any, clean_error: Any
) -> None:
    monkeypatch.setenv("NO_PROXY", "*")
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    conn = make_connector(DEFAULT)
    refused(conn, http_server.url("/img"), PolicyError, clean_error)
    assert http_server.connections == 0


def test_n7_a_proxy_named_by_the_policy_is_used(
    http_server: Any,
    monkeypatch: pytest.MonkeyPatch,
    make_connector: Any,
    respond: Any,
    start_server: Any,
) -> None:
    proxy = start_server()
    target = http_server.url("/img")
    proxy.route(target, respond.reply(png()))
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    conn = make_connector(LOOPBACK.replace(proxy=proxy.url("")))
    good(conn, target)
    assert proxy.count(target) == 1
    assert http_server.connections == 0


# ---------------------------------------------------------------------------
# N8: other schemes and malformed references


@pytest.mark.parametrize(
    "url",
    [
        "ftp://127.0.0.1/img.png",
        "gopher://127.0.0.1:70/_x",
        "dict://127.0.0.1:11211/stats",
        "ws://127.0.0.1/img",
        "javascript:alert(1)",
        "jar:http://127.0.0.1/x.jar!/img",
        "netdoc:///etc/passwd",
        "s3://bucket/key",
        "",
        "img.png",
        "//127.0.0.1/img.png",
        "/etc/passwd",
        "C:\\Windows\\win.ini",
        "http:",
        "http:/x",
        "http://",
        "http:///img",
        "http://:80/img",
        "https://@/img",
        "http://.test/img",
        "http://a..test/img",
        "http://" + "a" * 300 + ".test/img",
        "http://a.test/" + "x" * 20000,
    ],
)
def test_n8_other_schemes_and_malformed_urls_are_policy_errors(
    url: str, loopback_only: Any, make_connector: Any, clean_error: Any
) -> None:
    conn = make_connector(DEFAULT)
    err = refused(conn, url, PolicyError, clean_error)
    assert err.http_status in (400, 403)
    assert loopback_only.attempts == []


def test_n8_file_url_without_a_root_is_refused(make_connector: Any, clean_error: Any) -> None:
    conn = make_connector(DEFAULT)
    err = refused(conn, "file:///etc/passwd", LocalMediaDisabledError, clean_error, "root:")
    assert isinstance(err, RuntimeError)


@pytest.mark.parametrize(
    ("url", "kind"),
    [
        ("data:", DecodeError),
        ("data:image/png", DecodeError),
        ("data:image/png;base64", DecodeError),
        ("data:image/png;base64,!!!not base64!!!", DecodeError),
        ("data:image/png;base64,AAAA", DecodeError),
        ("data:image/png;base64,iVBORw0KGgo=", DecodeError),
        ("data:image/png,%89PNG%0D%0A%1A%0A", DecodeError),
        ("data:imagepng;base64,AAAA", DecodeError),
        ("data:image/png;charset;base64,AAAA", DecodeError),
        ("data:" + "x/y;" * 400 + ",AAAA", DecodeError),
    ],
)
def test_n8_malformed_data_urls_are_decode_errors(
    url: str, kind: type[MediaError], make_connector: Any, clean_error: Any
) -> None:
    conn = make_connector(DEFAULT)
    refused(conn, url, kind, clean_error, "not base64", "iVBOR", "%89", "x/y;")


def test_n8_a_good_data_url_still_works(make_connector: Any) -> None:
    import base64

    conn = make_connector(DEFAULT)
    good(conn, "data:image/png;base64," + base64.b64encode(png()).decode())
    good(conn, "DATA:image/png;base64," + base64.b64encode(png()).decode())

"""Unit tests of the address rules and host normalisation in ``mediagate._policy``."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest

from mediagate import MediaPolicy, PolicyError
from mediagate._policy import (
    ALWAYS_REFUSED_NETWORKS,
    NON_PUBLIC_NETWORKS,
    check_address,
    normalize_host,
)

DEFAULT = MediaPolicy()

NON_PUBLIC = [
    "127.0.0.1",
    "127.255.255.255",
    "10.0.0.1",
    "172.16.0.1",
    "172.31.255.255",
    "192.168.0.1",
    "169.254.169.254",
    "100.64.0.1",
    "100.127.255.255",
    "192.0.0.1",
    "192.0.2.1",
    "198.18.0.1",
    "198.51.100.1",
    "203.0.113.1",
    "192.88.99.1",
    "240.0.0.1",
    "::1",
    "fd00::1",
    "fc00::1",
    "fe80::1",
    "fec0::1",
    "2001:db8::1",
    "100::1",
    "64:ff9b:1::1",
    # IPv4 embedded in IPv6, judged on the IPv4 inside
    "::ffff:127.0.0.1",
    "::ffff:10.0.0.1",
    "::ffff:0:7f00:1",
    "::127.0.0.1",
    "64:ff9b::7f00:1",
    "64:ff9b::a9fe:a9fe",
    "2002:7f00:1::1",
    "2002:c0a8:1::1",
    "2001:0:4136:e378:8000:63bf:80ff:fffe",
]
NEVER = ["0.0.0.0", "0.1.2.3", "224.0.0.1", "239.255.255.250", "255.255.255.255", "::", "ff02::1"]
PUBLIC = ["8.8.8.8", "1.1.1.1", "93.184.216.34", "2606:4700::1111", "64:ff9b::808:808"]


@pytest.mark.parametrize("address", NON_PUBLIC)
def test_non_public_addresses_are_refused_by_default(address: str) -> None:
    ip = ipaddress.ip_address(address)
    reason = check_address(ip, DEFAULT)
    assert reason is not None
    assert address not in reason
    assert not DEFAULT.allows_address(ip)
    assert check_address(ip, MediaPolicy(allow_private_networks=True)) is None


@pytest.mark.parametrize("address", NEVER)
def test_unspecified_broadcast_and_multicast_are_never_dialled(address: str) -> None:
    ip = ipaddress.ip_address(address)
    assert check_address(ip, DEFAULT) is not None
    assert check_address(ip, MediaPolicy(allow_private_networks=True)) is not None


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_are_allowed(address: str) -> None:
    assert check_address(ipaddress.ip_address(address), DEFAULT) is None


def test_allowed_networks_open_exactly_what_they_name() -> None:
    policy = MediaPolicy(allowed_networks=["127.0.0.1/32", "fd00::/64"])
    assert check_address(ipaddress.ip_address("127.0.0.1"), policy) is None
    assert check_address(ipaddress.ip_address("::ffff:127.0.0.1"), policy) is None
    assert check_address(ipaddress.ip_address("fd00::5"), policy) is None
    assert check_address(ipaddress.ip_address("127.0.0.2"), policy) is not None
    assert check_address(ipaddress.ip_address("fd00:0:0:1::5"), policy) is not None
    assert check_address(ipaddress.ip_address("10.0.0.1"), policy) is not None


def test_the_tables_are_networks_of_both_families() -> None:
    assert {net.version for net in NON_PUBLIC_NETWORKS} == {4, 6}
    assert {net.version for net in ALWAYS_REFUSED_NETWORKS} == {4, 6}


@pytest.mark.parametrize(
    ("host", "normal"),
    [
        ("Example.TEST", "example.test"),
        ("example.test.", "example.test"),
        ("bücher.test", "xn--bcher-kva.test"),
        ("BÜCHER.test.", "xn--bcher-kva.test"),
        ("[::1]", "[::1]"),
    ],
)
def test_normalize_host(host: str, normal: str) -> None:
    assert normalize_host(host) == normal


def test_normalize_host_drops_only_one_trailing_dot() -> None:
    assert normalize_host("a.test..") != "a.test"


@pytest.mark.parametrize("host", ["a" * 64 + ".test", "\ud800.test", "a..test"])
def test_unencodable_hosts_are_policy_errors(host: str) -> None:
    with pytest.raises(PolicyError):
        normalize_host(host)


def test_the_connector_keywords_build_the_one_policy(tmp_path: Any) -> None:
    from mediagate import MediaConnector

    policy = MediaPolicy(allowed_media_domains=["Images.Example.COM."])
    assert policy.allowed_media_domains == ("images.example.com",)
    with MediaConnector(policy=policy) as conn:
        assert conn.allowed_media_domains == frozenset({"images.example.com"})
        assert conn.allowed_local_media_path is None
    with MediaConnector(
        allowed_media_domains=["a.example"], allowed_local_media_path=str(tmp_path)
    ) as conn:
        assert conn.policy.allowed_media_domains == ("a.example",)
        assert conn.policy.allowed_local_media_path == str(tmp_path)
        assert conn.allowed_local_media_path == tmp_path.resolve()
    rooted = MediaPolicy(allowed_local_media_path=str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="does not exist"):
        MediaConnector(policy=rooted)


def test_secrets_in_the_policy_are_never_shown() -> None:
    policy = MediaPolicy(
        proxy="http://user:hunter2@proxy.internal:3128",
        storage_options={"s3": {"key": "AKIAEXAMPLE", "secret": "s3cr3t"}},
    )
    shown = repr(policy)
    assert "hunter2" not in shown and "user" not in shown and "s3cr3t" not in shown
    assert "AKIAEXAMPLE" not in shown and "proxy.internal:3128" in shown
    assert policy.storage_options["s3"]["secret"] == "s3cr3t"  # kept, only not shown


def test_transport_bounds_are_policy_fields() -> None:
    from mediagate import MediaConnector, PolicyError

    short = MediaPolicy(max_url_length=40)
    with MediaConnector(policy=short) as conn:
        with pytest.raises(PolicyError, match="max_url_length"):
            conn.fetch_image("https://images.example.com/" + "a" * 40 + ".png")
    for name in ("max_url_length", "max_connections"):
        for bad in (0, -1, 1.5, "8", True):
            with pytest.raises(ValueError, match=name):
                MediaPolicy(**{name: bad})

"""MediaPolicy and the pure rules that apply it: address classes, hosts, limits.

Nothing here does I/O. The fetcher, the local-file reader and the decoders ask these
functions for decisions; they never re-implement them.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, cast

from ._errors import PolicyError, TooLargeError

__all__ = [
    "ALWAYS_REFUSED_NETWORKS",
    "DEFAULT_DECODE_TIMEOUTS",
    "DEFAULT_ISOLATED",
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_DECODED_BYTES",
    "DEFAULT_RANGE_READS_ABOVE",
    "DEFAULT_TIMEOUTS",
    "MODALITIES",
    "NON_PUBLIC_NETWORKS",
    "MediaPolicy",
    "Modality",
    "check_address",
    "check_pixels",
    "normalize_host",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

Modality = Literal[
    "image", "audio", "video", "image_embedding", "audio_embedding", "video_embedding"
]
MODALITIES: tuple[Modality, ...] = (
    "image",
    "audio",
    "video",
    "image_embedding",
    "audio_embedding",
    "video_embedding",
)

MiB = 1024 * 1024

#: Per-modality byte budgets used when ``MediaPolicy.max_bytes`` is left unset.
#: The default of ``MediaPolicy.range_reads_above``: a smaller video is downloaded whole
#: (one request), a larger one read through range requests where its server allows.
DEFAULT_RANGE_READS_ABOVE = 32 * MiB

DEFAULT_MAX_BYTES: Mapping[str, int] = {
    "image": 32 * MiB,
    "audio": 64 * MiB,
    "video": 512 * MiB,
    "image_embedding": 256 * MiB,
    "audio_embedding": 256 * MiB,
    "video_embedding": 256 * MiB,
}

#: Per-modality total deadlines (seconds) used when ``MediaPolicy.timeout`` is left unset.
DEFAULT_TIMEOUTS: Mapping[str, float] = {
    "image": 10.0,
    "audio": 20.0,
    "video": 60.0,
    "image_embedding": 10.0,
    "audio_embedding": 10.0,
    "video_embedding": 10.0,
}

#: Per-modality budgets for the decoded output of one item (bytes), used when
#: ``MediaPolicy.max_decoded_bytes`` is left unset: an image's pixels (64 MP RGBA), a
#: video's returned frames (32 frames of 4K RGB fit), audio samples after resampling
#: (float32: ten minutes at 96 kHz). Tensors are budgeted by ``max_tensor_bytes``.
DEFAULT_MAX_DECODED_BYTES: Mapping[str, int] = {
    "image": 256 * MiB,
    "audio": 256 * MiB,
    "video": 1024 * MiB,
}

#: Per-modality decode deadlines (seconds of wall time for one item's decoding) used
#: when ``MediaPolicy.decode_timeout`` is left unset.
DEFAULT_DECODE_TIMEOUTS: Mapping[str, float] = {
    "image": 10.0,
    "audio": 20.0,
    "video": 30.0,
    "image_embedding": 10.0,
    "audio_embedding": 10.0,
    "video_embedding": 10.0,
}

#: The modalities whose native decoders run in isolated worker processes by default
#: (``MediaPolicy.isolation=None``): those where isolation costs at most 10% (see the
#: README's isolation table).
DEFAULT_ISOLATED: frozenset[str] = frozenset({"video"})

#: Never dialled, even with ``allow_private_networks``: they do not name one host.
ALWAYS_REFUSED_NETWORKS: tuple[IPNetwork, ...] = (
    ipaddress.ip_network("0.0.0.0/8"),
    ipaddress.ip_network("224.0.0.0/4"),
    ipaddress.ip_network("255.255.255.255/32"),
    ipaddress.ip_network("::/128"),
    ipaddress.ip_network("ff00::/8"),
)

#: Refused unless the policy allows private networks (or names a network holding the
#: address). ``ipaddress``'s ``is_global`` is consulted too; this table makes the rule
#: the same on every Python version and adds what it misses (deprecated site-local,
#: local-use NAT64, the 6to4 relay anycast, documentation and private-use prefixes).
NON_PUBLIC_NETWORKS: tuple[IPNetwork, ...] = tuple(
    ipaddress.ip_network(net)
    for net in (
        "10.0.0.0/8",  # private
        "100.64.0.0/10",  # carrier-grade NAT
        "127.0.0.0/8",  # loopback
        "169.254.0.0/16",  # link-local (cloud metadata lives here)
        "172.16.0.0/12",  # private
        "192.0.0.0/24",  # IETF protocol assignments
        "192.0.2.0/24",  # documentation
        "192.88.99.0/24",  # 6to4 relay anycast
        "192.168.0.0/16",  # private
        "198.18.0.0/15",  # benchmarking
        "198.51.100.0/24",  # documentation
        "203.0.113.0/24",  # documentation
        "240.0.0.0/4",  # reserved
        "::1/128",  # loopback
        "64:ff9b:1::/48",  # local-use NAT64
        "100::/64",  # discard-only
        "2001:db8::/32",  # documentation
        "3fff::/20",  # documentation
        "5f00::/16",  # segment routing
        "fc00::/7",  # unique-local
        "fe80::/10",  # link-local
        "fec0::/10",  # site-local (deprecated, still routed by some networks)
    )
)

# The well-known NAT64 prefix: the last 32 bits are the IPv4 address dialled.
_NAT64_WELL_KNOWN = ipaddress.IPv6Network("64:ff9b::/96")
# IPv4-translated addresses (SIIT, ::ffff:0:a.b.c.d).
_IPV4_TRANSLATED = ipaddress.IPv6Network("::ffff:0:0:0/96")


def _as_number(name: str, value: Any, *, integer: bool, allow_none: bool = False) -> Any:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"MediaPolicy.{name} must be a number, not {type(value).__name__}")
    if integer and not float(value).is_integer():
        raise ValueError(f"MediaPolicy.{name} must be a whole number, got {value}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"MediaPolicy.{name} must be a finite number >= 0, got {value}")
    return int(value) if integer else float(value)


def _as_networks(value: Any) -> tuple[IPNetwork, ...]:
    if isinstance(value, (str, ipaddress.IPv4Network, ipaddress.IPv6Network)):
        value = (value,)
    if not isinstance(value, Iterable):
        raise ValueError("MediaPolicy.allowed_networks must be a sequence of CIDR strings")
    networks = []
    for item in value:
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except (TypeError, ValueError) as exc:
            raise ValueError(
                f"MediaPolicy.allowed_networks: {item!r} is not a CIDR network"
            ) from exc
    return tuple(networks)


def _as_isolation(value: Any) -> frozenset[str] | None:
    if value is None:
        return None
    if value is True:
        return frozenset(MODALITIES)
    if value is False:
        return frozenset()
    if isinstance(value, str):
        value = (value,)
    if not isinstance(value, Iterable):
        raise ValueError("MediaPolicy.isolation must be a bool or a sequence of modalities")
    chosen = frozenset(value)
    unknown = sorted(str(m) for m in chosen - set(MODALITIES))
    if unknown:
        raise ValueError(
            f"MediaPolicy.isolation: unknown modality {unknown[0]!r} "
            f"(known: {', '.join(MODALITIES)})"
        )
    return chosen


def _without_credentials(url: str) -> str:
    """``url`` with any ``user:password@`` replaced by ``***@``."""
    scheme, sep, rest = url.partition("://")
    authority, slash, path = rest.partition("/")
    if "@" in authority:
        authority = "***@" + authority.rpartition("@")[2]
    return f"{scheme}{sep}{authority}{slash}{path}"


def _as_buckets(value: Any) -> tuple[str, ...]:
    """``allowed_buckets`` as sorted ``scheme://bucket`` strings (lower-case scheme)."""
    if isinstance(value, str):
        value = (value,)
    if not isinstance(value, Iterable):
        raise ValueError("MediaPolicy.allowed_buckets must be a sequence of 'scheme://bucket'")
    buckets = set()
    for item in value:
        scheme, sep, bucket = str(item).partition("://")
        if not sep or not scheme or not bucket or "/" in bucket.rstrip("/"):
            raise ValueError(
                f"MediaPolicy.allowed_buckets: {item!r} is not 'scheme://bucket' (e.g. s3://media)"
            )
        buckets.add(f"{scheme.lower()}://{bucket.rstrip('/')}")
    return tuple(sorted(buckets))


class _StorageOptions(dict[str, Any]):
    """Storage settings by scheme: compare by value, hash by identity-free content, and
    never show their values (they hold credentials)."""

    def __repr__(self) -> str:
        return "{" + ", ".join(f"{k!r}: {{...}}" for k in sorted(self)) + "}"

    def __hash__(self) -> int:  # type: ignore[override]
        return hash(tuple(sorted(self)))


def _as_storage_options(value: Any) -> Mapping[str, Mapping[str, Any]]:
    if not isinstance(value, Mapping):
        raise ValueError("MediaPolicy.storage_options must map a scheme to its options")
    options = _StorageOptions()
    for scheme, settings in value.items():
        if not isinstance(scheme, str) or not isinstance(settings, Mapping):
            raise ValueError(
                "MediaPolicy.storage_options must map a scheme (e.g. 's3') to a mapping of options"
            )
        options[scheme.lower()] = dict(settings)
    return options


@dataclass(frozen=True, repr=False)
class MediaPolicy:
    """What untrusted media references may make the server do.

    Set by the server, never by a request. Every limit is finite by default.

    Besides the network rules and the byte, pixel, frame, duration and tensor limits:
    ``max_decoded_bytes`` budgets one item's decoded output (unset: per modality, see
    ``DEFAULT_MAX_DECODED_BYTES``), ``decode_timeout`` is the wall-clock deadline for
    decoding one item (unset: ``DEFAULT_DECODE_TIMEOUTS``), ``isolation`` picks the
    modalities decoded in isolated worker processes (``True``: all, ``False``: none,
    unset: ``DEFAULT_ISOLATED``), and ``trust_proxy_dns`` lets a configured ``proxy``
    resolve target names without judging them here first (default ``False``).
    ``allowed_buckets`` names the object-storage buckets references may read
    (``["s3://media-in", "gs://frames"]``; none by default) and ``storage_options`` the
    settings of each storage scheme (``{"s3": {"endpoint_url": ..., "key": ...}}``),
    which only the server sets; their values are never shown in ``repr`` (nor a proxy's
    credentials). ``allowed_media_domains`` (exact hosts; empty allows any) and
    ``allowed_local_media_path`` (the folder ``file:`` URLs may read; empty disables them)
    are the connector keywords of the same names, which build a policy;
    ``max_url_length``, ``max_connections`` (the connection pool) and ``max_in_flight``
    (downloads in progress at once; the rest wait inside their deadline) bound the
    transport, and ``max_stream_packets`` the packets one video stream may hold (its
    index is built from them before any frame is decoded). An http(s) video of at least
    ``range_reads_above`` bytes (by the size its server declares; ``None`` disables it)
    whose server answers range requests is read through them, only the container index
    and the packets the sampled frames need, with at most ``max_range_requests`` requests
    of at most ``max_range_request_bytes`` each; every byte received counts against
    ``max_bytes``, and a video that needs a linear read is downloaded whole.

    Example::

        policy = MediaPolicy(max_pixels=16_000_000, timeout=5)
        strict = policy.replace(max_redirects=0)
        connector = MediaConnector(policy=strict)

    Raises:
        ValueError: a field has the wrong type or range (the message names it).
    """

    allow_private_networks: bool = False
    allowed_networks: Sequence[str | IPNetwork] = ()
    max_redirects: int = 5
    max_bytes: int | None = None
    timeout: float | None = None
    max_pixels: int = 64_000_000
    max_video_frames: int = 1024
    max_audio_seconds: float = 600.0
    max_tensor_bytes: int = 256 * MiB
    proxy: str | None = field(default=None)
    max_decoded_bytes: int | None = None
    decode_timeout: float | None = None
    isolation: bool | Sequence[str] | None = None
    trust_proxy_dns: bool = False
    allowed_buckets: Sequence[str] = ()
    storage_options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    allowed_media_domains: Sequence[str] = ()
    allowed_local_media_path: str = ""
    max_url_length: int = 16 * 1024
    max_connections: int = 64
    max_in_flight: int = 64
    max_stream_packets: int = 3_000_000
    range_reads_above: int | None = DEFAULT_RANGE_READS_ABOVE
    max_range_requests: int = 256
    max_range_request_bytes: int = 16 * MiB

    def __post_init__(self) -> None:
        for flag in ("allow_private_networks", "trust_proxy_dns"):
            if not isinstance(getattr(self, flag), bool):
                raise ValueError(f"MediaPolicy.{flag} must be a bool")
        object.__setattr__(self, "isolation", _as_isolation(self.isolation))
        object.__setattr__(
            self,
            "max_decoded_bytes",
            _as_number("max_decoded_bytes", self.max_decoded_bytes, integer=True, allow_none=True),
        )
        object.__setattr__(
            self,
            "decode_timeout",
            _as_number("decode_timeout", self.decode_timeout, integer=False, allow_none=True),
        )
        if self.decode_timeout == 0:
            raise ValueError("MediaPolicy.decode_timeout must be > 0 seconds")
        object.__setattr__(self, "allowed_buckets", _as_buckets(self.allowed_buckets))
        object.__setattr__(
            self,
            "allowed_media_domains",
            tuple(sorted(normalize_domains(self.allowed_media_domains))),
        )
        if not isinstance(self.allowed_local_media_path, (str, os.PathLike)):
            raise ValueError("MediaPolicy.allowed_local_media_path must be a path string")
        object.__setattr__(
            self, "allowed_local_media_path", os.fspath(self.allowed_local_media_path)
        )
        object.__setattr__(
            self,
            "range_reads_above",
            _as_number("range_reads_above", self.range_reads_above, integer=True, allow_none=True),
        )
        for name in (
            "max_url_length",
            "max_connections",
            "max_in_flight",
            "max_stream_packets",
            "max_range_requests",
        ):
            value = _as_number(name, getattr(self, name), integer=True)
            if value < 1:
                raise ValueError(f"MediaPolicy.{name} must be >= 1")
            object.__setattr__(self, name, value)
        value = _as_number("max_range_request_bytes", self.max_range_request_bytes, integer=True)
        if value < 64 * 1024:
            raise ValueError("MediaPolicy.max_range_request_bytes must be >= 65536")
        object.__setattr__(self, "max_range_request_bytes", value)
        object.__setattr__(self, "storage_options", _as_storage_options(self.storage_options))
        object.__setattr__(self, "allowed_networks", _as_networks(self.allowed_networks))
        for name in ("max_redirects", "max_pixels", "max_video_frames", "max_tensor_bytes"):
            object.__setattr__(self, name, _as_number(name, getattr(self, name), integer=True))
        object.__setattr__(
            self,
            "max_bytes",
            _as_number("max_bytes", self.max_bytes, integer=True, allow_none=True),
        )
        object.__setattr__(
            self, "timeout", _as_number("timeout", self.timeout, integer=False, allow_none=True)
        )
        object.__setattr__(
            self,
            "max_audio_seconds",
            _as_number("max_audio_seconds", self.max_audio_seconds, integer=False),
        )
        if self.timeout == 0:
            raise ValueError("MediaPolicy.timeout must be > 0 seconds")
        if self.max_video_frames < 1:
            raise ValueError("MediaPolicy.max_video_frames must be >= 1")
        if self.proxy is not None and not (
            isinstance(self.proxy, str) and self.proxy.startswith(("http://", "https://"))
        ):
            raise ValueError("MediaPolicy.proxy must be an http:// or https:// URL")

    @property
    def networks(self) -> tuple[IPNetwork, ...]:
        """``allowed_networks`` as parsed network objects."""
        return cast("tuple[IPNetwork, ...]", self.allowed_networks)

    def __repr__(self) -> str:
        shown = []
        for item in dataclasses.fields(self):
            value = getattr(self, item.name)
            if item.name == "proxy" and isinstance(value, str):
                value = _without_credentials(value)
            shown.append(f"{item.name}={value!r}")
        return f"MediaPolicy({', '.join(shown)})"

    def replace(self, **changes: Any) -> MediaPolicy:
        """A copy with ``changes`` applied (validated like the constructor)."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> MediaPolicy:
        """The policy described by ``MEDIAGATE_*`` environment variables."""
        from ._config import policy_fields_from_env

        fields = policy_fields_from_env(environ)
        try:
            return cls(**fields)
        except ValueError as exc:
            raise ValueError(f"{exc} (from the MEDIAGATE_* environment)") from exc

    def max_bytes_for(self, modality: str) -> int:
        """The byte budget for one item of ``modality``."""
        if self.max_bytes is not None:
            return self.max_bytes
        return DEFAULT_MAX_BYTES.get(modality, DEFAULT_MAX_BYTES["image"])

    def timeout_for(self, modality: str) -> float:
        """The total fetch deadline for one item of ``modality``, in seconds."""
        if self.timeout is not None:
            return self.timeout
        return DEFAULT_TIMEOUTS.get(modality, DEFAULT_TIMEOUTS["image"])

    def max_decoded_bytes_for(self, modality: str) -> int:
        """The budget for one item's decoded output of ``modality``, in bytes."""
        if modality.endswith("_embedding"):
            return self.max_tensor_bytes
        if self.max_decoded_bytes is not None:
            return self.max_decoded_bytes
        return DEFAULT_MAX_DECODED_BYTES.get(modality, DEFAULT_MAX_DECODED_BYTES["image"])

    def decode_timeout_for(self, modality: str) -> float:
        """The deadline for decoding one item of ``modality``, in seconds."""
        if self.decode_timeout is not None:
            return self.decode_timeout
        return DEFAULT_DECODE_TIMEOUTS.get(modality, DEFAULT_DECODE_TIMEOUTS["image"])

    def isolates(self, modality: str) -> bool:
        """Whether items of ``modality`` are decoded in an isolated worker process."""
        chosen = DEFAULT_ISOLATED if self.isolation is None else self.isolation
        return modality in cast("frozenset[str]", chosen)

    def check_size(self, size: int, modality: str, *, what: str = "payload") -> None:
        """Raise ``TooLargeError`` when ``size`` bytes exceed the modality's budget."""
        limit = self.max_bytes_for(modality)
        if size > limit:
            raise TooLargeError.over_max_bytes(f"{what} of {modality}", size, limit)

    def check_pixels(self, width: int, height: int, *, what: str = "image") -> None:
        """Raise ``TooLargeError`` when ``width * height`` exceeds ``max_pixels``."""
        check_pixels(width, height, self.max_pixels, what=what)

    def allows_address(self, address: IPAddress) -> bool:
        """Whether the fetcher may dial ``address``."""
        return check_address(address, self) is None


def check_pixels(width: int, height: int, max_pixels: int, *, what: str = "image") -> None:
    """Raise ``TooLargeError`` when ``width * height`` exceeds ``max_pixels``."""
    if width * height > max_pixels:
        raise TooLargeError(
            f"{what} of {width}x{height} pixels exceeds max_pixels={max_pixels} "
            f"(raise MediaPolicy.max_pixels to allow it)",
            limit="max_pixels",
            value=width * height,
            maximum=max_pixels,
        )


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    if address in _NAT64_WELL_KNOWN or address in _IPV4_TRANSLATED:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    # IPv4-compatible (deprecated ::a.b.c.d); ::1 and :: are judged as themselves.
    if int(address) >> 32 == 0 and int(address) > 1:
        return ipaddress.IPv4Address(int(address))
    return None


def check_address(address: IPAddress, policy: MediaPolicy) -> str | None:
    """Return why ``address`` may not be dialled under ``policy``, or ``None`` if it may.

    Every address class that is not globally routable is refused unless the policy
    allows private networks or names a network that contains it. IPv6 forms that
    embed an IPv4 address (mapped, translated, NAT64, 6to4, Teredo, compatible) are
    judged on the embedded address as well. The reason returned never names the address.
    """
    candidates: list[IPAddress] = [address]
    if isinstance(address, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            candidates.append(embedded)
    for net in policy.networks:
        if any(c.version == net.version and c in net for c in candidates):
            return None
    for candidate in candidates:
        for net in ALWAYS_REFUSED_NETWORKS:
            if candidate.version == net.version and candidate in net:
                return "an unspecified, broadcast or multicast address"
    if policy.allow_private_networks:
        return None
    for candidate in candidates:
        if not candidate.is_global or any(
            candidate.version == net.version and candidate in net for net in NON_PUBLIC_NETWORKS
        ):
            return "a non-public address (set allow_private_networks or allowed_networks)"
    return None


def normalize_host(host: str) -> str:
    """Lower-case, IDNA-encode and drop one trailing dot, for exact host matching.

    Raises:
        PolicyError: the host cannot be IDNA-encoded.
    """
    host = host.lower()
    if host.endswith("."):
        host = host[:-1]
    if host.startswith("[") and host.endswith("]"):
        return host
    try:
        return host.encode("idna").decode("ascii")
    except UnicodeError as exc:
        raise PolicyError("the URL's host is not a valid domain name", http_status=400) from exc


def normalize_domains(domains: Iterable[str] | None) -> frozenset[str]:
    """The allowlist in the form ``normalize_host`` gives."""
    if domains is None:
        return frozenset()
    if isinstance(domains, str):
        domains = [domains]
    return frozenset(normalize_host(d.strip()) for d in domains if d and d.strip())

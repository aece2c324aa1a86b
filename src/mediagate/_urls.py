"""Parsing of media references: http(s), data: and file: URLs. Pure; no I/O.

The http(s) parser refuses everything a second parser could read differently
(credentials, backslashes, whitespace and control characters, percent-encoded or
numeric-shorthand hosts) and returns one canonical ASCII string. That string is the one
judged by policy and the one sent: nothing re-encodes it on the way out.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import quote, unquote, unquote_to_bytes, urljoin, urlsplit

from ._errors import DecodeError, PolicyError, TooLargeError
from ._policy import normalize_host

__all__ = [
    "DataURL",
    "ParsedURL",
    "check_domain",
    "data_url_size",
    "decode_data_url",
    "parse_data_url",
    "parse_url",
    "redirect_target",
]

Scheme = Literal["http", "https", "data", "file"]
SCHEMES: tuple[Scheme, ...] = ("http", "https", "data", "file")

#: Longest http(s) or file: URL accepted (data: URLs are bounded by max_bytes instead).
MAX_URL_LENGTH = 16 * 1024

_CONTROL = re.compile(r"[\x00-\x20\x7f\\]")
_HOST_LABELS = re.compile(r"^[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?$")
# A label that C resolvers (inet_aton) and browsers read as a number: decimal, octal or hex.
_NUMBER_LABEL = re.compile(r"^(?:[0-9]+|0[xX][0-9a-fA-F]*)$")


def _ends_in_a_number(host: str) -> bool:
    """Whether ``host`` would be read as an IPv4 address in some spelling (its last label
    is a number), so anything but a canonical a.b.c.d is ambiguous."""
    labels = host.split(".")
    if len(labels) > 1 and labels[-1] == "":
        labels.pop()
    return bool(labels) and bool(_NUMBER_LABEL.match(labels[-1]))


# Characters left as they are when canonicalising a path or query (RFC 3986 reserved,
# unreserved and already-present percent escapes).
_SAFE_PATH = "/:@!$&'()*+,;=-._~%"
_SAFE_QUERY = _SAFE_PATH + "?"


def _refuse(message: str, status: int = 400) -> PolicyError:
    return PolicyError(message, http_status=status)


@dataclass(frozen=True)
class ParsedURL:
    """A validated reference. ``url`` is canonical: the string judged and sent."""

    #: ``http``, ``https``, ``data``, ``file``, or the scheme of a registered source.
    scheme: str
    url: str
    host: str = ""
    port: int | None = None
    path: str = ""

    @property
    def ip(self) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
        """The host as an address when it is an IP literal."""
        try:
            return ipaddress.ip_address(self.host.strip("[]"))
        except ValueError:
            return None

    @property
    def origin(self) -> tuple[str, str, int | None]:
        return (self.scheme, self.host, self.port)


#: Longest scheme name looked for; the search never scans (or copies) a long URL.
_MAX_SCHEME = 32


def _scheme_of(url: str) -> str:
    end = url.find(":", 0, _MAX_SCHEME + 1)
    if end <= 0:
        raise _refuse("the media URL has no scheme (use http, https, data or file)")
    return url[:end].lower()


def _canonical_host(raw: str) -> str:
    if not raw:
        raise _refuse("the URL has no host")
    if "%" in raw:
        raise _refuse("percent-encoded hosts are not accepted")
    if raw.startswith("["):
        if not raw.endswith("]"):
            raise _refuse("the URL's IPv6 host is malformed")
        try:
            address = ipaddress.IPv6Address(raw[1:-1])
        except ValueError as exc:
            raise _refuse("the URL's IPv6 host is malformed") from exc
        return f"[{address.compressed}]"
    host = normalize_host(raw)
    if _ends_in_a_number(host):
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            raise _refuse("numeric hosts must be written as four decimal parts (a.b.c.d)") from None
    labels = host.split(".")
    if len(host) > 253 or not all(_HOST_LABELS.match(label) for label in labels):
        raise _refuse("the URL's host is not a valid host name")
    return host


def _parse_http(url: str, scheme: Scheme) -> ParsedURL:
    if not url[len(scheme) + 1 :].startswith("//"):
        raise _refuse(f"{scheme} URLs must start with {scheme}://")
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        raise _refuse("credentials in media URLs are not accepted")
    host_part, port_part = netloc, ""
    if netloc.startswith("["):
        end = netloc.find("]")
        host_part, port_part = netloc[: end + 1], netloc[end + 1 :]
        if port_part and not port_part.startswith(":"):
            raise _refuse("the URL's host is malformed")
        port_part = port_part[1:]
    elif ":" in netloc:
        host_part, _, port_part = netloc.partition(":")
    host = _canonical_host(host_part)
    port: int | None = None
    if port_part:
        if not port_part.isdigit() or not 0 < int(port_part) < 65536:
            raise _refuse("the URL's port is not a number in 1..65535")
        port = int(port_part)
    path = quote(parts.path, safe=_SAFE_PATH) or "/"
    query = quote(parts.query, safe=_SAFE_QUERY)
    default_port = 443 if scheme == "https" else 80
    netloc_out = host if port in (None, default_port) else f"{host}:{port}"
    canonical = f"{scheme}://{netloc_out}{path}" + (f"?{query}" if query else "")
    return ParsedURL(scheme=scheme, url=canonical, host=host, port=port or default_port, path=path)


def _parse_file(url: str) -> ParsedURL:
    rest = url[len("file:") :]
    if rest.startswith("//"):
        authority, slash, path = rest[2:].partition("/")
        if authority.lower() not in ("", "localhost"):
            raise _refuse("file: URLs may not name a remote host")
        path = slash + path
    else:
        path = rest
    path = path.split("#", 1)[0].split("?", 1)[0]
    if not path.startswith("/"):
        raise _refuse("file: URLs must hold an absolute path")
    try:
        decoded = unquote(path, errors="strict")
        # A path the file system cannot name (a lone surrogate) is refused here, not
        # deep inside the reader.
        decoded.encode("utf-8")
    except UnicodeError as exc:
        raise _refuse("the file path is not valid percent-encoded UTF-8") from exc
    if "\x00" in decoded:
        raise _refuse("the file path contains a NUL character")
    canonical = quote(decoded, safe=_SAFE_PATH.replace("%", ""))
    return ParsedURL(scheme="file", url=f"file://{canonical}", path=decoded)


def parse_url(
    url: str, sources: Collection[str] = SCHEMES, *, max_length: int = MAX_URL_LENGTH
) -> ParsedURL:
    """Validate and canonicalise a media reference whose scheme is in ``sources`` (the
    schemes of registered sources).

    ``http``/``https`` and ``file`` URLs have parsers of their own; ``data:`` references
    are only recognised here (``parse_data_url`` splits them); any other scheme is
    parsed as ``scheme://authority/path`` with the same refusals of credentials, control
    characters and backslashes.

    Raises:
        PolicyError: an unsupported scheme, or a malformed or ambiguous URL.
    """
    if not isinstance(url, str):
        raise _refuse("the media URL must be a string")
    scheme = _scheme_of(url)
    if scheme not in sources:
        known = ", ".join(sorted(sources))
        raise _refuse(f"unsupported URL scheme (use {known})", status=400)
    if scheme == "data":
        return ParsedURL(scheme="data", url=url)
    if len(url) > max_length:
        raise _refuse(
            f"the URL is longer than {max_length} characters (MediaPolicy.max_url_length)"
        )
    if _CONTROL.search(url):
        raise _refuse("the URL contains whitespace, control characters or a backslash")
    if scheme == "file":
        return _parse_file(url)
    if scheme not in SCHEMES:
        return _parse_source(url, scheme)
    try:
        # A non-ASCII host or path is canonicalised (IDNA, percent escapes), never sent raw.
        return _parse_http(url, scheme)
    except (UnicodeError, ValueError) as exc:
        if isinstance(exc, PolicyError):
            raise
        raise _refuse("the URL is malformed") from exc


def _parse_source(url: str, scheme: str) -> ParsedURL:
    """A ``scheme://authority/path`` reference for a registered source."""
    if not url[len(scheme) + 1 :].startswith("//"):
        raise _refuse(f"{scheme} URLs must start with {scheme}://")
    parts = urlsplit(url)
    if "@" in parts.netloc:
        raise _refuse("credentials in media URLs are not accepted")
    if parts.query or parts.fragment:
        raise _refuse(f"{scheme} URLs take no query or fragment")
    host = parts.netloc.lower()
    if not host:
        raise _refuse("the URL has no host")
    return ParsedURL(
        scheme=scheme, url=f"{scheme}://{host}{parts.path}", host=host, path=parts.path
    )


def check_domain(parsed: ParsedURL, allowed: frozenset[str]) -> None:
    """Refuse an http(s) host that is not on a non-empty allowlist (exact match).

    Raises:
        PolicyError: the host is not allowed.
    """
    if allowed and parsed.scheme in ("http", "https") and parsed.host not in allowed:
        raise PolicyError("the URL's host is not in allowed_media_domains")


def redirect_target(current: ParsedURL, location: str) -> ParsedURL:
    """The next hop of a redirect from ``current`` to ``location`` (maybe relative).

    Raises:
        PolicyError: the target is not an http(s) URL or fails URL validation.
    """
    if _CONTROL.search(location.strip(" \t")):
        raise _refuse("the redirect target contains control characters or a backslash")
    try:
        joined = urljoin(current.url, location.strip(" \t"))
    except ValueError as exc:  # e.g. an unbalanced "[" in the authority
        raise _refuse("the redirect target is malformed") from exc
    target = parse_url(joined)
    if target.scheme not in ("http", "https"):
        raise PolicyError("redirects may only lead to http or https URLs")
    return target


# ---------------------------------------------------------------------------
# data: URLs (RFC 2397)


#: Longest ``data:`` header (media type and parameters) accepted.
_MAX_DATA_HEADER = 1024


@dataclass(frozen=True)
class DataURL:
    """A split ``data:`` URL; ``payload`` is still encoded.

    The payload is not copied out of the URL until it is asked for, so a URL far over
    the byte budget is refused from ``payload_length`` without a second copy in memory.
    """

    media_type: str
    params: tuple[tuple[str, str], ...]
    is_base64: bool
    source: str = field(repr=False)
    start: int = field(repr=False)

    @property
    def payload_length(self) -> int:
        """How many characters the (still encoded) payload has."""
        return len(self.source) - self.start

    @property
    def payload(self) -> str:
        """The encoded payload (a copy out of the URL)."""
        return self.source[self.start :]

    def __repr__(self) -> str:
        return (
            f"DataURL(media_type={self.media_type!r}, is_base64={self.is_base64}, "
            f"payload_chars={self.payload_length})"
        )


def parse_data_url(url: str) -> DataURL:
    """Split ``data:[<mediatype>][;param=value]*[;base64],<payload>``.

    Raises:
        DecodeError: the URL has no comma, or a malformed media type.
    """
    if _scheme_of(url) != "data":
        raise _refuse("not a data: URL")
    start = len("data:")
    comma = url.find(",", start, start + _MAX_DATA_HEADER + 1)
    if comma < 0:
        if len(url) > start + _MAX_DATA_HEADER:
            raise DecodeError("malformed data: URL (header too long)", http_status=400)
        raise DecodeError(
            "malformed data: URL (missing ',' separator before the payload)", http_status=400
        )
    header = url[start:comma]
    pieces = [p.strip() for p in unquote(header).split(";")]
    media_type = pieces[0].lower() or "text/plain"
    if "/" not in media_type or _CONTROL.search(media_type):
        raise DecodeError("malformed data: URL (bad media type)", http_status=400)
    is_base64 = False
    params: list[tuple[str, str]] = []
    for i, piece in enumerate(pieces[1:], start=1):
        if piece.lower() == "base64" and i == len(pieces) - 1:
            is_base64 = True
        elif "=" in piece:
            key, _, value = piece.partition("=")
            params.append((key.strip().lower(), value.strip()))
        elif piece:
            raise DecodeError("malformed data: URL (bad parameter)", http_status=400)
    return DataURL(media_type, tuple(params), is_base64, url, comma + 1)


_PERCENT_ESCAPE = re.compile(r"%[0-9A-Fa-f]{2}")


def data_url_size(data: DataURL) -> int:
    """An upper bound of the decoded payload's size, computed from its length.

    Only well-formed ``%XX`` escapes shrink the estimate: a stray ``%`` decodes to
    itself, so a payload of ``%`` characters cannot pass for an empty one.
    """
    escapes = 0
    if data.source.find("%", data.start) >= 0:
        escapes = _PERCENT_ESCAPE.subn("", data.payload)[1]
    encoded = data.payload_length - 2 * escapes
    return encoded // 4 * 3 + 3 if data.is_base64 else encoded


def check_data_url_size(data: DataURL, limit: int) -> None:
    """Raise ``TooLargeError`` when the payload would decode to more than ``limit``.

    Judged from the payload's length alone: whatever its escapes, every four
    characters decode to at least one byte, so a longer payload is refused unscanned.
    """
    size = data.payload_length // 4
    if size <= limit + 3:
        size = data_url_size(data)
    if size > limit + 3:
        raise TooLargeError.over_max_bytes("the data: URL payload", size, limit, estimate=True)


def decode_data_url(data: DataURL, limit: int) -> bytes:
    """Decode a non-base64 (percent-encoded) payload, size-checked first.

    Raises:
        TooLargeError: the payload is larger than ``limit``.
    """
    check_data_url_size(data, limit)
    decoded = unquote_to_bytes(data.payload)
    if len(decoded) > limit:
        raise TooLargeError.over_max_bytes("the data: URL payload", len(decoded), limit)
    return decoded


def base64_payload(data: DataURL) -> str:
    """The base64 text of a ``;base64`` payload, percent escapes undone."""
    payload = data.payload
    return unquote(payload) if "%" in payload else payload

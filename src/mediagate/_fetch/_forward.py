"""The proxy's one upstream: requests forwarded to the server the operator configured.

Not a media fetch: the upstream is a fixed URL of the operator's, never one a client
names, so it is not judged by the media policy. Bodies come back as they are (no
decompression), chunk by chunk, so a streamed (SSE) answer reaches the client as the
upstream writes it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp

from .._errors import FetchError, FetchTimeout

__all__ = ["Upstream", "UpstreamReply"]

#: Headers that belong to one connection, never forwarded (RFC 9110 section 7.6.1).
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
    }
)


@dataclass
class UpstreamReply:
    """The upstream's answer: status, headers to pass on, and the body as it arrives."""

    status: int
    headers: dict[str, str]
    _response: Any

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body, chunk by chunk as the upstream sends it."""
        try:
            async for chunk in self._response.content.iter_any():
                yield chunk
        except aiohttp.ClientError as exc:
            raise FetchError("the upstream closed the response early") from exc

    def release(self) -> None:
        self._response.release()


def passed_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """``headers`` without the hop-by-hop ones."""
    return {name: value for name, value in headers.items() if name.lower() not in HOP_BY_HOP}


class Upstream:
    """Forwards requests to ``base_url`` (``http://127.0.0.1:8080``); one connection pool.

    Args:
        base_url: scheme, host and port (and an optional path prefix) of the upstream.
        timeout: seconds to wait for the upstream to start answering.
    """

    def __init__(self, base_url: str, *, timeout: float = 600.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                auto_decompress=False,
                trust_env=False,
                cookie_jar=aiohttp.DummyCookieJar(),
                timeout=aiohttp.ClientTimeout(
                    total=None, sock_connect=30.0, sock_read=self.timeout
                ),
            )
        return self._session

    async def send(
        self, method: str, path: str, headers: Mapping[str, str], body: bytes
    ) -> UpstreamReply:
        """Send one request; the reply's body is read by the caller (then ``release``).

        Raises:
            FetchError: the upstream cannot be reached (502).
            FetchTimeout: it did not answer in time (504).
        """
        try:
            # The server half has already undone any Content-Encoding of the body.
            sent = passed_headers(headers)
            sent = {
                name: value for name, value in sent.items() if name.lower() != "content-encoding"
            }
            response = await self._client().request(
                method,
                self.base_url + path,
                headers=sent,
                data=body,
                allow_redirects=False,
            )
        except TimeoutError as exc:
            raise FetchTimeout("the upstream did not answer in time") from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise FetchError("the upstream cannot be reached") from exc
        return UpstreamReply(response.status, passed_headers(response.headers), response)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

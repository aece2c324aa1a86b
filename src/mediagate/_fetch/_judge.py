"""Judge a reference's target address for transports that are not the built-in fetcher.

A caller-supplied ``connection`` dials by itself, so the target is judged here before
the reference is handed to it: an IP-literal host directly, a name by resolving it
once (``socket.getaddrinfo``) and judging every address returned. Such a transport
must dial an address it was given, or resolve names itself to the same answer; one
that cannot pin the address is open to a name that changes its answer between this
check and its own lookup, and should refuse names.
"""

from __future__ import annotations

import socket

from .._errors import FetchError, PolicyError
from .._policy import MediaPolicy
from .._urls import ParsedURL

__all__ = ["judge_target"]


def _judge(address: str, policy: MediaPolicy) -> None:
    from ._http import judge_address

    judge_address(address, policy)


def judge_target(ref: ParsedURL, policy: MediaPolicy) -> None:
    """Refuse ``ref`` when its host is, or resolves to, an address the policy refuses.

    Blocking (name resolution): call it off any event loop.

    Raises:
        PolicyError: an address is refused (the message never names it).
        FetchError: the name does not resolve.
    """
    if ref.ip is not None:
        _judge(str(ref.ip), policy)
        return
    host = ref.host
    if not host:
        raise PolicyError("the URL has no host", http_status=400)
    try:
        infos = socket.getaddrinfo(host, ref.port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise FetchError("the URL's host name could not be resolved") from exc
    if not infos:
        raise FetchError("the URL's host name could not be resolved")
    for *_, sockaddr in infos:
        _judge(str(sockaddr[0]), policy)

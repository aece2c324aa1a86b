"""Keep the suite's process on loopback: names other than loopback ones are not resolved,
and connections to addresses other than loopback ones are refused, before anything leaves
the machine. Every refusal is recorded so the report can name what a test tried to reach.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
from collections.abc import Callable
from typing import Any

__all__ = ["OfflineGuard", "is_loopback_host"]

_LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})


def is_loopback_host(host: object) -> bool:
    """Whether ``host`` (a name, an address, ``None`` for "this machine") stays local."""
    if host is None:
        return True
    if isinstance(host, bytes):
        host = host.decode("ascii", "replace")
    if not isinstance(host, str):
        return False
    text = host.strip("[]").split("%", 1)[0].lower()
    if text in _LOOPBACK_NAMES or text.endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return False
    return address.is_loopback or address.is_unspecified


class OfflineGuard:
    """Patches ``socket.getaddrinfo``, ``socket.gethostbyname`` and ``socket.socket``'s
    ``connect``/``connect_ex`` for the life of the process (``install``)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._refused: list[str] = []
        self._installed = False

    def refused(self) -> list[str]:
        """What was refused so far (``"resolve NAME"`` or ``"connect HOST:PORT"``)."""
        with self._lock:
            return list(self._refused)

    def take(self) -> list[str]:
        """What was refused since the last ``take``."""
        with self._lock:
            taken, self._refused = self._refused, []
            return taken

    def _note(self, what: str) -> None:
        with self._lock:
            self._refused.append(what)

    def install(self) -> None:
        """Put the guards in place (once)."""
        if self._installed:
            return
        self._installed = True
        real_getaddrinfo = socket.getaddrinfo
        real_gethostbyname = socket.gethostbyname
        real_connect = socket.socket.connect
        real_connect_ex = socket.socket.connect_ex

        def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
            if not is_loopback_host(host):
                self._note(f"resolve {host}")
                raise socket.gaierror(socket.EAI_NONAME, f"offline suite: {host} not resolved")
            return real_getaddrinfo(host, port, *args, **kwargs)

        def gethostbyname(host: str) -> str:
            if not is_loopback_host(host):
                self._note(f"resolve {host}")
                raise socket.gaierror(socket.EAI_NONAME, f"offline suite: {host} not resolved")
            return real_gethostbyname(host)

        def checked(real: Callable[..., Any]) -> Callable[..., Any]:
            def connect(sock: socket.socket, address: Any) -> Any:
                if sock.family in (socket.AF_INET, socket.AF_INET6):
                    host, port = address[0], address[1]
                    if not is_loopback_host(host):
                        self._note(f"connect {host}:{port}")
                        raise ConnectionRefusedError(
                            f"offline suite: connection to {host}:{port} refused"
                        )
                return real(sock, address)

            return connect

        socket.getaddrinfo = getaddrinfo
        socket.gethostbyname = gethostbyname
        socket.socket.connect = checked(real_connect)  # type: ignore[method-assign]
        socket.socket.connect_ex = checked(real_connect_ex)  # type: ignore[method-assign]

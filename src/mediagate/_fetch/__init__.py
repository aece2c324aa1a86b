"""The only code that opens sockets: pinned resolution, redirects, caps, one deadline."""

from ._http import HttpFetcher

__all__ = ["HttpFetcher"]

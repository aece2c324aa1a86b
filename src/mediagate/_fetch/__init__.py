"""The only code that opens sockets: pinned resolution, redirects, caps, one deadline."""

from ._http import HttpFetcher
from ._loop import run_async as run_on_fetch_loop

__all__ = ["HttpFetcher", "run_on_fetch_loop"]

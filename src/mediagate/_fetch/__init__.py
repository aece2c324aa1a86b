"""The only code that opens sockets: pinned resolution, redirects, caps, one deadline."""

from ._http import HttpFetcher, judge_address
from ._judge import judge_target
from ._loop import run_async as run_on_fetch_loop

__all__ = ["HttpFetcher", "judge_address", "judge_target", "run_on_fetch_loop"]

"""The only code that opens sockets: pinned resolution, redirects, caps, one deadline."""

from ._http import HttpFetcher, downloads_in_flight, judge_address
from ._judge import judge_target
from ._loop import run_async as run_on_fetch_loop
from ._ranges import InconsistentRanges, RangeOptions, RemoteFile, open_ranged

__all__ = [
    "HttpFetcher",
    "InconsistentRanges",
    "RangeOptions",
    "RemoteFile",
    "downloads_in_flight",
    "judge_address",
    "judge_target",
    "open_ranged",
    "run_on_fetch_loop",
]

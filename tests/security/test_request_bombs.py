"""B8: a whole request whose parts together exceed its budget is refused at the part that
crossed it, with memory held to about one part (measured in a child process)."""

from __future__ import annotations

import pytest

from security.childproc import run_limited
from security.request_bombs import SIDE, MiB, flat_pngs


@pytest.fixture(scope="module")
def pngs() -> list[str]:
    return flat_pngs(4)


@pytest.mark.parametrize("errors", ["raise", "collect"])
def test_parts_over_the_request_decoded_budget_stop_at_one_part_of_memory(
    pngs: list[str], errors: str
) -> None:
    one_part = SIDE * SIDE * 3  # 108 MB
    outcome = run_limited(
        "security.request_bombs:resolve_parts",
        pngs,
        160 * MiB,  # room for one part, not two
        errors,
        address_space=1536 * MiB,
        timeout=60,
    )
    assert not outcome.died and not outcome.timed_out
    assert outcome.media_error, f"{outcome.error}: {outcome.message}"
    assert outcome.error == "TooLargeError"
    assert outcome.limit == "request_decoded_bytes"
    assert outcome.message.startswith("messages[0].content[")
    # Four parts decoded would be 432 MB; the request holds one and refuses the rest.
    assert outcome.peak_rss_growth < one_part + 120 * MiB

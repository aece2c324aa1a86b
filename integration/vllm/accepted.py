"""vLLM tests whose failure against mediagate is a deliberate refusal, with the reason.

Keys are pytest node ids under the suite folder (``tests/multimodal/media/...``). Only a
refusal mediagate documents as intended belongs here; any other failure is a gap and fails
``make test-vllm``. ``run.py`` also flags an entry whose test now passes or no longer
exists, so the list cannot go stale silently.
"""

from __future__ import annotations

__all__ = ["ACCEPTED"]

_CONNECTOR = "tests/multimodal/media/test_connector.py"

_AMBIGUOUS_URL = (
    "mediagate refuses every URL containing whitespace, a control character or a "
    "backslash before parsing it (src/mediagate/_urls.py, module docstring and "
    "`_CONTROL`; README 'No ambiguous URLs'): a PolicyError (a ValueError)"
)

#: Node id -> why the failure is intended.
ACCEPTED: dict[str, str] = {
    f"{_CONNECTOR}::test_ssrf_bypass_backslash_in_url": (
        f"{_AMBIGUOUS_URL}. vLLM normalises `http://127.0.0.1:PORT\\@example.com/...` "
        "and sends it to 127.0.0.1 (the test expects the HTTP 404 that comes back); "
        "mediagate sends nothing."
    ),
    f"{_CONNECTOR}::test_ssrf_bypass_backslash_disallowed_domain": (
        f"{_AMBIGUOUS_URL}. The URL is refused as the test requires (a ValueError before "
        "any request), but for its backslash, so vLLM's 'allowed domains' wording is absent."
    ),
    f"{_CONNECTOR}::test_fetch_image_local_files_with_space_in_name"
    "[2560px-Gfp-wisconsin-madison-the-nature-boardwalk.jpg]": (
        f"{_AMBIGUOUS_URL}; a space is whitespace, in file: URLs too, so "
        "`file:///tmp/.../file name with space.jpg` is refused where vLLM reads the file "
        "(a client must percent-encode the space)."
    ),
}

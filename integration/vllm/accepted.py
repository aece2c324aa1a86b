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

_ERRORS = "tests/multimodal/media/test_unprocessable_entity_error.py"

_PRIVATE_CACHE = (
    "the test drives vLLM's private download-cache methods (`_put_cached_bytes`, "
    "`_get_cached_bytes`, `_media_cache_path`, `_media_cache_dir`...), which belong to "
    "vLLM's own connector. mediagate's connector caches through `MediaCache` "
    "(MEDIAGATE_MEDIA_CACHE, else VLLM_MEDIA_CACHE), keyed by the rules that judged "
    "each fetch; its behaviour is tested in tests/test_cache.py"
)

_PATCHED_CONNECTION = (
    "the test patches `connector.connection.get_bytes`/`async_get_bytes`, vLLM's own "
    "HTTP client, to simulate upstream failures. mediagate never fetches through it "
    "(every fetch goes through its guarded fetcher, which judges each hop), so the patch "
    "has nothing to replace. The same failures against a real loopback server are "
    "mapped as vLLM maps them: an upstream 4xx is a VLLMUnprocessableEntityError (422, "
    "parameter image_url), 408/429 and 5xx stay transient (tests/test_vllm_interface.py, "
    "tests/test_connector.py::test_upstream_errors)"
)

_UNKNOWN_OPTION = (
    "mediagate refuses an option no backend takes, naming every option there is (an "
    "OptionError, a ValueError, HTTP 400), where vLLM hands any extra key to the loader, "
    "which ignores it: no vLLM loader reads `requested_fps`. The same video loads with "
    "the test's `max_duration` alone (tests/media/video)"
)

_DYNAMIC_ASSETS = (
    "https://127.0.0.1/multimodal_asset/slow_traffic_small.mp4",
    "https://127.0.0.1/multimodal_asset/vtest.avi",
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
    f"{_CONNECTOR}::test_fetch_image_data_url_malformed": (
        "mediagate reads data: URLs by RFC 2397 with either encoding (SPEC: `;base64` and "
        "percent-encoded payloads), so `data:text/plain,hello` is decoded and then refused "
        "as not an image (a DecodeError, a ValueError, HTTP 415) where vLLM raises "
        "NotImplementedError for any payload that is not base64. The missing-',' case of "
        "the same test is refused with vLLM's wording."
    ),
    **{
        f"{_CONNECTOR}::test_fetch_video_http_with_dynamic_loader[{fps}-{duration}-{url}]": (
            _UNKNOWN_OPTION
        )
        for fps in (2, 24)
        for duration in (1, 60, 1800)
        for url in _DYNAMIC_ASSETS
    },
    **{
        f"{_CONNECTOR}::{name}": _PRIVATE_CACHE
        for name in (
            "test_cache_put_and_get",
            "test_cache_ttl_expiry",
            "test_cache_lru_eviction",
            "test_cache_ttl_eviction_during_write",
            "test_put_cached_bytes_missing_dir",
            "test_get_cached_bytes_file_deleted_before_read",
        )
    },
    **{
        f"{_ERRORS}::TestMediaConnectorErrorHandling::{name}": _PATCHED_CONNECTION
        for name in (
            "test_fetch_image_async_404",
            "test_fetch_image_async_dns_error",
            "test_fetch_image_async_500_preserved",
            "test_fetch_image_404",
            "test_fetch_image_connection_error",
            "test_fetch_image_download_size_limit_error",
            "test_fetch_image_request_download_size_limit_error",
        )
    },
}

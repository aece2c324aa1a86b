"""Whole requests whose parts are each acceptable and together too much, resolved in a
child process under an address-space limit (``security.childproc``)."""

from __future__ import annotations

import base64
import io

from PIL import Image

from mediagate import MediaConnector, RequestLimits, resolve_chat_request

MiB = 1024 * 1024

#: Side of each part's picture: 6000 x 6000 RGB is 108 MB decoded, from about 100 KB.
SIDE = 6000


def flat_pngs(count: int) -> list[str]:
    """``count`` distinct flat-colour PNGs as data URLs (distinct, so none is shared)."""
    urls = []
    for shade in range(count):
        out = io.BytesIO()
        Image.new("RGB", (SIDE, SIDE), (shade, 0, 0)).save(out, format="PNG", compress_level=9)
        urls.append("data:image/png;base64," + base64.b64encode(out.getvalue()).decode())
    return urls


def resolve_parts(urls: list[str], max_decoded_bytes: int, errors: str) -> None:
    """Resolve one request with a part per URL; raise what a server would answer."""
    request = {
        "messages": [
            {
                "role": "user",
                "content": [{"type": "image_url", "image_url": {"url": url}} for url in urls],
            }
        ]
    }
    with MediaConnector(max_workers=2) as connector:
        resolved = resolve_chat_request(
            request,
            connector,
            limits=RequestLimits(max_decoded_bytes=max_decoded_bytes),
            errors=errors,  # type: ignore[arg-type]
        )
    failed = [item for item in resolved.items if item.error is not None]
    if failed:
        raise failed[0].error  # type: ignore[misc]

"""The proxy's added latency: one 1920x1080 JPEG by URL, beyond resolving it.

Three timings per run, taken back to back with a fresh image URL each time:

* ``resolve``: ``resolve_chat_request`` of the request in this process (the part the
  proxy cannot avoid: fetch and decode);
* ``direct``: the client posting the already-inlined request (the JPEG as a base64
  ``data:`` URL) straight to the upstream;
* ``proxy``: the client posting the URL request to ``mediagate proxy``, which resolves
  it, re-encodes the image, forwards and streams the answer back.

The proxy's overhead of a run is ``proxy - direct - resolve``: what it adds beyond the
resolution itself and the upstream round trip (parsing, re-encoding, the JSON rewrite,
the extra hop). The table shows its median; the target is under 15 ms. The upstream is
a minimal HTTP server on 127.0.0.1 that reads the body and answers a fixed completion;
the client is ``urllib`` with a fresh connection per request, as on both paths.
"""

from __future__ import annotations

import base64
import http.server
import json
import statistics
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import Result

__all__ = ["TARGET", "run"]

TARGET = "p50 < 15 ms"

_REPLY = json.dumps(
    {
        "id": "c",
        "object": "chat.completion",
        "created": 1,
        "model": "m",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}
        ],
    }
).encode()


class _Upstream(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(_REPLY)))
        self.end_headers()
        self.wfile.write(_REPLY)

    def log_message(self, format: str, *args: Any) -> None:
        return None


def _request(url: str) -> dict[str, Any]:
    parts = [{"type": "text", "text": "What is in the picture?"}]
    image = {"type": "image_url", "image_url": {"url": url}}
    return {"model": "m", "messages": [{"role": "user", "content": [*parts, image]}]}


def _post(base: str, body: dict[str, Any]) -> float:
    data = json.dumps(body).encode()
    request = urllib.request.Request(
        f"{base}/v1/chat/completions", data=data, headers={"Content-Type": "application/json"}
    )
    start = time.perf_counter()
    with urllib.request.urlopen(request, timeout=60) as reply:
        reply.read()
    return time.perf_counter() - start


def run(quick: bool = False) -> list[Result]:
    from bench_requests import _media
    from mediagate import MediaConnector, MediaPolicy, resolve_chat_request
    from mediagate._loopback import LoopbackServer, Route
    from mediagate._proxy import ProxyConfig, ProxyServer

    jpeg = _media()[0].read_bytes()
    inlined = _request("data:image/jpeg;base64," + base64.b64encode(jpeg).decode())
    upstream = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Upstream)
    upstream.daemon_threads = True
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    upstream_url = f"http://127.0.0.1:{upstream.server_address[1]}"
    connector = MediaConnector(policy=MediaPolicy(allowed_networks=["127.0.0.1/32"]))
    runs = 10 if quick else 40
    overheads: list[float] = []
    stages: dict[str, list[float]] = {"resolve": [], "direct": [], "proxy": []}
    try:
        with LoopbackServer() as media, ProxyServer(ProxyConfig(upstream_url), connector) as proxy:
            for index in range(-3, runs):  # three warm-up rounds
                media.routes[f"/r{index}.jpg"] = Route(jpeg)
                media.routes[f"/p{index}.jpg"] = Route(jpeg)
                start = time.perf_counter()
                resolve_chat_request(_request(media.url(f"/r{index}.jpg")), connector)
                resolve = time.perf_counter() - start
                direct = _post(upstream_url, inlined)
                via = _post(proxy.url, _request(media.url(f"/p{index}.jpg")))
                if index >= 0:
                    overheads.append(via - direct - resolve)
                    for name, value in (("resolve", resolve), ("direct", direct), ("proxy", via)):
                        stages[name].append(value)
    finally:
        upstream.shutdown()
        upstream.server_close()
        connector.close()
    medians = {name: statistics.median(values) * 1e3 for name, values in stages.items()}
    note = (
        f"median per run over {runs} runs: resolve {medians['resolve']:.1f} ms, direct to the "
        f"upstream {medians['direct']:.1f} ms, through the proxy {medians['proxy']:.1f} ms; "
        "overhead = proxy - direct - resolve, paired per run"
    )
    return [
        Result(
            group="proxy",
            workload="mediagate proxy, one 1920x1080 JPEG by URL: added latency beyond resolution",
            times={"proxy overhead": overheads},
            target=TARGET,
            note=note,
        )
    ]


if __name__ == "__main__":
    for result in run(quick="--quick" in sys.argv):
        print(result.workload, f"{result.median('proxy overhead') * 1e3:.1f} ms", result.note)

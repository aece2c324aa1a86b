"""The command line: ``mediagate fetch URL``, ``mediagate demo`` and ``mediagate proxy``.

A thin face over ``MediaConnector``: it builds one from the options, loads, and prints
what was loaded, or one line of error and a non-zero exit code (never a traceback).

Exit codes: 0 success, 1 a media error (refused, too large, fetch failed, not
decodable), 2 bad command-line usage or options, 3 an unexpected internal error.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from ._connector import MediaConnector
from ._errors import MediaError, OptionError
from ._policy import MediaPolicy
from ._present import error_record, load, text

__all__ = ["main"]

MODALITIES = (
    "auto",
    "image",
    "audio",
    "video",
    "image-embedding",
    "audio-embedding",
    "video-embedding",
)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mediagate", description="Load media references safely into model-ready arrays."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    fetch = sub.add_parser("fetch", help="load one URL and print what was loaded")
    fetch.add_argument("url", help="http(s)://, data: or file: URL")
    fetch.add_argument("--modality", choices=MODALITIES, default="auto")
    _policy_arguments(fetch)
    fetch.add_argument("--json", action="store_true", help="print one JSON object")
    demo = sub.add_parser("demo", help="run the pipeline on bundled sample media")
    demo.add_argument("--json", action="store_true", help="print one JSON object per line")
    proxy = sub.add_parser(
        "proxy",
        help="serve an OpenAI-compatible proxy that inlines every media URL as base64",
        description="Resolve the media of each /v1/chat/completions and /v1/responses "
        "request under the policy, inline them, and forward the request to --upstream; "
        "the upstream's answer streams back unchanged.",
    )
    proxy.add_argument(
        "--upstream", required=True, metavar="URL", help="e.g. http://127.0.0.1:8080"
    )
    proxy.add_argument("--host", default="127.0.0.1", help="address to listen on")
    proxy.add_argument("--port", type=int, default=8000, help="port to listen on")
    proxy.add_argument(
        "--max-image-pixels",
        type=int,
        default=None,
        metavar="N",
        help="scale larger images down to N pixels",
    )
    proxy.add_argument(
        "--max-image-bytes",
        type=int,
        default=20 * 1024 * 1024,
        metavar="N",
        help="re-encode smaller until each image is at most N bytes",
    )
    proxy.add_argument("--image-format", choices=("jpeg", "png", "webp"), default="jpeg")
    proxy.add_argument(
        "--video-as-frames",
        type=int,
        default=None,
        metavar="N",
        help="send each video as N sampled frames (for image-only models)",
    )
    proxy.add_argument(
        "--max-items",
        type=int,
        default=None,
        metavar="N",
        help="media parts per request (default 64)",
    )
    proxy.add_argument(
        "--request-timeout",
        type=float,
        default=None,
        metavar="S",
        help="seconds for all media of one request (default 120)",
    )
    proxy.add_argument(
        "--file-dir",
        metavar="DIR",
        default=None,
        help="answer file_id parts with the file of that name in DIR "
        "(DIR is then the allowed local media folder unless one is given)",
    )
    _policy_arguments(proxy)
    proxy.add_argument("--json", action="store_true", help="errors as one JSON object")
    return parser


def _policy_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--allowed-local-media-path", metavar="DIR", default="")
    parser.add_argument("--allowed-media-domains", metavar="HOST", nargs="+", default=None)
    parser.add_argument("--allow-private-networks", action="store_true")
    parser.add_argument("--media-io-kwargs", metavar="JSON", default=None)
    parser.add_argument("--timeout", type=float, default=None, help="total seconds per fetch")
    parser.add_argument("--max-bytes", type=int, default=None, help="bytes per item")


def _connector_from_args(args: argparse.Namespace) -> MediaConnector:
    kwargs: Any = None
    if args.media_io_kwargs:
        try:
            kwargs = json.loads(args.media_io_kwargs)
        except json.JSONDecodeError as exc:
            raise OptionError(
                "--media-io-kwargs is not valid JSON", option="media_io_kwargs"
            ) from exc
    policy = MediaPolicy.from_env()
    changes: dict[str, Any] = {}
    if args.allow_private_networks:
        changes["allow_private_networks"] = True
    if args.timeout is not None:
        changes["timeout"] = args.timeout
    if args.max_bytes is not None:
        changes["max_bytes"] = args.max_bytes
    try:
        policy = policy.replace(**changes)
    except ValueError as exc:
        raise OptionError(str(exc), option="policy") from exc
    return MediaConnector(
        kwargs,
        allowed_local_media_path=args.allowed_local_media_path,
        allowed_media_domains=args.allowed_media_domains,
        policy=policy,
    )


def _fetch_command(args: argparse.Namespace) -> int:
    try:
        with _connector_from_args(args) as connector:
            record = load(connector, args.url, args.modality)
    except MediaError as exc:
        return _fail(exc, args.json, 1)
    except ValueError as exc:  # a bad option outside the media error tree
        return _fail(exc, args.json, 2, message=str(exc))
    except Exception as exc:
        return _fail(exc, args.json, 3)
    print(json.dumps(record) if args.json else text(record))
    return 0


def _fail(exc: BaseException, as_json: bool, code: int, message: str | None = None) -> int:
    record = error_record(exc)
    if message is not None:
        record["message"] = message
    if isinstance(exc, OptionError):
        code = 2
    if as_json:
        print(json.dumps(record))
    else:
        print(f"mediagate: error: {record['error']}: {record['message']}", file=sys.stderr)
    return code


def _proxy_command(args: argparse.Namespace) -> int:
    import logging

    from ._proxy import ProxyConfig, folder_lookup, serve
    from ._requests import RequestLimits

    try:
        limits: dict[str, Any] = {}
        if args.max_items is not None:
            limits["max_items"] = args.max_items
        if args.request_timeout is not None:
            limits["timeout"] = args.request_timeout
        config = ProxyConfig(
            args.upstream,
            limits=RequestLimits(**limits),
            image_format=args.image_format,
            max_image_pixels=args.max_image_pixels,
            max_image_bytes=args.max_image_bytes,
            video_as_frames=args.video_as_frames,
            file_lookup=folder_lookup(args.file_dir) if args.file_dir else None,
        )
        if args.file_dir and not args.allowed_local_media_path:
            args.allowed_local_media_path = args.file_dir
        connector = _connector_from_args(args)
    except MediaError as exc:
        return _fail(exc, args.json, 2)
    except ValueError as exc:
        return _fail(exc, args.json, 2, message=str(exc))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        serve(config, connector, args.host, args.port)
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        return _fail(
            exc, args.json, 2, message=f"cannot listen on {args.host}:{args.port}: {exc.strerror}"
        )
    finally:
        connector.close()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``mediagate`` command."""
    args = _parser().parse_args(argv)
    if args.command == "fetch":
        return _fetch_command(args)
    if args.command == "proxy":
        return _proxy_command(args)
    from ._demo import run_demo

    try:
        return run_demo(as_json=args.json)
    except Exception as exc:
        return _fail(exc, args.json, 3, message=f"the demo failed: {type(exc).__name__}: {exc}")

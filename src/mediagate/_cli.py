"""The command line: ``mediagate fetch URL`` and ``mediagate demo``.

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
    fetch.add_argument("--allowed-local-media-path", metavar="DIR", default="")
    fetch.add_argument("--allowed-media-domains", metavar="HOST", nargs="+", default=None)
    fetch.add_argument("--allow-private-networks", action="store_true")
    fetch.add_argument("--media-io-kwargs", metavar="JSON", default=None)
    fetch.add_argument("--timeout", type=float, default=None, help="total seconds per fetch")
    fetch.add_argument("--max-bytes", type=int, default=None, help="bytes per item")
    fetch.add_argument("--json", action="store_true", help="print one JSON object")
    demo = sub.add_parser("demo", help="run the pipeline on bundled sample media")
    demo.add_argument("--json", action="store_true", help="print one JSON object per line")
    return parser


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


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``mediagate`` command."""
    args = _parser().parse_args(argv)
    if args.command == "fetch":
        return _fetch_command(args)
    from ._demo import run_demo

    try:
        return run_demo(as_json=args.json)
    except Exception as exc:
        return _fail(exc, args.json, 3, message=f"the demo failed: {type(exc).__name__}: {exc}")

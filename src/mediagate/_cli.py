"""The command line: ``mediagate fetch REFERENCE``, ``mediagate batch INPUT --out DIR``,
``mediagate demo`` and ``mediagate proxy``.

A thin face over ``MediaConnector``: it builds one from the options and the
``MEDIAGATE_*`` environment (``MediaConnector.from_env``, the options winning), loads,
and prints what was loaded, or one line of error and a non-zero exit code (never a
traceback).

Exit codes: 0 success; 1 a media error (refused, too large, fetch failed, not
decodable); 2 a usage error (bad options, arguments or ``MEDIAGATE_*`` values, or a
feature whose optional dependency is not installed: the message names the extra);
3 an internal fault; 130 interrupted (Ctrl-C); 141 standard output closed early
(``mediagate demo | head``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import textwrap
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, BinaryIO, NoReturn

from ._batch_cli import BatchSettings, add_batch_parser, run_batch
from ._cli_input import Reference, UsageError, reference, sniffed_head
from ._config import connector_kwargs_from_env
from ._connector import MediaConnector
from ._errors import (
    DecodeError,
    LocalMediaDisabledError,
    MediaError,
    OptionError,
    TooLargeError,
)
from ._extras import EXTRA_MODULES, has_extra
from ._modalities import modality_name, sniff_modality
from ._policy import MediaPolicy
from ._present import ellipsis_for, error_record, load, text, usage_record
from ._preview import OutputFiles

__all__ = ["main"]

EXIT_MEDIA = 1
EXIT_USAGE = 2
EXIT_INTERNAL = 3
EXIT_INTERRUPTED = 130
EXIT_CLOSED_PIPE = 141

MODALITIES = (
    "auto",
    "image",
    "audio",
    "video",
    "image-embedding",
    "audio-embedding",
    "video-embedding",
)

#: One example of ``--media-io-kwargs`` per modality.
MEDIA_IO_EXAMPLES = {
    "image": {"image_mode": "L"},
    "audio": {"sample_rate": 16000},
    "video": {"num_frames": 8},
    "image_embedding": {"tensor_name": "embedding"},
}

_FETCH_EXAMPLES = """\
references:
  a URL            https://example.com/cat.jpg, data:image/png;base64,..., s3://bucket/key
  a file path      photo.jpg (read under its own folder unless a folder is configured)
  -                the reference is read from standard input
  @FILE            the reference is read from FILE (a data: URL too long for a command line)
  --stdin-bytes    standard input holds the media itself

examples:
  mediagate fetch photo.jpg
  mediagate fetch https://example.com/clip --modality auto --json
  mediagate fetch @request.txt
  curl -s https://example.com/a.wav | mediagate fetch --stdin-bytes
  mediagate fetch clip.mp4 --media-io-kwargs '{"video": {"num_frames": 8}}'
  mediagate fetch photo.jpg --modality image --media-io-kwargs '{"image_mode": "L"}'
"""

_ENVIRONMENT_AND_EXIT_CODES = """\
Every MEDIAGATE_* variable applies (MEDIAGATE_TIMEOUT, MEDIAGATE_MAX_BYTES,
MEDIAGATE_ALLOWED_LOCAL_MEDIA_PATH, MEDIAGATE_VIDEO_BACKEND, ...); options win over them.
Exit codes: 0 loaded, 1 media error, 2 usage error or missing extra, 3 internal fault,
130 interrupted.
"""


class _ArgumentError(Exception):
    """argparse's complaint, raised instead of printed so ``--json`` can shape it."""

    def __init__(self, parser: argparse.ArgumentParser, message: str) -> None:
        super().__init__(message)
        self.parser = parser
        self.message = message


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise _ArgumentError(self, message)


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions and epilogs as written; option help wrapped without breaking
    ``--option-names`` at their hyphens."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=32)

    def _split_lines(self, text: str, width: int) -> list[str]:
        return textwrap.wrap(
            " ".join(text.split()), width, break_on_hyphens=False, break_long_words=False
        )


def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("mediagate")
    except metadata.PackageNotFoundError:  # pragma: no cover - run from a source tree
        return "unknown"


def _version_text() -> str:
    present = [extra for extra in EXTRA_MODULES if has_extra(extra)]
    missing = [extra for extra in EXTRA_MODULES if extra not in present]
    return (
        f"mediagate {_version()}\n"
        f"extras installed: {', '.join(present) or 'none'}; "
        f"not installed: {', '.join(missing) or 'none'}"
    )


def _media_io_help() -> str:
    return (
        "this load's options by modality, as JSON (see below; "
        """--media-io-kwargs '{"video": {"num_frames": 8}}')"""
    )


def _media_io_shapes() -> str:
    """The epilog lines that show ``--media-io-kwargs``: one example per modality."""
    lines = [f"  '{json.dumps({name: options})}'" for name, options in MEDIA_IO_EXAMPLES.items()]
    return (
        "--media-io-kwargs maps each modality to its options, e.g.\n"
        + "\n".join(lines)
        + "\nwith --modality naming one modality, a flat object of its options works too:\n"
        + """  --modality image --media-io-kwargs '{"image_mode": "L"}'\n"""
    )


def _wrapped(text: str) -> str:
    return textwrap.fill(text, 88)


def _parser() -> _Parser:
    parser = _Parser(
        prog="mediagate",
        description="Load media references safely into model-ready arrays.",
        epilog="Run 'mediagate COMMAND --help' for a command's options and examples.",
        formatter_class=_Formatter,
    )
    parser.add_argument(
        "--version",
        action="version",
        version=_version_text(),
        help="print the version and which extras are installed (mediagate --version)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    fetch = sub.add_parser(
        "fetch",
        help="load one reference and print what was loaded (mediagate fetch photo.jpg)",
        description=_wrapped(
            "Load one media reference under the policy and print what was loaded: shape, "
            "dtype, mode, sample rate, sampled frames, bytes, time per stage."
        ),
        epilog="\n".join([_FETCH_EXAMPLES, _media_io_shapes(), _ENVIRONMENT_AND_EXIT_CODES]),
        formatter_class=_Formatter,
    )
    fetch.add_argument(
        "reference",
        nargs="?",
        metavar="REFERENCE",
        help="a URL, a file path, - (read it from standard input) or @FILE (read it "
        "from FILE); see below",
    )
    fetch.add_argument(
        "--modality",
        choices=MODALITIES,
        default="auto",
        help="decode as this (default auto: what the content is, e.g. --modality audio)",
    )
    fetch.add_argument(
        "--stdin-bytes",
        action="store_true",
        help="read the media itself from standard input (mediagate fetch --stdin-bytes < a.wav)",
    )
    _policy_arguments(fetch)
    fetch.add_argument(
        "--json", action="store_true", help="print one JSON object (mediagate fetch a.jpg --json)"
    )
    fetch.add_argument(
        "--preview",
        metavar="FILE.png",
        default=None,
        help="also draw what the model receives: the image, a contact sheet of the frames, "
        "audio strips or a tensor histogram (--preview clip.png)",
    )
    fetch.add_argument(
        "--save",
        metavar="FILE",
        default=None,
        help="also write the decoded arrays and metadata as .npy, .npz or .safetensors "
        "(--save clip.npz)",
    )
    demo = sub.add_parser(
        "demo",
        help="run the pipeline on bundled sample media (mediagate demo)",
        description=_wrapped(
            "Load the bundled samples over loopback HTTP, data: and file: URLs, and show "
            "what the default rules refuse."
        ),
        formatter_class=_Formatter,
    )
    demo.add_argument(
        "--json", action="store_true", help="print one JSON object per line (mediagate demo --json)"
    )
    proxy = sub.add_parser(
        "proxy",
        help="serve an OpenAI-compatible proxy that inlines every media URL as base64 "
        "(mediagate proxy --upstream http://127.0.0.1:8080)",
        description=_wrapped(
            "Resolve the media of each /v1/chat/completions and /v1/responses request "
            "under the policy, inline them, and forward the request to --upstream; the "
            "upstream's answer streams back unchanged."
        ),
        epilog="example:\n  mediagate proxy --upstream http://127.0.0.1:8080 --port 8000\n\n"
        + _media_io_shapes(),
        formatter_class=_Formatter,
    )
    _proxy_arguments(proxy)
    _policy_arguments(proxy)
    proxy.add_argument("--json", action="store_true", help="errors as one JSON object (--json)")
    add_batch_parser(
        sub,
        formatter=_Formatter,
        description=_wrapped(
            "Load every reference of INPUT under the policy into Parquet (or WebDataset) "
            "shards in DIR, each row with its input index and outcome; rerun to resume."
        ),
        media_io_help=_media_io_shapes(),
        modalities=MODALITIES,
        policy_arguments=_policy_arguments,
    )
    return parser


def _proxy_arguments(proxy: argparse.ArgumentParser) -> None:
    proxy.add_argument(
        "--upstream",
        required=True,
        metavar="URL",
        help="the model server to forward to (--upstream http://127.0.0.1:8080)",
    )
    proxy.add_argument("--host", default="127.0.0.1", help="address to listen on (--host 0.0.0.0)")
    proxy.add_argument("--port", type=int, default=8000, help="port to listen on (--port 8000)")
    proxy.add_argument(
        "--max-image-pixels",
        type=int,
        default=None,
        metavar="N",
        help="scale larger images down to N pixels (--max-image-pixels 1000000)",
    )
    proxy.add_argument(
        "--max-image-bytes",
        type=int,
        default=20 * 1024 * 1024,
        metavar="N",
        help="re-encode smaller until each image is at most N bytes (--max-image-bytes 5000000)",
    )
    proxy.add_argument(
        "--image-format",
        choices=("jpeg", "png", "webp"),
        default="jpeg",
        help="format images are re-encoded in (--image-format webp)",
    )
    proxy.add_argument(
        "--video-as-frames",
        type=int,
        default=None,
        metavar="N",
        help="send each video as N sampled frames, for image-only models (--video-as-frames 8)",
    )
    proxy.add_argument(
        "--max-items",
        type=int,
        default=None,
        metavar="N",
        help="media parts per request (default 64; --max-items 16)",
    )
    proxy.add_argument(
        "--request-timeout",
        type=float,
        default=None,
        metavar="S",
        help="seconds for all media of one request (default 120; --request-timeout 30)",
    )
    proxy.add_argument(
        "--file-dir",
        metavar="DIR",
        default=None,
        help="answer file_id parts with the file of that name in DIR "
        "(DIR is then the allowed local media folder unless one is given; --file-dir ./files)",
    )
    proxy.add_argument(
        "--metrics",
        action="store_true",
        help="serve Prometheus metrics of every load at /metrics on the proxy's port "
        "(needs mediagate[metrics]; --metrics)",
    )


def _policy_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--allowed-local-media-path",
        metavar="DIR",
        default="",
        help="the folder file: URLs and paths may read (--allowed-local-media-path ~/media)",
    )
    parser.add_argument(
        "--allowed-media-domains",
        metavar="HOST",
        nargs="+",
        default=None,
        help="fetch http(s) only from these hosts (--allowed-media-domains example.com)",
    )
    parser.add_argument(
        "--allow-private-networks",
        action="store_true",
        help="allow loopback and private addresses (--allow-private-networks)",
    )
    parser.add_argument("--media-io-kwargs", metavar="JSON", default=None, help=_media_io_help())
    parser.add_argument(
        "--timeout",
        type=float,
        default=None,
        metavar="S",
        help="total seconds per fetch (--timeout 5)",
    )
    parser.add_argument(
        "--max-bytes",
        type=int,
        default=None,
        metavar="N",
        help="bytes per item, every modality (--max-bytes 50000000)",
    )


# -- options --------------------------------------------------------------------------


def _shape_hint() -> str:
    return (
        """--media-io-kwargs maps each modality to its options, e.g. '{"image": """
        """{"image_mode": "L"}}' or '{"video": {"num_frames": 8}}'"""
    )


def _as_modality(key: object) -> str | None:
    try:
        return modality_name(key)
    except OptionError:
        return None


def _media_io_kwargs(raw: str | None, modality: str) -> dict[str, dict[str, Any]]:
    """``--media-io-kwargs`` as options by modality: the nested shape as it is, or a flat
    object of one modality's options when ``--modality`` names it.

    Raises:
        OptionError: not JSON, not an object, or a flat object with ``--modality auto``.
    """
    if raw is None:
        return {}
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise OptionError(
            f"--media-io-kwargs is not valid JSON ({exc.msg} at character {exc.pos}); "
            + _shape_hint(),
            option="media_io_kwargs",
        ) from exc
    if not isinstance(value, dict):
        raise OptionError(
            f"--media-io-kwargs must be a JSON object, not {type(value).__name__}; "
            + _shape_hint(),
            option="media_io_kwargs",
        )
    names = {key: _as_modality(key) for key in value}
    if value and all(names.values()):
        nested: dict[str, dict[str, Any]] = {}
        for key, options in value.items():
            if not isinstance(options, dict):
                raise OptionError(
                    f"--media-io-kwargs: the options of {key!r} must be an object; "
                    + _shape_hint(),
                    option=str(key),
                )
            nested[str(names[key])] = options
        return nested
    if any(names.values()):
        raise OptionError(
            "--media-io-kwargs mixes modalities and options; " + _shape_hint(),
            option="media_io_kwargs",
        )
    if modality == "auto":
        raise OptionError(
            f"--media-io-kwargs {raw} is not by modality; {_shape_hint()} "
            "(a flat object of options needs --modality naming its modality)",
            option="media_io_kwargs",
        )
    return {modality_name(modality): value} if value else {}


def _merged(
    defaults: Mapping[str, Mapping[str, Any]] | None, options: Mapping[str, Mapping[str, Any]]
) -> dict[str, dict[str, Any]]:
    merged = {name: dict(values) for name, values in (defaults or {}).items()}
    for name, values in options.items():
        merged[name] = {**merged.get(name, {}), **values}
    return merged


def _policy(args: argparse.Namespace) -> MediaPolicy:
    """``MEDIAGATE_*`` policy settings, then the options over them.

    Raises:
        UsageError: a malformed variable or option value (the message names it).
    """
    try:
        policy = MediaPolicy.from_env()
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    changes: dict[str, Any] = {}
    if args.allow_private_networks:
        changes["allow_private_networks"] = True
    if args.timeout is not None:
        changes["timeout"] = args.timeout
    if args.max_bytes is not None:
        changes["max_bytes"] = args.max_bytes
    try:
        return policy.replace(**changes)
    except ValueError as exc:
        flag = next(
            (f"--{name.replace('_', '-')}" for name in changes if name in str(exc)), "an option"
        )
        raise UsageError(f"{flag}: {exc}") from exc


def _environment() -> dict[str, Any]:
    try:
        return connector_kwargs_from_env()
    except ValueError as exc:
        raise UsageError(str(exc)) from exc


def _connector(
    args: argparse.Namespace,
    policy: MediaPolicy,
    environment: Mapping[str, Any],
    options: Mapping[str, Mapping[str, Any]],
    local_root: Path | None = None,
) -> MediaConnector:
    """The connector ``MediaConnector.from_env`` builds, the options over the variables.

    Raises:
        UsageError: an option or variable the connector refuses (a missing folder).
        OptionError: a bad media option.
    """
    overrides: dict[str, Any] = {"policy": policy}
    defaults = environment.get("media_io_kwargs")
    if options or defaults:
        overrides["media_io_kwargs"] = _merged(defaults, options)
    if local_root is not None:
        overrides["allowed_local_media_path"] = local_root
    elif args.allowed_local_media_path:
        overrides["allowed_local_media_path"] = args.allowed_local_media_path
    if args.allowed_media_domains:
        overrides["allowed_media_domains"] = args.allowed_media_domains
    try:
        return MediaConnector.from_env(**overrides)
    except OptionError:
        raise
    except ValueError as exc:
        if local_root is None and args.allowed_local_media_path and "exist" in str(exc):
            raise UsageError(f"--allowed-local-media-path: {exc}") from exc
        raise UsageError(str(exc)) from exc


# -- output ---------------------------------------------------------------------------


def _print_record(record: Mapping[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(record))
    else:
        print(text(dict(record), ellipsis=ellipsis_for(sys.stdout)))


def _report(record: Mapping[str, Any], as_json: bool) -> None:
    """An error: one JSON object on standard output, or one line on standard error."""
    if as_json:
        print(json.dumps(record))
    else:
        print(f"mediagate: error: {record['error']}: {record['message']}", file=sys.stderr)


def _exit_code(exc: BaseException) -> int:
    if isinstance(exc, OptionError | UsageError):
        return EXIT_USAGE
    if isinstance(exc, MediaError):
        return EXIT_MEDIA
    record = error_record(exc)
    return EXIT_USAGE if record["error"] == "MissingDependency" else EXIT_INTERNAL


def _failure(exc: BaseException, hints: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The record of ``exc``, with what the command line can add to its message."""
    if isinstance(exc, UsageError):
        return usage_record(str(exc))
    record = error_record(exc)
    if isinstance(exc, LocalMediaDisabledError):
        record["message"] += (
            " (--allowed-local-media-path DIR allows a folder; a file path typed as the "
            "reference is read under its own folder)"
        )
    elif (
        isinstance(exc, TooLargeError)
        and exc.limit == "max_bytes"
        and "--max-bytes" not in (record["message"])
    ):
        record["message"] += " (--max-bytes N on the command line)"
    elif record["error"] == "InternalError":
        record["message"] = f"{record['message']} (an unexpected fault in mediagate)"
    record.update(hints or {})
    return record


def _mismatch(exc: DecodeError, ref: Reference, modality: str) -> dict[str, Any]:
    """What ``--modality`` on other media gets told: the modality the content is."""
    if modality == "auto":
        return {}
    head = sniffed_head(ref)
    asked = modality_name(modality)
    if head is None:
        exc.message += " (if it is other media, --modality auto decodes it as its content is)"
        return {}
    found = sniff_modality(head)
    if found is None or found == asked:
        return {}
    shown = found.replace("_", "-")
    exc.message += f" (the content is {shown}: use --modality {shown} or --modality auto)"
    return {"suggested_modality": shown}


# -- commands -------------------------------------------------------------------------


def _stdin() -> BinaryIO:
    stream = sys.stdin
    if stream is None:  # started without a standard input
        return open(os.devnull, "rb")
    return stream.buffer


def _fetch_command(args: argparse.Namespace) -> int:
    extra: dict[str, Any] = {}
    try:
        outputs = OutputFiles.checked(args.preview, args.save)
        policy = _policy(args)
        environment = _environment()
        options = _media_io_kwargs(args.media_io_kwargs, args.modality)
        configured = bool(args.allowed_local_media_path) or bool(
            environment.get("allowed_local_media_path")
        )
        reads_stdin = args.stdin_bytes or args.reference == "-"
        if reads_stdin and sys.stdin is not None and sys.stdin.isatty():
            if args.stdin_bytes:
                raise UsageError(
                    "--stdin-bytes reads the media from a pipe or a file, not a terminal "
                    "(mediagate fetch --stdin-bytes < photo.jpg)"
                )
            print(
                "mediagate: reading the reference from the terminal (end with Ctrl-D)",
                file=sys.stderr,
            )
        with reference(
            args.reference,
            stdin=_stdin(),
            stdin_bytes=args.stdin_bytes,
            policy=policy,
            modality=args.modality,
            configured_root=configured,
        ) as ref:
            if ref.default_root and ref.local_root is not None:
                extra["allowed_local_media_path"] = str(ref.local_root)
                if not args.json:
                    print(
                        f"mediagate: note: file access is limited to {ref.local_root} (the "
                        "file's folder; --allowed-local-media-path DIR sets another)",
                        file=sys.stderr,
                    )
            with _connector(args, policy, environment, options, ref.local_root) as connector:
                try:
                    record = load(
                        connector, ref.url, args.modality, shown=ref.shown, then=outputs.write
                    )
                except DecodeError as exc:
                    extra.update(_mismatch(exc, ref, args.modality))
                    raise
    except BrokenPipeError:
        raise
    except Exception as exc:  # a media error, a usage error, a missing extra, a fault
        _report(_failure(exc, extra), args.json)
        return _exit_code(exc)
    if args.stdin_bytes:
        record["source"] = "stdin"
    record.update(extra)
    record.update(outputs.written())
    _print_record(record, args.json)
    if outputs.written() and not args.json:
        print("    " + " ".join(f"{key}={path}" for key, path in outputs.written().items()))
    return 0


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
            metrics=args.metrics,
        )
        if args.metrics:
            from ._metrics import enable_metrics

            enable_metrics()
        if args.file_dir and not args.allowed_local_media_path:
            args.allowed_local_media_path = args.file_dir
        policy = _policy(args)
        environment = _environment()
        options = _media_io_kwargs(args.media_io_kwargs, "auto")
        connector = _connector(args, policy, environment, options)
    except (MediaError, UsageError, ImportError) as exc:
        record = _failure(exc)
        _report(record, args.json)
        return EXIT_INTERNAL if record["error"] == "InternalError" else EXIT_USAGE
    except ValueError as exc:
        _report(usage_record(str(exc)), args.json)
        return EXIT_USAGE
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        serve(config, connector, args.host, args.port)
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        _report(
            usage_record(f"cannot listen on {args.host}:{args.port}: {exc.strerror}"), args.json
        )
        return EXIT_USAGE
    finally:
        connector.close()
    return 0


def _batch_command(args: argparse.Namespace) -> int:
    try:
        policy = _policy(args)
        environment = _environment()
        options = _media_io_kwargs(args.media_io_kwargs, args.modality)
        with _connector(args, policy, environment, options) as connector:
            settings = BatchSettings.of(connector)
        if args.workers is not None:
            settings = replace(settings, max_workers=args.workers)
        return run_batch(args, settings, stdin=_stdin())
    except (BrokenPipeError, KeyboardInterrupt):
        raise
    except Exception as exc:  # a usage error, a missing extra, a fault
        _report(_failure(exc), args.json)
        return _exit_code(exc)


def _demo_command(args: argparse.Namespace) -> int:
    from ._demo import run_demo

    try:
        return run_demo(as_json=args.json)
    except (BrokenPipeError, KeyboardInterrupt):
        raise
    except Exception as exc:
        record = error_record(exc)
        record["message"] = f"the demo failed: {record['message']}"
        _report(record, args.json)
        return EXIT_INTERNAL


# -- the entry point ------------------------------------------------------------------


def _wants_json(argv: Sequence[str]) -> bool:
    return "--json" in argv[: argv.index("--")] if "--" in argv else "--json" in argv


def _argument_error(error: _ArgumentError, as_json: bool) -> int:
    if as_json:
        print(json.dumps(usage_record(error.message)))
    else:
        error.parser.print_usage(sys.stderr)
        print(f"{error.parser.prog}: error: {error.message}", file=sys.stderr)
    return EXIT_USAGE


@contextlib.contextmanager
def _quiet_closed_pipe() -> Iterator[None]:
    """A reader that stopped reading (``| head``) ends the command without a traceback:
    standard output is pointed at the null device so the final flush cannot fail."""
    try:
        yield
        sys.stdout.flush()
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        raise


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``mediagate`` command."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    as_json = _wants_json(arguments)
    try:
        with _quiet_closed_pipe():
            try:
                args = _parser().parse_args(arguments)
            except _ArgumentError as error:
                return _argument_error(error, as_json)
            if args.command == "fetch":
                return _fetch_command(args)
            if args.command == "proxy":
                return _proxy_command(args)
            if args.command == "batch":
                return _batch_command(args)
            return _demo_command(args)
    except BrokenPipeError:
        return EXIT_CLOSED_PIPE
    except KeyboardInterrupt:
        if as_json:
            with contextlib.suppress(OSError):
                print(json.dumps(usage_record("interrupted") | {"error": "Interrupted"}))
        print("mediagate: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED

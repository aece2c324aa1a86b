"""Run vLLM's media tests against mediagate's connector and write ``RESULTS.md``.

``.venv/bin/python integration/vllm/run.py`` (what ``make test-vllm`` runs): builds what is
missing (``setup_suite.py``), runs the suite in its own venv, writes a summary per test,
grouped by file, to ``integration/vllm/RESULTS.md``, and exits non-zero when a test fails
or errors that ``accepted.py`` does not list, or when pytest itself could not run. The
suite's own tests (``own_tests/``) run in the same session and are counted and reported
apart from vLLM's; any failure of theirs is a gap (``accepted.py`` lists vLLM tests only),
and a full run in which none of them was collected fails. Only the standard library is used
here. Arguments after ``--`` go to pytest (for example ``-- -k video``); such a run writes
its summary to ``.work/RESULTS.md`` unless ``--results`` says.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parents[1] / "benchmarks")]

from accepted import ACCEPTED  # noqa: E402
from setup_suite import OWN_TESTS, WORK, SetupError, ensure_all  # noqa: E402

from _reference import TORCH_PIN, VLLM_PIN  # noqa: E402

RESULTS = HERE / "RESULTS.md"
REPORT = WORK / "report.json"
TESTS = "tests/multimodal/media"
#: The suite's own tests, under the suite folder.
OWN = OWN_TESTS.name
#: pytest's exit codes that mean the run itself went wrong (not "some tests failed").
_BROKEN_RUN = {2: "interrupted", 3: "internal error", 4: "usage error", 5: "no tests collected"}
_FAILING = ("failed", "error")


def _escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _file_of(nodeid: str) -> str:
    return nodeid.split("::", 1)[0]


def _versions(python: Path) -> dict[str, str]:
    script = (
        "import importlib.metadata as m, json;"
        "print(json.dumps({n: m.version(n) for n in ('vllm', 'torch', 'mediagate')}))"
    )
    done = subprocess.run([str(python), "-c", script], capture_output=True, text=True)
    versions: dict[str, str] = json.loads(done.stdout) if done.returncode == 0 else {}
    return versions


def is_own(nodeid: str) -> bool:
    """Whether ``nodeid`` is one of the suite's own tests (not one of vLLM's)."""
    return nodeid == OWN or nodeid.startswith(OWN + "/")


def judge(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Counts, and the failures split into accepted differences and gaps; the suite's own
    tests apart (``own``: their records, ``own_outcomes``, ``own_gaps``: every failure)."""
    own = [r for r in records if is_own(r["nodeid"])]
    records = [r for r in records if not is_own(r["nodeid"])]
    outcomes = Counter(r["outcome"] for r in records)
    failing = [r for r in records if r["outcome"] in _FAILING]
    by_id = {r["nodeid"]: r for r in records}
    return {
        "outcomes": outcomes,
        "connector": sum(1 for r in records if r["connectors"] > 0),
        "accepted": [r for r in failing if r["nodeid"] in ACCEPTED],
        "gaps": [r for r in failing if r["nodeid"] not in ACCEPTED],
        "own": own,
        "own_outcomes": Counter(r["outcome"] for r in own),
        "own_gaps": [r for r in own if r["outcome"] in _FAILING],
        "stale": sorted(
            (nodeid, by_id[nodeid]["outcome"] if nodeid in by_id else "not collected")
            for nodeid in ACCEPTED
            if by_id.get(nodeid, {}).get("outcome") not in _FAILING
        ),
    }


def _short_reason(reason: str) -> str:
    """A failure's reason without the numbers and paths that differ between its cases."""
    text = re.sub(r"/[^\s'\"]*", "PATH", reason)
    return re.sub(r"\d+", "N", text)[:200]


def _file_sections(records: list[dict[str, Any]], prefix: str, level: str = "##") -> list[str]:
    """One table per test file of ``records``, headed by the file's path less ``prefix``."""
    lines: list[str] = []
    by_file: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        by_file[_file_of(record["nodeid"])].append(record)
    for path in sorted(by_file):
        rows = by_file[path]
        counts = Counter(r["outcome"] for r in rows)
        summary = ", ".join(
            f"{counts[k]} {k}" for k in ("passed", *_FAILING, "skipped") if counts[k]
        )
        lines += [
            "",
            f"{level} {path.removeprefix(prefix + '/')}",
            "",
            f"{len(rows)} tests, {sum(1 for r in rows if r['connectors'])} build the connector: "
            f"{summary}.",
            "",
            "| test | connector | outcome | reason |",
            "|---|---|---|---|",
        ]
        for r in rows:
            outcome = r["outcome"]
            if outcome in _FAILING:
                outcome = f"{outcome} (accepted)" if r["nodeid"] in ACCEPTED else f"**{outcome}**"
            reason = r["reason"]
            if r["refused"]:
                reason = f"{reason} [offline guard refused: {', '.join(r['refused'])}]".strip()
            name = r["nodeid"].split("::", 1)[1] if "::" in r["nodeid"] else "(module)"
            lines.append(
                f"| `{_escape(name)}` | {'yes' if r['connectors'] else 'no'} | {outcome} | "
                f"{_escape(reason)} |"
            )
    return lines


def render(records: list[dict[str, Any]], verdict: dict[str, Any], versions: dict[str, str]) -> str:
    """``RESULTS.md``: totals, one table per test file, the suite's own tests, the accepted
    differences, the gaps."""
    outcomes: Counter[str] = verdict["outcomes"]
    own: list[dict[str, Any]] = verdict["own"]
    own_outcomes: Counter[str] = verdict["own_outcomes"]
    lines = [
        "# vLLM's media tests against mediagate's connector",
        "",
        "Written by `make test-vllm` (`integration/vllm/run.py`);",
        "see `integration/vllm/README.md`.",
        f"vLLM {versions.get('vllm', '?')} tests (`{TESTS}`), torch {versions.get('torch', '?')},",
        "mediagate's connector loaded by `vllm.plugins.load_general_plugins()` and bound to",
        "each test module's `MediaConnector`; vLLM's own `MediaIO` classes are left as they are.",
        "",
        "| collected | build mediagate's connector | passed | failed | errors | skipped |"
        " accepted differences | gaps |",
        "|---|---|---|---|---|---|---|---|",
        f"| {len(records) - len(own)} | {verdict['connector']} | {outcomes['passed']} | "
        f"{outcomes['failed']} | {outcomes['error']} | {outcomes['skipped']} | "
        f"{len(verdict['accepted'])} | {len(verdict['gaps'])} |",
        "",
        "A test *builds mediagate's connector* when it constructs at least one; the others",
        "exercise only vLLM's own classes (its `MediaIO`s, loaders, budgets, errors) in the",
        "same environment.",
        "",
        f"The suite's own tests (`{OWN}/`: vLLM code paths its media tests do not reach, run",
        "in the same session), counted apart; every failure of theirs is a gap:",
        "",
        "| collected | build mediagate's connector | passed | failed | errors | skipped | gaps |",
        "|---|---|---|---|---|---|---|",
        f"| {len(own)} | {sum(1 for r in own if r['connectors'] > 0)} | "
        f"{own_outcomes['passed']} | {own_outcomes['failed']} | {own_outcomes['error']} | "
        f"{own_outcomes['skipped']} | {len(verdict['own_gaps'])} |",
    ]
    lines += _file_sections([r for r in records if not is_own(r["nodeid"])], TESTS)
    lines += ["", "## The suite's own tests"]
    if own:
        lines += _file_sections(own, OWN, "###")
    else:
        lines += ["", "None collected."]
    lines += ["", "## Accepted differences", ""]
    if ACCEPTED:
        for nodeid, why in ACCEPTED.items():
            lines.append(f"- `{_escape(nodeid.removeprefix(TESTS + '/'))}`: {why}")
    else:
        lines.append("None.")
    if verdict["stale"]:
        lines += ["", "Listed as accepted but not failing (remove them from `accepted.py`):", ""]
        lines += [f"- `{n}`: {o}" for n, o in verdict["stale"]]
    lines += ["", "## Gaps (failures not accepted), by reason", ""]
    gaps = verdict["gaps"] + verdict["own_gaps"]
    if gaps:
        grouped: dict[str, list[str]] = defaultdict(list)
        for r in gaps:
            grouped[_short_reason(r["reason"])].append(r["nodeid"].removeprefix(TESTS + "/"))
        for reason, ids in sorted(grouped.items(), key=lambda kv: (-len(kv[1]), kv[0])):
            lines.append(f"- {len(ids)} x {_escape(reason)}")
            lines += [f"  - `{_escape(i)}`" for i in ids]
    else:
        lines.append("None.")
    return "\n".join(lines) + "\n"


def _suite_environment() -> dict[str, str]:
    """The runner's environment without variables that would steer mediagate or vLLM."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MEDIAGATE_", "VLLM_"))}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def main(argv: Sequence[str] | None = None) -> int:
    """Command line; see the module docstring."""
    argv = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if "--" in argv:
        extra = argv[argv.index("--") + 1 :]
        argv = argv[: argv.index("--")]
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--results", type=Path, default=None, help="where the summary goes")
    args = parser.parse_args(argv)
    results: Path = args.results or (WORK / "RESULTS.md" if extra else RESULTS)
    start = time.perf_counter()
    try:
        python, suite = ensure_all()
    except SetupError as exc:
        print(f"test-vllm: setup failed: {exc}", file=sys.stderr)
        return 1
    REPORT.unlink(missing_ok=True)
    command = [
        str(python),
        "-m",
        "pytest",
        "-c",
        str(HERE / "pytest.ini"),
        "--rootdir",
        str(suite),
        "-q",
        "--suite-report",
        str(REPORT),
        str(suite / TESTS),
        str(suite / OWN),
        *extra,
    ]
    print(f"test-vllm: {' '.join(command)}", flush=True)
    code = subprocess.run(command, cwd=suite, env=_suite_environment(), check=False).returncode
    if code in _BROKEN_RUN or not REPORT.exists():
        print(f"test-vllm: pytest did not run the suite ({_BROKEN_RUN.get(code, code)})")
        return 1
    records: list[dict[str, Any]] = json.loads(REPORT.read_text())
    verdict = judge(records)
    versions = _versions(python)
    if versions.get("vllm") != VLLM_PIN.split("==")[1] or not versions.get("torch", "").startswith(
        TORCH_PIN.split("==")[1]
    ):
        print(f"test-vllm: unexpected versions in the suite venv: {versions}")
        return 1
    results.write_text(render(records, verdict, versions))
    outcomes, own_outcomes = verdict["outcomes"], verdict["own_outcomes"]
    print(
        f"test-vllm: {len(records) - len(verdict['own'])} vLLM tests collected "
        f"({verdict['connector']} build mediagate's connector): {outcomes['passed']} passed, "
        f"{outcomes['failed']} failed, {outcomes['error']} errors, {outcomes['skipped']} "
        f"skipped; {len(verdict['accepted'])} accepted differences, {len(verdict['gaps'])} "
        f"gaps; the suite's own tests: {len(verdict['own'])} collected, "
        f"{own_outcomes['passed']} passed, {len(verdict['own_gaps'])} gaps "
        f"({time.perf_counter() - start:.0f} s); summary in {results}"
    )
    for nodeid, outcome in verdict["stale"]:
        print(f"test-vllm: accepted.py lists {nodeid}, which is {outcome}")
    for record in verdict["gaps"] + verdict["own_gaps"]:
        print(f"test-vllm: GAP {record['nodeid']}: {record['reason']}")
    missing_own = not extra and not verdict["own"]
    if missing_own:
        print(f"test-vllm: none of the suite's own tests ({OWN}/) was collected")
    return 1 if verdict["gaps"] or verdict["own_gaps"] or missing_own else 0


if __name__ == "__main__":
    raise SystemExit(main())

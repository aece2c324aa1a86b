"""What each test did, collected from pytest's reports and written as JSON.

One record per test: its outcome (``passed``, ``failed``, ``error`` for a setup or teardown
failure, ``skipped``), the one-line reason of a failure or skip, how many mediagate
connectors it built, and what the offline guard refused it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

__all__ = ["Recorder", "one_line"]


def one_line(text: str, limit: int = 300) -> str:
    """``text`` on one line (its lines joined, runs of spaces collapsed), at most ``limit``
    characters; pytest's ``match`` failures name the expected and the actual message on
    the lines after the first."""
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _reason(report: pytest.TestReport) -> str:
    longrepr = report.longrepr
    if longrepr is None:
        return ""
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return one_line(str(longrepr[2]).removeprefix("Skipped: "))
    crash = getattr(longrepr, "reprcrash", None)
    if crash is not None and getattr(crash, "message", None):
        return one_line(str(crash.message))
    return one_line(str(longrepr))


class Recorder:
    """A pytest plugin object that keeps one record per test and writes them at the end."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.records: dict[str, dict[str, Any]] = {}

    def _record(self, nodeid: str) -> dict[str, Any]:
        return self.records.setdefault(
            nodeid,
            {"nodeid": nodeid, "outcome": "passed", "reason": "", "connectors": 0, "refused": []},
        )

    @pytest.hookimpl
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        """Fold the setup, call and teardown reports of a test into its record."""
        record = self._record(report.nodeid)
        for key, value in report.user_properties:
            if key == "connectors" and isinstance(value, int):
                record["connectors"] += value
            elif key == "refused" and isinstance(value, list):
                record["refused"].extend(value)
        if report.passed or record["outcome"] in ("failed", "error"):
            return
        if report.skipped:
            if report.when == "call" and hasattr(report, "wasxfail"):
                record["outcome"] = "xfailed"
            else:
                record["outcome"] = "skipped"
            record["reason"] = _reason(report)
        elif report.failed:
            record["outcome"] = "failed" if report.when == "call" else "error"
            record["reason"] = _reason(report)

    @pytest.hookimpl
    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        """A module that cannot be collected is one error record."""
        if report.failed:
            record = self._record(report.nodeid)
            record["outcome"] = "error"
            record["reason"] = _reason(report)  # type: ignore[arg-type]

    @pytest.hookimpl
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        """Write the records."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps(list(self.records.values()), indent=1) + "\n")

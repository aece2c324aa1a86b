"""The examples the README shows run and print what the README says they print."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_extending_example_prints_what_the_readme_shows() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    shown = re.search(r"\$ \.venv/bin/python examples/extending\.py\n(.*?)```", readme, re.S)
    assert shown is not None
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "extending.py")],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert done.stdout == shown.group(1)


def test_the_whole_request_example_prints_what_the_readme_shows() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    shown = re.search(r"\$ \.venv/bin/python examples/whole_request\.py\n(.*?)```", readme, re.S)
    assert shown is not None
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "whole_request.py")],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert done.stdout == shown.group(1)

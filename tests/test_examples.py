"""The examples the README shows run and print what the README says they print."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("name", ["extending", "whole_request"])
def test_the_example_prints_what_the_readme_shows(name: str) -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    shown = re.search(rf"\$ \.venv/bin/python examples/{name}\.py\n(.*?)```", readme, re.S)
    assert shown is not None
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / f"{name}.py")],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert done.stdout == shown.group(1)

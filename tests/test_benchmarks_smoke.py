"""The benchmark harness runs end to end (mediagate side only) and writes its table."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

RUN = Path(__file__).resolve().parent.parent / "benchmarks" / "run.py"


@pytest.mark.slow
def test_quick_image_run_writes_a_table_and_a_chart(tmp_path: Path) -> None:
    args = ["--quick", "--no-reference", "--only", "images", "--images", "jpeg_decode"]
    done = subprocess.run(
        [sys.executable, str(RUN), *args, "--runs", "1", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    table = (tmp_path / "RESULTS.md").read_text(encoding="utf-8")
    row = next(line for line in table.splitlines() if "decode from bytes" in line)
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    assert cells[0] == "images"
    assert cells[3].endswith("ms") and cells[4].endswith("ms")  # mediagate and the floor
    assert "reference not run" in cells[-1]
    assert (tmp_path / "results.png").read_bytes().startswith(b"\x89PNG")

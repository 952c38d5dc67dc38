"""The reliability table shows a failure as a failure: a planted crash and a planted partial survival."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.fault_table import RESULTS_ENV, read_rows, table

REPO = Path(__file__).resolve().parents[1]

PLANTED = textwrap.dedent("""
    from tests.fault_table import fault_record  # noqa: F401

    def test_crashes_before_recording(fault_record):
        fault_record.plan("planted: crash before recording", 3)
        raise RuntimeError("the injected fault took the test down")

    def test_records_then_fails(fault_record):
        fault_record("planted: one of four survived", trials=4, survived=1, data_lost=3)
        assert False, "three trials lost data"

    def test_records_nothing(fault_record):
        assert 1 == 2
""")


def test_planted_failures_show_in_the_table(tmp_path):
    (tmp_path / "test_planted.py").write_text(PLANTED)
    results = tmp_path / "rows.jsonl"
    env = {**os.environ, RESULTS_ENV: str(results), "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(tmp_path),
                           str(tmp_path / "test_planted.py")], capture_output=True, text=True, env=env, cwd=tmp_path,
                          timeout=120)
    assert proc.returncode == 1 and "3 failed" in proc.stdout, proc.stdout[-2000:]
    rows = read_rows(results)
    text = table(rows)
    assert "| planted: crash before recording | 3 | 0 | ? |" in text, text
    assert "| planted: one of four survived | 4 | 1 | 3 |" in text, text
    assert "| test_planted.py::test_records_nothing (recorded no row) | 1 | 0 | ? |" in text, text
    assert len(rows) == 3

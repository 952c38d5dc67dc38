"""`make fault`: run the fault-injection suites and print the reliability table.

    python -m tests.fault_report [--json rows.json] [--markdown table.md] [-- extra pytest args]

Runs tests/test_fault_*.py and the fault scenarios of the regular suite (tests.fault_table's
EXISTING_SCENARIOS) under pytest with the tests.fault_table plugin, collects the rows every test
recorded (scenario, trials, survived, data lost), and prints them as a Markdown table. The exit
status is pytest's (xfail tests are the known gaps: they count as rows that did not survive).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script: tests/ is not a package on the path yet
    sys.path.insert(0, str(REPO))

from tests.fault_table import EXISTING_SCENARIOS, RESULTS_ENV, notes, read_rows, table  # noqa: E402

SUITES = (
    "tests/test_fault_training.py",
    "tests/test_fault_storage.py",
    "tests/test_fault_tracking.py",
    "tests/test_fault_downloads.py",
    "tests/test_fault_security.py",
    "tests/test_fault_inputs.py",
    "tests/test_fault_secrets.py",
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fault_report", description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="also write the recorded rows to this file")
    parser.add_argument("--markdown", help="also write the table to this file")
    parser.add_argument("pytest_args", nargs="*", help="more pytest arguments (after --)")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="clasflow-fault-") as tmp:
        results = Path(tmp) / "rows.jsonl"
        env = {**os.environ, RESULTS_ENV: str(results)}
        env.setdefault("OMP_NUM_THREADS", "2")
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "tests.fault_table", "-rxXf",
               *SUITES, *EXISTING_SCENARIOS, *args.pytest_args]
        start = time.monotonic()
        rc = subprocess.call(cmd, cwd=REPO, env=env)
        wall = time.monotonic() - start
        rows = read_rows(results)

    text = table(rows)
    print("\n## Reliability (fault injection)\n")
    print(text)
    for line in notes(rows):
        print(f"- {line}")
    print(f"\n{len(rows)} rows from {len({r['test'] for r in rows})} tests; pytest exit status {rc}; wall time {wall:.0f} s")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")
    if args.markdown:
        Path(args.markdown).write_text(text + "\n")
    if not rows:
        print("no rows were recorded: did the suites run?", file=sys.stderr)
        return rc or 1
    return rc


if __name__ == "__main__":
    sys.exit(main())

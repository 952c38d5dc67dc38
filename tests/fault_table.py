"""The reliability figures of the fault-injection suites: one row per scenario (trials, survived, data lost).

A fault test counts what it injected and what held through the `fault_record` fixture (made
available to every test by tests/conftest.py)::

    def test_x(fault_record):
        ...
        fault_record("training: SIGKILL at a random step", trials=6, survived=6, data_lost=0)

Rows are appended as JSON lines to the file named by ``CLASFLOW_FAULT_RESULTS`` (set by
``tests/fault_report.py``, i.e. ``make fault``); without it they are only kept in memory, so the
tests behave the same inside ``make test``. Record before asserting, so a failing scenario is
still counted as it was measured; ``fault_record.plan(scenario, trials)`` first makes a test that
crashes before it records show its row with 0 survived (see FaultRecorder).

Loaded as a pytest plugin (``-p tests.fault_table``, which fault_report.py does), this module also
counts a few existing tests of the regular suite that are fault scenarios in their own right
(``EXISTING_SCENARIOS``): one trial each, survived when the test passed.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

RESULTS_ENV = "CLASFLOW_FAULT_RESULTS"
RECORDED: list[dict] = []  # this process's rows, whether or not a results file is set

# Tests of the regular suite that inject a fault themselves: node id -> scenario.
EXISTING_SCENARIOS = {
    "tests/test_storage.py::test_interrupted_multipart_upload_is_atomic_and_retried":
        "storage: S3 server killed mid multipart upload, restarted, upload retried (test_storage)",
    "tests/test_storage.py::test_server_down_beyond_the_retry_budget":
        "storage: S3 server down beyond the retry budget (test_storage)",
    "tests/test_storage.py::test_tampered_object_is_refused":
        "storage: object changed behind clasflow's back is refused (test_storage)",
    "tests/test_train.py::test_sigterm_writes_checkpoint_and_resume_matches":
        "training: SIGTERM mid-epoch, checkpoint, resume (test_train)",
    "tests/test_train.py::test_tracking_server_down_keeps_every_point":
        "tracking: MLflow down for the whole run, journal synced later (test_train)",
    "tests/test_download.py::test_truncated_transfer_resumes_with_range":
        "downloads: truncated transfer resumed with Range (test_download)",
    "tests/test_download.py::test_checksum_mismatch_is_refused_and_leaves_nothing":
        "downloads: checksum mismatch refused (test_download)",
    "tests/test_download.py::test_html_instead_of_archive_is_refused":
        "downloads: HTML page instead of the file refused (test_download)",
    "tests/test_download.py::test_slow_server_times_out_and_retries":
        "downloads: stalled server times out (test_download)",
}


def record(scenario: str, trials: int, survived: int, data_lost: int | None, *, note: str = "", test: str = "") -> dict:
    """Append one row (see the module docstring); returns it."""
    row = {"scenario": scenario, "trials": int(trials), "survived": int(survived),
           "data_lost": None if data_lost is None else int(data_lost), "note": note, "test": test, "time": time.time()}
    RECORDED.append(row)
    target = os.environ.get(RESULTS_ENV)
    if target:
        Path(target).parent.mkdir(parents=True, exist_ok=True)
        with open(target, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(row) + "\n")
    return row


class FaultRecorder:
    """The ``fault_record`` fixture: ``fault_record(scenario, trials, survived, data_lost, note="")``.

    ``fault_record.plan(scenario, trials)`` at the start of a test names the row it will record; a
    test that ends (crash, failed assertion, timeout) without recording a planned row still gets it,
    with 0 survived, so a failure shows in the table instead of removing the row. A test that
    recorded nothing at all gets a row named after it, also with 0 survived.
    """

    def __init__(self, nodeid: str):
        self.nodeid = nodeid
        self.planned: dict[str, int] = {}
        self.recorded: set[str] = set()

    def plan(self, scenario: str, trials: int) -> None:
        self.planned[scenario] = int(trials)

    def __call__(self, scenario: str, trials: int, survived: int, data_lost: int | None, note: str = "") -> dict:
        self.recorded.add(scenario)
        return record(scenario, trials, survived, data_lost, note=note, test=self.nodeid)

    def finish(self) -> None:
        """Record what the test planned but never reported (it stopped before recording)."""
        missing = {s: t for s, t in self.planned.items() if s not in self.recorded}
        if not self.recorded and not missing:
            missing = {f"{self.nodeid} (recorded no row)": 1}
        for scenario, trials in missing.items():
            record(scenario, trials, 0, None, note="the test stopped before recording its result", test=self.nodeid)


@pytest.fixture
def fault_record(request):
    """Counts the scenarios of one test (see FaultRecorder)."""
    recorder = FaultRecorder(request.node.nodeid)
    yield recorder
    recorder.finish()


# ------------------------------------------------------------------ plugin hooks (-p tests.fault_table)


def pytest_runtest_logreport(report):
    scenario = EXISTING_SCENARIOS.get(report.nodeid)
    if scenario is None:
        return
    if report.when == "call" or (report.when == "setup" and not report.passed):
        if report.skipped:
            return
        ok = report.passed
        record(scenario, 1, 1 if ok else 0, 0 if ok else None,
               note="" if ok else f"test {report.outcome}", test=report.nodeid)


def read_rows(path: str | os.PathLike) -> list[dict]:
    p = Path(path)
    if not p.is_file():
        return []
    return [json.loads(line) for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]


def table(rows: list[dict]) -> str:
    """A Markdown table: scenario, trials, survived, data lost (rows of one scenario summed)."""
    merged: dict[str, dict] = {}
    for r in rows:
        m = merged.setdefault(r["scenario"], {"trials": 0, "survived": 0, "data_lost": 0, "notes": []})
        m["trials"] += r["trials"]
        m["survived"] += r["survived"]
        m["data_lost"] = None if m["data_lost"] is None or r["data_lost"] is None else m["data_lost"] + r["data_lost"]
        if r.get("note"):
            m["notes"].append(r["note"])
    lines = ["| scenario | trials | survived | data lost |", "|---|---:|---:|---:|"]
    for name, m in merged.items():
        lost = "?" if m["data_lost"] is None else str(m["data_lost"])
        lines.append(f"| {name} | {m['trials']} | {m['survived']} | {lost} |")
    return "\n".join(lines)


def notes(rows: list[dict]) -> list[str]:
    return [f"{r['scenario']}: {r['note']}" for r in rows if r.get("note")]

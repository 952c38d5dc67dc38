"""`clasflow doctor` on this machine (no GPU): the real checks, each in its own subprocess; the
CPU ones pass (exit 0), the GPU ones are "not applicable", and `--require gpu` fails them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from clasflow import doctor

REPO = Path(__file__).resolve().parents[1]


def clasflow(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "CLASFLOW_ARTIFACT_ROOT")}
    return subprocess.run([sys.executable, "-m", "clasflow", "doctor", *args], capture_output=True, text=True,
                          cwd=REPO, env={**base, **(env or {})}, timeout=600)


@pytest.fixture(scope="module")
def here(tmp_path_factory):
    if doctor.gpu_count():
        pytest.skip("a GPU is present: these are the no-GPU answers")
    out = tmp_path_factory.mktemp("doctor") / "doctor.json"
    proc = clasflow("--json", "--out", str(out))
    return proc, json.loads(out.read_text())


@pytest.mark.slow
def test_cpu_checks_pass_here(here):
    proc, report = here
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert json.loads(proc.stdout) == report  # --json prints what --out writes
    rows = {r["check"]: r for r in report["rows"]}
    assert list(rows) == list(doctor.CHECKS) and report["ok"] is True and report["require_gpu"] is False
    status = {name: r["status"] for name, r in rows.items()}
    assert status == {"paddle": "ok", "amp-step": "warn", "dali": "ok", "onnxruntime": "ok", "tensorrt": "n/a",
                      "paddle-trt": "n/a", "nccl": "n/a", "shm": "ok", "object-store": "skipped", "mlflow": "skipped"}
    assert "CPU build" in rows["paddle"]["detail"]
    assert "the CPU pipeline" in rows["dali"]["detail"] and "64x48 JPEG" in rows["dali"]["detail"]
    assert "['CPUExecutionProvider']" in rows["onnxruntime"]["detail"]
    assert "fp32" in rows["amp-step"]["detail"]
    assert all("no GPU" in rows[n]["detail"] for n in ("tensorrt", "paddle-trt", "nccl"))
    assert all(r["seconds"] > 0 for r in rows.values())


@pytest.mark.slow
def test_require_gpu_is_refused_without_a_gpu():
    if doctor.gpu_count():
        pytest.skip("a GPU is present")
    proc = clasflow("--require", "gpu", "--check", "tensorrt", "--check", "paddle-trt", "--check", "shm")
    assert proc.returncode == 1
    assert "failed: tensorrt, paddle-trt" in proc.stderr
    for header in ("check", "status", "detail", "seconds"):
        assert header in proc.stdout  # the rich table
    assert "--require gpu: no GPU" in proc.stdout and "/dev/shm" in proc.stdout


def test_a_check_that_hangs_fails_its_row_only():
    row = doctor.run_check("paddle", timeout=0.05)
    assert row.status == "failed" and row.detail == "timed out after 0.05 s"


def test_mlflow_check_when_configured(tmp_path):
    proc = clasflow("--json", "--check", "mlflow", env={"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/m.db"})
    row = json.loads(proc.stdout)["rows"][0]
    assert proc.returncode == 0 and row["status"] == "ok" and "sqlite" in row["detail"]
    proc = clasflow("--json", "--check", "mlflow", env={"MLFLOW_TRACKING_URI": "http://user:secret@127.0.0.1:9/"})
    row = json.loads(proc.stdout)["rows"][0]
    assert proc.returncode == 1 and row["status"] == "failed" and "secret" not in proc.stdout + proc.stderr


def test_unknown_check_is_a_clear_error(capsys):
    from clasflow.cli import main

    assert main(["doctor", "--check", "gpu-magic"]) == 2
    assert "gpu-magic" in capsys.readouterr().err


@pytest.mark.parametrize("version", ["v2", "v1"])
def test_shm_check_reports_the_memory_limit_that_bounds_it(tmp_path, version):
    """The pipeline's /dev/shm has no size of its own: the container's memory limit bounds it, so
    the check reports that limit (from the cgroup files) next to what statvfs says."""
    cgroup = tmp_path / "cgroup"
    limit_file = cgroup / ("memory.max" if version == "v2" else "memory/memory.limit_in_bytes")
    limit_file.parent.mkdir(parents=True)
    st = os.statvfs("/dev/shm")
    size = st.f_frsize * st.f_blocks
    limit_file.write_text("max\n" if version == "v2" else "9223372036854771712\n")  # each version's "no limit"
    assert doctor.memory_limit(cgroup) is None
    assert "bounded" not in doctor.check_shm(cgroup=cgroup)
    limit = max(size // 2, 3 << 30) // (1 << 20) * (1 << 20)
    limit_file.write_text(f"{limit}\n")
    assert doctor.memory_limit(cgroup) == limit
    text = doctor.check_shm(cgroup=cgroup)
    if limit < size:
        assert f"bounded by the container's memory limit {limit / (1 << 30):.1f} GiB" in text
    limit_file.write_text(f"{512 << 20}\n")  # half a GiB: too little for DALI and the loader workers
    with pytest.raises(doctor.Warn, match="memory limit 0.5 GiB.*below 1 GiB.*larger memory limit"):
        doctor.check_shm(cgroup=cgroup)


def test_no_cgroup_memory_files_means_no_limit(tmp_path):
    assert doctor.memory_limit(tmp_path) is None

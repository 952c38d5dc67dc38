"""`clasflow doctor` on this machine (no GPU): the real checks, each in its own subprocess; the
CPU ones pass (exit 0), the GPU ones are "not applicable", and `--require gpu` fails them. The
service checks against real servers on loopback: `mlflow server` (up, down) and moto's S3 server
checking credentials (right, wrong, missing bucket), no credential ever printed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from clasflow import doctor
from tests.conftest import S3_ENV_VARS
from tests.services import MlflowServer, MotoServer

REPO = Path(__file__).resolve().parents[1]


def clasflow(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "CLASFLOW_ARTIFACT_ROOT", *S3_ENV_VARS)}
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


def _row(proc: subprocess.CompletedProcess) -> dict:
    (row,) = json.loads(proc.stdout)["rows"]
    return row


def test_mlflow_check_against_a_real_server(tmp_path, mlflow_server):
    """Up: ok, naming the server; down: failed, naming the address; credentials in the URI never shown."""
    proc = clasflow("--json", "--check", "mlflow", env={"MLFLOW_TRACKING_URI": mlflow_server.url})
    assert proc.returncode == 0 and _row(proc)["status"] == "ok", proc.stdout + proc.stderr
    assert _row(proc)["detail"] == f"MLflow at {mlflow_server.url} answers /health (200)"
    with_secret = mlflow_server.url.replace("http://", "http://clasflow-user:s3cr3t-pw@")
    for mode in (["--json"], []):  # JSON, then the table
        proc = clasflow(*mode, "--check", "mlflow", env={"MLFLOW_TRACKING_URI": with_secret})
        assert proc.returncode == 0 and "s3cr3t-pw" not in proc.stdout + proc.stderr and "clasflow-user" not in proc.stdout

    down = MlflowServer(tmp_path)  # never started: nothing listens on its port
    proc = clasflow("--json", "--check", "mlflow", env={"MLFLOW_TRACKING_URI": down.url.replace("http://", "http://u:s3cr3t-pw@")})
    row = _row(proc)
    assert proc.returncode == 1 and row["status"] == "failed" and "failed: mlflow" in proc.stderr
    assert row["detail"].startswith(f"RuntimeError: MLflow at {down.url} does not answer (ConnectionError)"), row
    assert "s3cr3t-pw" not in proc.stdout + proc.stderr

    proc = clasflow("--json", "--check", "mlflow", env={"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/m.db"})
    assert proc.returncode == 0 and _row(proc)["status"] == "ok" and "sqlite" in _row(proc)["detail"]


@pytest.fixture(scope="module")
def s3_with_auth(tmp_path_factory):
    """moto's S3 server that checks credentials (as MinIO does): one IAM user allowed s3:*, one bucket;
    after the setup, every request must be signed with that user's key."""
    import boto3
    import requests

    with MotoServer(tmp_path_factory.mktemp("moto-auth")) as server:
        setup = dict(endpoint_url=server.url, region_name="us-east-1", aws_access_key_id="setup", aws_secret_access_key="setup")
        iam = boto3.client("iam", **setup)
        iam.create_user(UserName="clasflow")
        iam.put_user_policy(UserName="clasflow", PolicyName="s3", PolicyDocument=json.dumps(
            {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}))
        key = iam.create_access_key(UserName="clasflow")["AccessKey"]
        boto3.client("s3", **setup).create_bucket(Bucket="clasflow")
        assert requests.post(f"{server.url}/moto-api/reset-auth", data=b"0", timeout=10).ok  # from now on, checked
        yield server, key["AccessKeyId"], key["SecretAccessKey"]


def test_object_store_check_against_moto(s3_with_auth):
    """Reachable with the right credentials: ok; a wrong secret, an unknown key, a missing bucket, or
    credentials written into the endpoint: failed, saying which; no credential in the table or JSON."""
    server, key_id, secret = s3_with_auth
    env = {"CLASFLOW_S3_ENDPOINT": server.url, "AWS_REGION": "us-east-1", "CLASFLOW_S3_ATTEMPTS": "2",
           "CLASFLOW_S3_BACKOFF": "0.05", "AWS_ACCESS_KEY_ID": key_id, "AWS_SECRET_ACCESS_KEY": secret,
           "CLASFLOW_ARTIFACT_ROOT": "s3://clasflow/artifacts"}
    cases = {
        "right": ({}, "ok", f"object store {server.url} answers for s3://clasflow/artifacts"),
        "wrong secret": ({"AWS_SECRET_ACCESS_KEY": "not-" + secret}, "failed", "SignatureDoesNotMatch"),
        "unknown key": ({"AWS_ACCESS_KEY_ID": "AKIAUNKNOWN0000000000"}, "failed", "InvalidAccessKeyId"),
        "missing bucket": ({"CLASFLOW_ARTIFACT_ROOT": "s3://no-such-bucket/artifacts"}, "failed",
                           "NoSuchBucket: The specified bucket does not exist; create the bucket or fix the URI"),
        "credentials in the endpoint": ({"CLASFLOW_S3_ENDPOINT": server.url.replace("http://", f"http://{key_id}:{secret}@")},
                                        "failed", "CLASFLOW_S3_ENDPOINT must not carry credentials"),
    }
    for case, (change, status, detail) in cases.items():
        run_env = {**env, **change}
        proc = clasflow("--json", "--check", "object-store", env=run_env)
        row = _row(proc)
        assert row["status"] == status and detail in row["detail"], (case, row)
        assert proc.returncode == (0 if status == "ok" else 1), case
        if case in ("wrong secret", "unknown key"):
            assert "check the credentials in AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY" in row["detail"], case
        table = clasflow("--check", "object-store", env=run_env)
        assert table.returncode == proc.returncode and "object-store" in table.stdout, case
        shown = proc.stdout + proc.stderr + table.stdout + table.stderr
        for credential in {key_id, secret, run_env["AWS_ACCESS_KEY_ID"], run_env["AWS_SECRET_ACCESS_KEY"]}:
            assert credential not in shown, case


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


def test_doctor_step_with_mlflow_down_fails_after_keeping_its_journal(tmp_path, s3_env, monkeypatch, caplog):
    """The pipeline's doctor step on a node whose MLflow is down: its own check fails the step, after
    its JSON and its MLflow journal are kept (its artifact and the object store) and named in a
    WARNING; synced later, its run holds the counts and doctor.json."""
    import logging

    from mlflow.tracking import MlflowClient

    from clasflow import steps, tracking
    from clasflow.errors import ClasflowError

    server = MlflowServer(tmp_path)  # started only for the sync
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server.url)
    monkeypatch.setenv("CLASFLOW_MLFLOW_CLOSE_RETRIES", "0")
    monkeypatch.setenv(steps.ARTIFACT_ROOT_ENV, s3_env.uri("artifacts"))
    profile = steps.Profile(experiment="doctor-down", pipeline_run="doctor-run")
    journal_dir = tmp_path / "mlflow_journal"
    with caplog.at_level(logging.WARNING, logger="clasflow"), \
            pytest.raises(ClasflowError, match=f"mlflow: RuntimeError: MLflow at {server.url} does not answer"):
        steps.doctor_step(str(tmp_path / "doctor.json"), False, profile, journal_dir=str(journal_dir), checks=["shm", "mlflow"])
    uri = s3_env.uri(f"artifacts/runs/doctor-run/mlflow/doctor/{tracking.JOURNAL}")
    left = tracking.pending(journal_dir / tracking.JOURNAL)
    assert left > 0 and any(f"MLflow did not get {left} records" in r.getMessage() and f"clasflow tracking sync {uri}" in
                            r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert json.loads((journal_dir / "doctor.json").read_text())["ok"] is False

    with server:
        assert tracking.sync_journal(uri) == left and tracking.sync_journal(journal_dir / tracking.JOURNAL) == 0
        client = MlflowClient(server.url)
        (run,) = client.search_runs([client.get_experiment_by_name("doctor-down").experiment_id], "tags.`clasflow.stage` = 'doctor'")
        assert run.data.metrics == {"doctor.ok": 1, "doctor.warn": 0, "doctor.failed": 1, "doctor.n/a": 0, "doctor.skipped": 0}
        assert [a.path for a in client.list_artifacts(run.info.run_id)] == ["doctor.json"]

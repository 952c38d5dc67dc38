"""Tracking faults: the MLflow server is SIGKILLed during training and started again on its port.

A real `mlflow server` (its own instance, sqlite backend) receives a `clasflow train` run in a
subprocess; as soon as epoch 1's metrics are in the run's journal the server is killed (SIGKILL,
possibly while that batch is in flight), training goes on without it, and the server is started
again a few seconds later (its startup takes ~30 s here). The run's close waits for it
(CLASFLOW_MLFLOW_CLOSE_RETRIES / _WAIT). At the end every metric point the journal recorded, of
every key and epoch, is in MLflow. test_train.py covers a server that is down for the whole run
(then `clasflow tracking sync`); the last test here, a journal kept in two copies (a step's artifact
and the object store) synced from both.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import CONFIGS, tiny_overrides
from tests.services import MlflowServer

ARCH = "MobileNetV3_small_x0_35"
EPOCHS = 6
EXPERIMENT = "fault-tracking"


def _journal_records(journal: Path) -> list[dict]:
    out = []
    if journal.is_file():
        for line in journal.read_text(encoding="utf-8").splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:  # a line being written
                pass
    return out


@pytest.mark.timeout(600)
def test_mlflow_killed_mid_training_loses_no_point(digits_data, tmp_path, fault_record):
    from mlflow.tracking import MlflowClient

    scenario = "tracking: MLflow server SIGKILLed after epoch 1, restarted on its port ~30 s later"
    fault_record.plan(scenario, 1)
    (tmp_path / "srv").mkdir()
    server = MlflowServer(tmp_path / "srv")
    out = tmp_path / "out"
    over = tiny_overrides(digits_data, classes=10, epochs=EPOCHS) + [
        f"ARCHITECTURE.name={ARCH}", "LEARNING_RATE.params.lr=0.02", f"model_save_dir={out}", "print_interval=100"]
    cmd = [sys.executable, "-m", "clasflow", "train", "-c", str(CONFIGS / "ResNet50_vd.yaml"), "--run-name", "killed-server",
           *sum((["-o", o] for o in over), [])]
    env = {**os.environ, "OMP_NUM_THREADS": "2", "MLFLOW_TRACKING_URI": server.url, "MLFLOW_EXPERIMENT_NAME": EXPERIMENT,
           "CLASFLOW_MLFLOW_CLOSE_RETRIES": "120", "CLASFLOW_MLFLOW_CLOSE_WAIT": "1"}
    journal = out / ARCH / "mlflow-journal.jsonl"
    with server:
        log_file = tmp_path / "train.log"
        with open(log_file, "w") as log:
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            deadline = time.monotonic() + 240
            while not any(r.get("op") == "metrics" and r.get("step") == 1 for r in _journal_records(journal)):
                assert proc.poll() is None, log_file.read_text()[-3000:]
                assert time.monotonic() < deadline, "epoch 1 never logged"
                time.sleep(0.02)
            server.stop()  # SIGKILL, the batch of epoch 1 possibly in flight
            killed_at = time.time()
            down_at_kill = proc.poll() is None
            time.sleep(3)
            server.start()  # same port, same sqlite file; ~30 s before it answers
            back_at = time.time()
            rc = proc.wait(timeout=300)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        text = log_file.read_text()
        records = _journal_records(journal)
        points = [(k, r["step"], r["ts"], v) for r in records if r["op"] == "metrics" for k, v in r["metrics"].items()]
        during_outage = sum(1 for _, _, ts, _ in points if killed_at * 1000 <= ts <= back_at * 1000)
        client = MlflowClient(server.url)
        exp = client.get_experiment_by_name(EXPERIMENT)
        runs = client.search_runs([exp.experiment_id]) if exp else []
        stored, duplicates = {}, 0
        for run in runs:
            for key in {k for k, *_ in points}:
                history = [(m.step, m.timestamp, m.value) for m in client.get_metric_history(run.info.run_id, key)]
                duplicates += len(history) - len(set(history))
                stored.setdefault(key, set()).update(history)
        lost = [p for p in points if (p[1], p[2], p[3]) not in stored.get(p[0], set())]
        steps = sorted({s for _, s, _, _ in points})
        finished = rc == 0 and len(runs) == 1 and runs[0].info.status == "FINISHED"
        fault_record(scenario, trials=1, survived=int(finished and not lost), data_lost=len(lost),
                     note=f"exit {rc}, {len(runs)} MLflow run(s); {len(points)} metric points over epochs "
                          f"{steps[0] if steps else '-'}-{steps[-1] if steps else '-'}, {during_outage} logged while the server was down, "
                          f"{len(lost)} lost, {duplicates} duplicated")

    assert rc == 0, text[-3000:]
    assert len(runs) == 1, [r.info.run_id for r in runs]
    run = runs[0]
    assert down_at_kill, "training ended before the server was killed: the fault did not hit"
    assert "unreachable" in text and "every point was delivered after the tracking server came back" in text, text[-3000:]
    assert steps == list(range(EPOCHS))
    assert during_outage > 0  # training went on while the server was down
    assert not lost, lost
    assert duplicates == 0
    assert run.info.status == "FINISHED"
    assert run.data.params["epochs"] == str(EPOCHS)


def test_close_retry_budget_from_the_environment(tmp_path, monkeypatch, caplog):
    """The budget the test above relies on: CLASFLOW_MLFLOW_CLOSE_RETRIES / _WAIT, bad values fall back."""
    from clasflow import tracking
    from tests.services import free_port

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{free_port()}")  # nothing listens
    waits: list[float] = []
    monkeypatch.setattr(tracking.time, "sleep", waits.append)
    monkeypatch.setenv("CLASFLOW_MLFLOW_CLOSE_RETRIES", "3")
    monkeypatch.setenv("CLASFLOW_MLFLOW_CLOSE_WAIT", "0.25")
    tracker = tracking.Tracker("budget", journal_dir=tmp_path / "a")
    tracker.log_metrics({"x": 1.0}, step=0)
    assert tracker.close() is False and waits == [0.25] * 3
    assert tracker.pending() > 0  # kept in the journal for `clasflow tracking sync`

    waits.clear()
    monkeypatch.setenv("CLASFLOW_MLFLOW_CLOSE_RETRIES", "many")
    monkeypatch.setenv("CLASFLOW_MLFLOW_CLOSE_WAIT", "-1")
    assert tracking.Tracker("bad", journal_dir=tmp_path / "b").close() is False
    assert waits == [tracking.CLOSE_WAIT] * tracking.CLOSE_RETRIES
    assert "CLASFLOW_MLFLOW_CLOSE_RETRIES='many'" in caplog.text and "CLASFLOW_MLFLOW_CLOSE_WAIT='-1'" in caplog.text
    waits.clear()
    assert tracking.Tracker("explicit", journal_dir=tmp_path / "c").close(retries=1, wait=0) is False
    assert waits == [0]


def test_a_journal_kept_twice_is_delivered_once(tmp_path, mlflow_server, s3_env, monkeypatch):
    """A step keeps its journal in its artifact and in the object store: syncing both copies, in
    either order, delivers every point once, into one run; while the object store cannot say what a
    sync of its copy delivered, the local copy is not sent."""
    from mlflow.tracking import MlflowClient

    from clasflow import steps, storage, tracking
    from clasflow.errors import ClasflowError
    from tests.services import free_port

    down = f"http://127.0.0.1:{free_port()}"  # nothing listens: the step's whole run without MLflow
    monkeypatch.setenv("CLASFLOW_MLFLOW_CLOSE_RETRIES", "0")
    monkeypatch.setenv(steps.ARTIFACT_ROOT_ENV, s3_env.uri("artifacts"))
    client = MlflowClient(mlflow_server.url)
    for first, second in (("s3", "local"), ("local", "s3")):
        monkeypatch.setenv("MLFLOW_TRACKING_URI", down)
        profile = steps.Profile("demo", experiment=f"two-copies-{first}", pipeline_run=f"copies-{first}")
        profile.env()
        folder = tmp_path / first
        with tracking.Tracker("step", journal_dir=folder, tags={"clasflow.stage": "step"}) as tracker:
            for step in range(3):
                tracker.log_metrics({"loss": 1.0 / (step + 1)}, step=step)
        metrics: dict[str, float] = {}
        published = steps.publish(folder, "mlflow/step", profile)
        left = steps.keep_journal(folder / tracking.JOURNAL, published, metrics)
        assert left > 0 and metrics["mlflow_pending"] == left
        copies = {"s3": storage.join(published, tracking.JOURNAL), "local": str(folder / tracking.JOURNAL)}

        monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.url)
        if first == "local":  # the object store down: the local copy cannot know what its copy delivered
            monkeypatch.setenv("CLASFLOW_S3_ENDPOINT", f"http://127.0.0.1:{free_port()}")
            with pytest.raises(ClasflowError, match=f"cannot read what a sync of its copy {published}.* twice"):
                tracking.sync_journal(copies["local"])
            monkeypatch.setenv("CLASFLOW_S3_ENDPOINT", s3_env.server.url)
            assert client.get_experiment_by_name(profile.experiment) is None  # nothing was sent
        assert tracking.sync_journal(copies[first]) == left
        assert tracking.sync_journal(copies[second]) == 0
        assert tracking.sync_journal(copies[first]) == 0
        assert tracking.pending(copies["local"]) == 0
        exp = client.get_experiment_by_name(profile.experiment).experiment_id
        runs = [r for r in client.search_runs([exp]) if r.data.tags["clasflow.stage"] != "pipeline"]
        assert len(runs) == 1 and runs[0].info.status == "FINISHED"
        history = client.get_metric_history(runs[0].info.run_id, "loss")
        assert sorted((m.step, m.value) for m in history) == [(0, 1.0), (1, 0.5), (2, 1.0 / 3)]

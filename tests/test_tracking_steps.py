"""The pipeline's steps against a real `mlflow server` and moto's S3 server: the MLflow run tree
without and with Kubeflow's MLflow plugin, artifacts under the pipeline run that made them, and
journals that survive a tracking server down for a whole step.

The steps run in this process at tiny sizes (a 4-class digits fixture, 32 px, 2 epochs) from randomly
initialised MobileNetV3 weights; the Kubeflow side of the plugin (parent run, one nested run per task,
parameters and metrics logged by the launcher) is played by MlflowClient calls doing what
KEP-12862 says the API server, driver and launcher do.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from clasflow import steps, storage, tracking
from tests.services import MlflowServer

CONFIG = "MobileNetV3_large_x1_0_finetune"
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("steps")
    dataset = root / "dataset"
    steps.prepare_dataset(dataset, "fixture:digits?classes=4&per_class=10&size=36")  # as the local end-to-end run
    weights = root / "weights"  # initial weights of the right shape (the demo zoo would pretrain them: minutes)
    weights.mkdir()
    import paddle

    from clasflow.models import build_model

    paddle.seed(0)
    paddle.save(build_model("MobileNetV3_large_x1_0", class_num=1000).state_dict(), str(weights / "MobileNetV3_large_x1_0_pretrained.pdparams"))
    return dataset, weights


@pytest.fixture(autouse=True)
def _step_env(monkeypatch):
    """The steps set these (Profile.env()) for the runs they start; undone after each test."""
    for name in ("MLFLOW_RUN_ID", "CLASFLOW_PROFILE", "CLASFLOW_PIPELINE_RUN", "MLFLOW_EXPERIMENT_NAME"):
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)


def _profile(run: str, experiment: str) -> steps.Profile:
    return steps.Profile("demo", image_size=32, epochs=2, batch_size=16, num_workers=0, experiment=experiment, pipeline_run=run)


# The doctor's checks in these steps: those that need no MLflow (with MLflow down its own check
# fails the doctor, as it should; tests/test_doctor.py has that) and no seconds of Paddle imports.
DOCTOR_CHECKS = ["shm", "object-store"]


def _run_steps(data, tmp: Path, profile: steps.Profile, export: bool = True) -> dict[str, dict]:
    """The pipeline's steps in its order, each with its journal where its component keeps it."""
    dataset, weights = data
    out = {"doctor": steps.doctor_step(str(tmp / "doctor.json"), False, profile, journal_dir=str(tmp / "doctor-journal"),
                                       checks=DOCTOR_CHECKS)}
    out["train"] = steps.train_step(CONFIG, str(dataset), str(tmp / "model"), profile, [str(weights)])
    out["eval"] = steps.eval_step(CONFIG, str(dataset), str(tmp / "model"), profile, str(tmp / "eval-journal"))
    model_dir = tmp / "export"
    if export:
        steps.export_step(CONFIG, str(dataset), str(tmp / "model"), str(model_dir), profile, onnx=False)
        out["benchmark"] = steps.benchmark_step(str(model_dir), str(tmp / "bench.json"), str(dataset), "paddle", "fp32", "1",
                                                repeats=3, profile=profile, journal_dir=str(tmp / "bench-journal"))
        _, out["parity"] = steps.parity_step(CONFIG, str(dataset), str(tmp / "model"), str(model_dir), str(tmp / "parity.json"),
                                             profile, backends="paddle", precisions="fp32",
                                             journal_dir=str(tmp / "parity-journal"))
    return out


def _points(journal: Path) -> set[tuple[str, int, int, float]]:
    records = [json.loads(line) for line in journal.read_text().splitlines()]
    return {(k, r["step"], r["ts"], v) for r in records if r["op"] == "metrics" for k, v in r["metrics"].items()}


def _stored(client, run_id: str, keys) -> set[tuple[str, int, int, float]]:
    return {(k, m.step, m.timestamp, m.value) for k in keys for m in client.get_metric_history(run_id, k)}


def test_without_the_plugin_one_parent_per_pipeline_run_and_artifacts_under_it(data, tmp_path, mlflow_server, s3_env, monkeypatch):
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.url)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    monkeypatch.setenv(steps.ARTIFACT_ROOT_ENV, s3_env.uri("artifacts"))
    client = MlflowClient(mlflow_server.url)
    metrics = {}
    for run in ("run-a", "run-b"):  # two pipeline runs: both kept, each under its own prefix
        profile = _profile(run, "tree")
        metrics[run] = _run_steps(data, tmp_path / run, profile, export=run == "run-a")
        steps.report_step(str(tmp_path / run / "report.html"), str(tmp_path / run / "report.md"), profile)

    exp = client.get_experiment_by_name("tree").experiment_id
    runs = client.search_runs([exp], "tags.`clasflow.pipeline_run` = 'run-a'")
    parents = [r for r in runs if r.data.tags["clasflow.stage"] == "pipeline"]
    assert len(parents) == 1 and parents[0].info.run_name == "run-a" and parents[0].info.status == "FINISHED"
    children = {r.info.run_name: r for r in runs if r.data.tags["clasflow.stage"] != "pipeline"}
    assert set(children) == {"doctor", CONFIG, f"eval-{CONFIG}", "benchmark", "parity"}
    for name, run in children.items():
        assert run.data.tags["mlflow.parentRunId"] == parents[0].info.run_id and run.info.status == "FINISHED", name
        assert run.data.tags.get("clasflow.device") == (None if name == "doctor" else "cpu"), name  # the doctor imports no Paddle
    assert children["doctor"].data.metrics == {"doctor.ok": 2, "doctor.warn": 0, "doctor.failed": 0, "doctor.n/a": 0,
                                               "doctor.skipped": 0}
    assert [a.path for a in client.list_artifacts(children["doctor"].info.run_id)] == ["doctor.json"]
    assert [a.path for a in client.list_artifacts(children["parity"].info.run_id)] == ["parity.json"]
    assert children["parity"].data.metrics["parity.ran"] == 1
    assert {step: m["mlflow_pending"] for step, m in metrics["run-a"].items()} == dict.fromkeys(metrics["run-a"], 0.0)
    train = children[CONFIG]
    assert train.data.tags["clasflow.loader.TRAIN"] in ("dali-cpu", "opencv")
    assert [m.step for m in client.get_metric_history(train.info.run_id, "valid_top1")] == [0, 1]
    bench = children["benchmark"].data.metrics
    assert bench["benchmark/ok"] == 1 and all(k.startswith("benchmark/") for k in bench)  # apart from the curves
    assert metrics["run-a"]["benchmark"]["ok"] == 1 and metrics["run-a"]["benchmark"]["mlflow_pending"] == 0
    # the KFP component metrics (task.*) never share a name with the run's own history
    task = set(steps.task_metrics(metrics["run-a"]["train"]))
    assert task and not task & set(train.data.metrics)
    assert {r.data.tags["mlflow.parentRunId"] for r in client.search_runs([exp], "tags.`clasflow.pipeline_run` = 'run-b'")
            if r.data.tags["clasflow.stage"] != "pipeline"} != {parents[0].info.run_id}

    keys = storage.list(s3_env.uri("artifacts/"))
    assert not [k for k in keys if "/runs/runs/" in k or "/runs/adhoc/" in k]
    for run in ("run-a", "run-b"):
        prefix = s3_env.uri(f"artifacts/runs/{run}/")
        mine = {k.removeprefix(prefix).split("/")[0] for k in keys if k.startswith(prefix)}
        assert {"models", "mlflow", "report"} <= mine, (run, mine)
        assert s3_env.uri(f"artifacts/runs/{run}/models/{CONFIG}/mlflow-journal.jsonl") in keys
        assert s3_env.uri(f"artifacts/runs/{run}/mlflow/doctor/mlflow-journal.jsonl") in keys
        assert s3_env.uri(f"artifacts/runs/{run}/report/report.html") in keys
    assert s3_env.uri(f"artifacts/runs/run-a/exported/{CONFIG}/inference.yml") in keys
    assert s3_env.uri("artifacts/runs/run-a/benchmark.json") in keys
    assert s3_env.uri("artifacts/runs/run-a/mlflow/parity/mlflow-journal.jsonl") in keys


def test_tracking_down_for_the_whole_steps_then_synced_loses_no_point(data, tmp_path, s3_env, monkeypatch, caplog):
    """Every step's journal is kept twice, in its artifact and in the object store; both copies are
    synced (by path and by s3:// URI, in both orders) once the server is up: every point arrives
    once, and the JSON results the report reads arrive with them (the s3:// ones from beside the
    journal: their local files are gone, as on another machine)."""
    from mlflow.tracking import MlflowClient

    (tmp_path / "srv").mkdir()
    server = MlflowServer(tmp_path / "srv")  # not started: down while the steps run
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server.url)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    monkeypatch.setenv("CLASFLOW_MLFLOW_CLOSE_RETRIES", "0")
    monkeypatch.setenv(steps.ARTIFACT_ROOT_ENV, s3_env.uri("artifacts"))
    profile = _profile("offline-run", "offline")
    with caplog.at_level(logging.WARNING, logger="clasflow"):
        metrics = _run_steps(data, tmp_path, profile)
    journals = {"doctor": tmp_path / "doctor-journal", "train": tmp_path / "model", "eval": tmp_path / "eval-journal",
                "benchmark": tmp_path / "bench-journal", "parity": tmp_path / "parity-journal"}
    journals = {step: folder / tracking.JOURNAL for step, folder in journals.items()}
    run_root = "artifacts/runs/offline-run"
    uris = {"doctor": s3_env.uri(f"{run_root}/mlflow/doctor/{tracking.JOURNAL}"),
            "train": s3_env.uri(f"{run_root}/models/{CONFIG}/{tracking.JOURNAL}"),
            "eval": s3_env.uri(f"{run_root}/mlflow/eval-{CONFIG}/{tracking.JOURNAL}"),
            "benchmark": s3_env.uri(f"{run_root}/mlflow/benchmark/{tracking.JOURNAL}"),
            "parity": s3_env.uri(f"{run_root}/mlflow/parity/{tracking.JOURNAL}")}
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    for step, journal in journals.items():
        left = tracking.pending(journal)
        assert left > 0 and metrics[step]["mlflow_pending"] == left, step
        assert any(f"clasflow tracking sync {uris[step]}" in w for w in warnings), step
        assert storage.exists(uris[step]), step
    assert json.loads((tmp_path / "model" / "metrics.json").read_text())["mlflow_pending"] == metrics["train"]["mlflow_pending"]
    expected = {step: _points(journal) for step, journal in journals.items()}
    assert all(expected.values())
    for name in ("doctor.json", "benchmark.json"):  # synced below by s3:// URI, as from another machine
        next(tmp_path.glob(f"*-journal/{name}")).unlink()

    with server:
        from clasflow.cli import main

        assert main(["tracking", "sync", str(journals["train"])]) == 0  # by path
        steps.report_step(str(tmp_path / "report.html"), str(tmp_path / "report.md"), profile)
        md = (tmp_path / "report.md").read_text()
        assert "## Warnings" in md
        for step in ("doctor", "eval", "benchmark", "parity"):
            assert f"clasflow tracking sync {uris[step]}" in md, step
        assert uris["train"] not in md  # delivered: no longer listed
        for step in ("doctor", "eval", "benchmark"):  # the object store's copy first, then the step artifact's
            assert main(["tracking", "sync", uris[step]]) == 0
            assert tracking.sync_journal(journals[step]) == 0, step
            assert tracking.sync_journal(uris[step]) == 0, step
        assert tracking.sync_journal(journals["parity"]) > 0  # the step artifact's first, then the object store's
        assert tracking.sync_journal(uris["parity"]) == 0
        assert tracking.sync_journal(journals["train"]) == 0 and tracking.sync_journal(uris["train"]) == 0

        client = MlflowClient(server.url)
        runs = client.search_runs([client.get_experiment_by_name("offline").experiment_id])
        parents = [r for r in runs if r.data.tags["clasflow.stage"] == "pipeline"]
        assert len(parents) == 1 and len(runs) == 6
        by_stage = {r.data.tags["clasflow.stage"]: r for r in runs}
        lost, doubled = {}, {}
        for step in journals:
            run = by_stage[step]
            assert run.data.tags["mlflow.parentRunId"] == parents[0].info.run_id and run.info.status == "FINISHED"
            keys = {k for k, *_ in expected[step]}
            lost[step] = expected[step] - _stored(client, run.info.run_id, keys)
            doubled[step] = sum(len(client.get_metric_history(run.info.run_id, k)) for k in keys) - len(expected[step])
        assert lost == dict.fromkeys(journals, set()) and doubled == dict.fromkeys(journals, 0)
        for step, name in (("doctor", "doctor.json"), ("benchmark", "benchmark.json"), ("parity", "parity.json")):
            assert [a.path for a in client.list_artifacts(by_stage[step].info.run_id)] == [name], step
        steps.report_step(str(tmp_path / "report2.html"), str(tmp_path / "report2.md"), profile)
        md = (tmp_path / "report2.md").read_text()
        assert "mlflow_pending" not in md and "dygraph top-1" in md  # the parity section, from its synced parity.json


def test_with_the_kfp_plugin_clasflow_logs_into_the_task_run(data, tmp_path, mlflow_server, monkeypatch):
    """KEP-12862: the API server makes a parent run per pipeline run, the driver a nested run per task
    (MLFLOW_RUN_ID on the container), the launcher logs the task's inputs and scalar output metrics
    into it and ends it. clasflow logs into that run, creates none, and ends none."""
    from mlflow.entities import Metric, Param
    from mlflow.tracking import MlflowClient

    client = MlflowClient(mlflow_server.url)
    exp = client.create_experiment("kfp-plugin")
    parent = client.create_run(exp, run_name="kfp pipeline run").info.run_id
    tasks = {t: client.create_run(exp, run_name=t, tags={"mlflow.parentRunId": parent}).info.run_id
             for t in ("finetune-3", "evaluate", "report")}
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.url)
    dataset, weights = data
    profile = _profile("kfp-run-1", "flowers102-quickstart")  # the pipeline's experiment: not where the plugin's runs are
    monkeypatch.setenv("MLFLOW_RUN_ID", tasks["finetune-3"])
    train = steps.train_step(CONFIG, str(dataset), str(tmp_path / "model"), profile, [str(weights)])
    monkeypatch.setenv("MLFLOW_RUN_ID", tasks["evaluate"])
    evaluation = steps.eval_step(CONFIG, str(dataset), str(tmp_path / "model"), profile, str(tmp_path / "eval-journal"))
    assert train["mlflow_pending"] == 0 and evaluation["mlflow_pending"] == 0

    assert len(client.search_runs([exp])) == 4 and client.get_experiment_by_name("flowers102-quickstart") is None
    run = client.get_run(tasks["finetune-3"])
    assert run.info.status == "RUNNING"  # the launcher ends it, not clasflow
    assert run.data.tags["clasflow.stage"] == "train" and run.data.params["epochs"] == "2"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "valid_top1")] == [0, 1]
    curve = client.get_metric_history(run.info.run_id, "valid_top1")
    # the launcher: the task's inputs as parameters, its output metrics, then the end (log-batch must not be refused)
    inputs = {"config": CONFIG, "profile": "demo", "image_size": "16", "profile_epochs": "0", "batch_size": "4",
              "num_workers": "0", "experiment": "flowers102-quickstart", "pipeline_run": "kfp-run-1"}
    client.log_batch(run.info.run_id, params=[Param(k, v) for k, v in inputs.items()],
                     metrics=[Metric(k, v, 0, 0) for k, v in steps.task_metrics(train).items()])
    client.set_terminated(run.info.run_id, "FINISHED")
    assert client.get_metric_history(run.info.run_id, "valid_top1") == curve
    assert client.get_run(tasks["evaluate"]).data.metrics["valid_top1"] == evaluation["valid_top1"]

    monkeypatch.setenv("MLFLOW_RUN_ID", tasks["report"])  # the report finds the runs in the plugin's experiment
    steps.report_step(str(tmp_path / "report.html"), str(tmp_path / "report.md"), profile)
    assert f"| {CONFIG} |" in (tmp_path / "report.md").read_text()
    assert client.get_run(parent).info.status == "RUNNING"  # the API server's to end

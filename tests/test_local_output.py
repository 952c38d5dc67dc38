"""What a local run leaves: no Paddle import noise in the output, MLflow artifacts beside the database."""

import os
import subprocess
import sys


def test_paddle_import_noise_is_dropped_and_the_rest_passes():
    code = ("import sys, warnings; import clasflow.engine.trainer, paddle; "
            "print('WARNING: kept', file=sys.stderr); warnings.warn('a real warning')")
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    quiet = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert quiet.returncode == 0, quiet.stderr
    assert "OMP_NUM_THREADS" not in quiet.stderr and "ccache" not in quiet.stderr, quiet.stderr
    assert "WARNING: kept" in quiet.stderr and "a real warning" in quiet.stderr
    # without clasflow first, Paddle does print them: the check above is not vacuous
    loud = subprocess.run([sys.executable, "-c", "import paddle"], capture_output=True, text=True, env=env, timeout=120)
    assert "OMP_NUM_THREADS set to 2" in loud.stderr and "No ccache found" in loud.stderr


def test_local_mlflow_artifacts_live_beside_the_database(tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    from clasflow.tracking import Tracker

    work, store = tmp_path / "work", tmp_path / "runs"
    work.mkdir()
    store.mkdir()
    monkeypatch.chdir(work)
    uri = f"sqlite:///{store / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    (work / "curve.txt").write_text("0.5\n")
    with Tracker("artifacts", experiment="local-artifacts", journal_dir=tmp_path / "journal") as tracker:
        tracker.log_metrics({"valid_top1": 0.5}, step=0)
        tracker.log_artifact(work / "curve.txt")
    assert sorted(p.name for p in work.iterdir()) == ["curve.txt"]  # no ./mlruns
    assert [p.name for p in (store / "mlartifacts").rglob("curve.txt")] == ["curve.txt"]
    exp = MlflowClient(uri).get_experiment_by_name("local-artifacts")
    assert exp.artifact_location == (store / "mlartifacts").as_uri()

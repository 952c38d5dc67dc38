"""MLflow tracking that never stops training and never loses a point.

Each train/eval/distill run is an MLflow run in an experiment (default
``flowers102-quickstart``). The tracking URI comes from ``MLFLOW_TRACKING_URI``, default an
embedded ``sqlite:///mlflow.db`` in the working directory. When ``MLFLOW_RUN_ID`` or
``MLFLOW_PARENT_RUN_ID`` is set (Kubeflow's MLflow integration injects them) the run nests
under that parent.

Every call goes through a local journal (``<dir>/mlflow-journal.jsonl``) first and is sent when
the server answers; while it does not, training goes on, points stay in the journal and are sent
when the server is back or at the end (`Tracker.close`). Points keep their own timestamps and
steps, so the history in MLflow is the same as if nothing had happened.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

DEFAULT_EXPERIMENT = "flowers102-quickstart"
DEFAULT_URI = "sqlite:///mlflow.db"
# Fail fast instead of MLflow's minutes of built-in retries: the journal covers outages.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")


CLOSE_RETRIES, CLOSE_WAIT = 5, 2.0  # Tracker.close's default budget (env CLASFLOW_MLFLOW_CLOSE_RETRIES / _WAIT)
# Set by the pipeline steps so that the report can pick one pipeline run's MLflow runs.
ENV_TAGS = {"CLASFLOW_PIPELINE_RUN": "clasflow.pipeline_run", "CLASFLOW_PROFILE": "clasflow.profile"}


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI


def local_artifact_location(uri: str) -> str | None:
    """Artifacts of a new experiment in a local sqlite store: ``mlartifacts/`` beside the database
    (MLflow's own default is ``./mlruns`` in whatever folder the process runs in)."""
    if not uri.startswith("sqlite:///"):
        return None
    return (Path(uri.removeprefix("sqlite:///")).resolve().parent / "mlartifacts").as_uri()


class Tracker:
    """One MLflow run fed through a journal. Use as a context manager."""

    def __init__(
        self,
        run_name: str,
        *,
        journal_dir: str | os.PathLike,
        experiment: str | None = None,
        params: dict[str, Any] | None = None,
        tags: dict[str, str] | None = None,
        enabled: bool = True,
    ):
        self.run_name = run_name
        self.experiment = experiment or os.environ.get("MLFLOW_EXPERIMENT_NAME") or DEFAULT_EXPERIMENT
        self.enabled = enabled
        self.journal = Path(journal_dir) / "mlflow-journal.jsonl"
        self.sent = 0  # journal lines already delivered
        self.run_id: str | None = None
        self.offline_since: float | None = None
        self.parent = os.environ.get("MLFLOW_PARENT_RUN_ID") or os.environ.get("MLFLOW_RUN_ID")
        self._client = None
        if enabled:
            self.journal.parent.mkdir(parents=True, exist_ok=True)
            self.journal.unlink(missing_ok=True)
            self._append({"op": "start", "run_name": run_name, "experiment": self.experiment, "parent": self.parent})
            self._append({"op": "params", "params": {k: _param(v) for k, v in (params or {}).items()}})
            env_tags = {tag: os.environ[var] for var, tag in ENV_TAGS.items() if os.environ.get(var)}
            self._append({"op": "tags", "tags": {**env_tags, **(tags or {})}})
            self.flush()

    @classmethod
    def from_journal(cls, journal: str | os.PathLike) -> "Tracker":
        """A tracker that re-sends a journal left behind by a run whose server stayed down."""
        tracker = cls.__new__(cls)
        tracker.journal, tracker.enabled, tracker.sent = Path(journal), True, 0
        tracker.run_id, tracker.offline_since, tracker._client = None, None, None
        start = tracker._lines()[0]
        tracker.run_name, tracker.experiment, tracker.parent = start["run_name"], start["experiment"], start["parent"]
        return tracker

    # -------------------------------------------------------------- public API

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        if self.enabled:
            self._append({"op": "metrics", "metrics": {k: float(v) for k, v in metrics.items()}, "step": int(step), "ts": int(time.time() * 1000)})
            self.flush()

    def log_artifact(self, path: str | os.PathLike, artifact_path: str | None = None) -> None:
        if self.enabled:
            self._append({"op": "artifact", "path": str(Path(path).resolve()), "artifact_path": artifact_path})
            self.flush()

    def close(self, status: str = "FINISHED", retries: int | None = None, wait: float | None = None) -> bool:
        """Send what is left (retrying) and end the run; True when everything was delivered.

        The retry budget (default 5 retries, 2 s apart) comes from ``CLASFLOW_MLFLOW_CLOSE_RETRIES``
        and ``CLASFLOW_MLFLOW_CLOSE_WAIT`` when not given: e.g. to wait out a tracking server restart.
        """
        if not self.enabled:
            return True
        retries = _env_number("CLASFLOW_MLFLOW_CLOSE_RETRIES", CLOSE_RETRIES, int) if retries is None else retries
        wait = _env_number("CLASFLOW_MLFLOW_CLOSE_WAIT", CLOSE_WAIT, float) if wait is None else wait
        self._append({"op": "end", "status": status})
        for attempt in range(retries + 1):
            if self.flush():
                if self.offline_since is not None:
                    log.info("MLflow: every point was delivered after the tracking server came back")
                return True
            if attempt < retries:
                time.sleep(wait)
        log.warning(
            "MLflow at %s is unreachable: %d records remain in %s; run `clasflow tracking sync %s` later",
            tracking_uri(), self.pending(), self.journal, self.journal,
        )
        return False

    def pending(self) -> int:
        return len(self._lines()) - self.sent

    def __enter__(self) -> "Tracker":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close("FINISHED" if exc_type is None else "KILLED" if exc_type is KeyboardInterrupt else "FAILED")

    # -------------------------------------------------------------- delivery

    def _append(self, record: dict[str, Any]) -> None:
        with open(self.journal, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def _lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.journal.read_text(encoding="utf-8").splitlines() if line.strip()]

    def flush(self) -> bool:
        """Send journal records not yet delivered; False (and keep them) if the server fails."""
        records = self._lines()
        try:
            for record in records[self.sent:]:
                self._send(record)
                self.sent += 1
        except Exception as exc:  # any transport or server error: keep the record for later
            if self.offline_since is None:
                self.offline_since = time.time()
                log.warning("MLflow at %s unreachable (%s); keeping metrics in %s and retrying", tracking_uri(), exc.__class__.__name__, self.journal)
            return False
        return True

    def client(self):
        if self._client is None:
            from mlflow.tracking import MlflowClient

            self._client = MlflowClient(tracking_uri())
        return self._client

    def _ensure_run(self) -> str:
        if self.run_id is None:
            client = self.client()
            exp = client.get_experiment_by_name(self.experiment)
            exp_id = exp.experiment_id if exp else client.create_experiment(
                self.experiment, artifact_location=local_artifact_location(tracking_uri()))
            tags = {"mlflow.runName": self.run_name}
            if self.parent:
                tags["mlflow.parentRunId"] = self.parent
            self.run_id = client.create_run(exp_id, tags=tags, run_name=self.run_name).info.run_id
            log.info("MLflow run %s (%s) in experiment %r at %s", self.run_id, self.run_name, self.experiment, tracking_uri())
        return self.run_id

    def _send(self, record: dict[str, Any]) -> None:
        from mlflow.entities import Metric, Param, RunTag

        run_id = self._ensure_run()
        client = self.client()
        op = record["op"]
        if op == "params" and record["params"]:
            items = [Param(k, v) for k, v in record["params"].items()]
            for i in range(0, len(items), 100):
                client.log_batch(run_id, params=items[i:i + 100])
        elif op == "tags" and record["tags"]:
            client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in record["tags"].items()])
        elif op == "metrics":
            client.log_batch(run_id, metrics=[Metric(k, v, record["ts"], record["step"]) for k, v in record["metrics"].items()])
        elif op == "artifact":
            path = Path(record["path"])
            if path.is_dir():
                client.log_artifacts(run_id, str(path), record["artifact_path"])
            elif path.is_file():
                client.log_artifact(run_id, str(path), record["artifact_path"])
        elif op == "end":
            client.set_terminated(run_id, record["status"])
        # "start" only carries what _ensure_run needs


def _env_number(name: str, default, kind):
    """A non-negative number from the environment; a bad value is reported and the default used
    (this runs while a run is being closed, where raising would lose the points still to send)."""
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = kind(text)
        if value < 0 or value != value:
            raise ValueError
    except ValueError:
        log.warning("%s=%r is not a non-negative %s; using %s", name, text, "integer" if kind is int else "number", default)
        return default
    return value


def _param(value: Any) -> str:
    text = json.dumps(value) if isinstance(value, (list, dict)) else str(value)
    return text[:6000]



def sync_journal(journal: str | os.PathLike) -> int:
    """Deliver a journal left by a run whose tracking server stayed down; return records sent."""
    tracker = Tracker.from_journal(journal)
    if not tracker.flush():
        from clasflow.errors import ClasflowError

        raise ClasflowError(f"MLflow at {tracking_uri()} is still unreachable; {journal} is kept")
    return tracker.sent

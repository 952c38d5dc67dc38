"""MLflow tracking that never stops training and never loses a point.

Each train/eval/distill/benchmark run is an MLflow run in an experiment (default
``flowers102-quickstart``). The tracking URI comes from ``MLFLOW_TRACKING_URI``, default an
embedded ``sqlite:///mlflow.db`` in the working directory. Where the run goes:

- ``MLFLOW_RUN_ID`` set (Kubeflow Pipelines' MLflow plugin sets it to the task's own nested run):
  log into that run and leave its lifecycle (start, end, status) to whoever made it;
- else ``MLFLOW_PARENT_RUN_ID`` set: a new run nested under that parent;
- else ``CLASFLOW_PIPELINE_RUN`` set (the pipeline's steps): a new run nested under the pipeline
  run's parent run (tag ``clasflow.stage=pipeline``), made by the first stage that needs it;
- else a top-level run.

Every call goes through a local journal (``<dir>/mlflow-journal.jsonl``) first and is sent when
the server answers; while it does not, training goes on, points stay in the journal and are sent
when the server is back or at the end (`Tracker.close`). What was delivered (the run id and the
count of records) is kept beside it (``mlflow-journal.jsonl.state.json``), so `sync_journal`
later sends exactly the rest, into the same run (an artifact whose file is gone is taken from
beside the journal, where the pipeline steps keep a copy). Points keep their own timestamps and steps,
so the history in MLflow is the same as if nothing had happened.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from clasflow.fsutil import write_text_atomic

log = logging.getLogger(__name__)

DEFAULT_EXPERIMENT = "flowers102-quickstart"
DEFAULT_URI = "sqlite:///mlflow.db"
# Fail fast instead of MLflow's minutes of built-in retries: the journal covers outages.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")


CLOSE_RETRIES, CLOSE_WAIT = 5, 2.0  # Tracker.close's default budget (env CLASFLOW_MLFLOW_CLOSE_RETRIES / _WAIT)
# Set by the pipeline steps so that the report can pick one pipeline run's MLflow runs.
ENV_TAGS = {"CLASFLOW_PIPELINE_RUN": "clasflow.pipeline_run", "CLASFLOW_PROFILE": "clasflow.profile"}
JOURNAL = "mlflow-journal.jsonl"
STATE_SUFFIX = ".state.json"
PIPELINE_STAGE = "pipeline"  # clasflow.stage of a pipeline run's parent run


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
        self.journal = Path(journal_dir) / JOURNAL
        self.sent = 0  # journal lines already delivered
        self.offline_since: float | None = None
        self._client = None
        self.start = {"op": "start", "run_name": run_name, "experiment": self.experiment,
                      "run_id": os.environ.get("MLFLOW_RUN_ID") or None, "parent": os.environ.get("MLFLOW_PARENT_RUN_ID") or None,
                      "pipeline_run": os.environ.get("CLASFLOW_PIPELINE_RUN") or None, "profile": os.environ.get("CLASFLOW_PROFILE") or None}
        self.run_id: str | None = None
        if enabled:
            self.journal.parent.mkdir(parents=True, exist_ok=True)
            self.journal.unlink(missing_ok=True)
            _state_path(self.journal).unlink(missing_ok=True)
            self._append(self.start)
            self._append({"op": "params", "params": {k: _param(v) for k, v in (params or {}).items()}})
            env_tags = {tag: os.environ[var] for var, tag in ENV_TAGS.items() if os.environ.get(var)}
            self._append({"op": "tags", "tags": {**env_tags, "clasflow.run_name": run_name, **(tags or {})}})
            self.flush()

    @classmethod
    def from_journal(cls, journal: str | os.PathLike) -> "Tracker":
        """A tracker that re-sends a journal left behind by a run whose server stayed down."""
        tracker = cls.__new__(cls)
        tracker.journal, tracker.enabled = Path(journal), True
        tracker.offline_since, tracker._client = None, None
        state = read_state(tracker.journal)
        tracker.sent, tracker.run_id = state["sent"], state["run_id"]
        tracker.start = tracker._lines()[0]
        tracker.run_name, tracker.experiment = tracker.start["run_name"], tracker.start["experiment"]
        return tracker

    @property
    def owns_run(self) -> bool:
        """False when logging into a run someone else made (``MLFLOW_RUN_ID``): its end is theirs."""
        return not self.start.get("run_id")

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
        before = (self.sent, self.run_id)
        try:
            for record in records[self.sent:]:
                self._send(record)
                self.sent += 1
        except Exception as exc:  # any transport or server error: keep the record for later
            if self.offline_since is None:
                self.offline_since = time.time()
                log.warning("MLflow at %s unreachable (%s); keeping metrics in %s and retrying", tracking_uri(), exc.__class__.__name__, self.journal)
            return False
        finally:
            if (self.sent, self.run_id) != before:
                write_state(self.journal, run_id=self.run_id, sent=self.sent)
        return True

    def client(self):
        if self._client is None:
            from mlflow.tracking import MlflowClient

            self._client = MlflowClient(tracking_uri())
        return self._client

    def _ensure_run(self) -> str:
        if self.run_id is None and not self.owns_run:
            self.run_id = self.client().get_run(self.start["run_id"]).info.run_id  # it must exist
            log.info("MLflow: logging into run %s (MLFLOW_RUN_ID, e.g. Kubeflow's MLflow plugin) at %s", self.run_id, tracking_uri())
        elif self.run_id is None:
            client = self.client()
            exp_id = experiment_id(client, self.experiment)
            parent = self.start.get("parent")
            if not parent and self.start.get("pipeline_run"):
                parent = pipeline_parent(client, exp_id, self.start["pipeline_run"], self.start.get("profile"))
            tags = {"mlflow.runName": self.run_name}
            if parent:
                tags["mlflow.parentRunId"] = parent
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
            if not path.exists():  # synced after the step's folders went, or elsewhere: the copy beside the journal
                path = self.journal.parent / path.name
            if path.is_dir():
                client.log_artifacts(run_id, str(path), record["artifact_path"])
            elif path.is_file():
                client.log_artifact(run_id, str(path), record["artifact_path"])
            else:
                log.warning("MLflow: artifact %s no longer exists (nor beside the journal); run %s goes without it",
                            record["path"], run_id)
        elif op == "end" and self.owns_run:
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



def _state_path(journal: Path) -> Path:
    return journal.with_name(journal.name + STATE_SUFFIX)


def read_state(journal: str | os.PathLike) -> dict[str, Any]:
    """What of a journal was delivered: ``{"run_id": ..., "sent": records}`` (nothing yet: None, 0)."""
    path = _state_path(Path(journal))
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {"run_id": None, "sent": 0}


def write_state(journal: str | os.PathLike, **changes: Any) -> None:
    """Update a journal's delivery state (``run_id``, ``sent``, ``published``: its object-store copy)."""
    write_text_atomic(_state_path(Path(journal)), json.dumps({**read_state(journal), **changes}))


def pending(journal: str | os.PathLike) -> int:
    """Records of a journal not delivered to MLflow (0 for a journal that does not exist)."""
    journal = Path(journal)
    if not journal.is_file():
        return 0
    lines = sum(1 for line in journal.read_text(encoding="utf-8").splitlines() if line.strip())
    return lines - read_state(journal)["sent"]


def experiment_id(client, name: str) -> str:
    exp = client.get_experiment_by_name(name)
    return exp.experiment_id if exp else client.create_experiment(name, artifact_location=local_artifact_location(tracking_uri()))


def pipeline_parent(client, exp_id: str, pipeline_run: str, profile: str | None = None) -> str:
    """The parent run of one pipeline run (found by tag, else made): without Kubeflow's MLflow plugin
    the pipeline's stages nest under it, the same shape the plugin gives. Should two stages make it
    at the same moment, both take the oldest and the other is deleted."""
    query = f"tags.`clasflow.stage` = '{PIPELINE_STAGE}' and tags.`clasflow.pipeline_run` = '{pipeline_run}'"
    found = client.search_runs([exp_id], query)
    if not found:
        tags = {"clasflow.stage": PIPELINE_STAGE, "clasflow.pipeline_run": pipeline_run, "mlflow.runName": pipeline_run}
        if profile:
            tags["clasflow.profile"] = profile
        mine = client.create_run(exp_id, tags=tags, run_name=pipeline_run).info.run_id
        found = client.search_runs([exp_id], query)
        oldest = min(found, key=lambda r: (r.info.start_time, r.info.run_id)).info.run_id
        if oldest != mine:
            client.delete_run(mine)
        return oldest
    return min(found, key=lambda r: (r.info.start_time, r.info.run_id)).info.run_id


def end_pipeline_parent(experiment: str, pipeline_run: str, status: str = "FINISHED") -> None:
    """Mark a pipeline run's parent run (made by `pipeline_parent`) as ended, if there is one."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri())
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return
    query = f"tags.`clasflow.stage` = '{PIPELINE_STAGE}' and tags.`clasflow.pipeline_run` = '{pipeline_run}'"
    for run in client.search_runs([exp.experiment_id], query):
        if run.info.status == "RUNNING":
            client.set_terminated(run.info.run_id, status)


def sync_journal(journal: str | os.PathLike) -> int:
    """Deliver what a run left undelivered in its journal (a path, or the ``s3://`` URI of the copy
    a pipeline step published); return the records sent.

    A step's journal has two copies, its artifact and the object store's, and a sync of either must
    not send what a sync of the other did: the local copy names the other (``published`` in its
    state), its delivery state is read from there before sending (the furthest one wins) and written
    back after."""
    from clasflow import storage
    from clasflow.errors import ClasflowError

    if str(journal).startswith("s3://"):
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            return sync_journal(_fetch_published(str(journal), Path(tmp)))
    if not Path(journal).is_file():
        raise ClasflowError(f"{journal}: no such journal (an {JOURNAL} written by a clasflow run)")
    published = read_state(journal).get("published")
    if published:
        _take_published_state(Path(journal), published)
    tracker = Tracker.from_journal(journal)
    before = tracker.sent
    delivered = tracker.flush()
    if published:
        storage.upload(_state_path(Path(journal)), published + STATE_SUFFIX)
    if not delivered:
        raise ClasflowError(f"MLflow at {tracking_uri()} is still unreachable; {journal} is kept ({tracker.pending()} records)")
    return tracker.sent - before


def _fetch_published(uri: str, folder: Path) -> Path:
    """The object-store copy of a journal into `folder`, with the files it logs that are kept beside it."""
    from clasflow import storage

    local = storage.download(uri, folder / JOURNAL)
    write_state(local, published=uri)
    beside = uri.rsplit("/", 1)[0]
    for line in local.read_text(encoding="utf-8").splitlines():
        record = json.loads(line) if line.strip() else {}
        name = Path(record.get("path", "")).name
        if record.get("op") == "artifact" and name and storage.exists(f"{beside}/{name}"):
            storage.download(f"{beside}/{name}", folder / name)
    return local


def _take_published_state(journal: Path, published: str) -> None:
    """Adopt the delivery state of a journal's object-store copy when a sync of it got further."""
    import tempfile

    from clasflow import storage
    from clasflow.errors import ClasflowError, StorageError

    with tempfile.TemporaryDirectory() as tmp:
        try:
            if not storage.exists(published + STATE_SUFFIX):
                return
            theirs = json.loads(storage.download(published + STATE_SUFFIX, Path(tmp) / "state.json").read_text())
        except StorageError as exc:
            raise ClasflowError(f"{journal}: cannot read what a sync of its copy {published} delivered ({exc}); syncing "
                                "now could send its points twice: run it again when the object store answers") from exc
    if theirs.get("sent", 0) > read_state(journal)["sent"]:
        write_state(journal, run_id=theirs["run_id"], sent=theirs["sent"])

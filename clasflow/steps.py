"""The pipeline's steps: each one adapts folders (KFP artifacts) and profile parameters to a stage.

Every step is a plain function of paths and values, so the KFP components in ``components/``
stay one-line calls, and the same steps run under ``kfp.local`` or a cluster. A profile
shrinks the quick-start configs without editing them: image size, epochs, batch size; the
dataset source (``official``, a mirror URL, or ``fixture:<source>?...`` such as the demo's
``fixture:glyphs``) and the zoo (official, a mirror, or ``demo``: weights pretrained offline by
``clasflow.demo_zoo``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import urllib.parse
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from clasflow import storage
from clasflow.config import config_from_dict, load_raw
from clasflow.errors import ClasflowError, ConfigError
from clasflow.fsutil import file_digest, write_text_atomic

log = logging.getLogger(__name__)

DATASET_META = "dataset.json"
QUICK_START = (
    "ResNet50_vd", "ResNet50_vd_finetune", "ResNet50_vd_ssld_finetune",
    "ResNet50_vd_ssld_random_erasing_finetune", "MobileNetV3_large_x1_0_finetune", "R50_vd_distill_MV3_large_x1_0",
)


def config_dir() -> Path:
    """Where the quick-start YAMLs live: $CLASFLOW_CONFIG_DIR, the source checkout, or the image."""
    candidates = [os.environ.get("CLASFLOW_CONFIG_DIR"), Path(__file__).resolve().parents[1] / "configs" / "quick_start",
                  "/opt/clasflow/configs/quick_start"]
    for c in candidates:
        if c and Path(c, "ResNet50_vd.yaml").is_file():
            return Path(c)
    raise ClasflowError("quick-start configs not found; set CLASFLOW_CONFIG_DIR to the configs/quick_start folder")


@dataclass
class Profile:
    """How big a run is (0 / -1: keep the config's value) and where it reports to."""

    name: str = "full"
    image_size: int = 0
    epochs: int = 0
    batch_size: int = 0
    num_workers: int = -1
    experiment: str = ""
    pipeline_run: str = ""
    seed: int = 0  # the training seed (initialisation, sample order, augmentations)

    def env(self) -> None:
        """MLflow tags and experiment of the runs this step starts."""
        os.environ["CLASFLOW_PROFILE"] = self.name
        if self.pipeline_run:
            os.environ["CLASFLOW_PIPELINE_RUN"] = self.pipeline_run
        if self.experiment:
            os.environ["MLFLOW_EXPERIMENT_NAME"] = self.experiment


# ------------------------------------------------------------------ artifacts and content cache

ARTIFACT_ROOT_ENV = "CLASFLOW_ARTIFACT_ROOT"  # e.g. s3://clasflow/artifacts (the chart's ConfigMap sets it)


def publish(path: str | os.PathLike, name: str, profile: "Profile") -> str | None:
    """Upload a step's output (file or folder) under ``$CLASFLOW_ARTIFACT_ROOT/runs/<pipeline run>/<name>``."""
    root = os.environ.get(ARTIFACT_ROOT_ENV)
    if not root:
        return None
    prefix = storage.join(storage.run_prefix(root, profile.pipeline_run or "adhoc"), name)
    path = Path(path)
    if path.is_dir():
        storage.upload_dir(path, prefix)
    else:
        storage.upload(path, prefix)
    log.info("published %s to %s", path, prefix)
    return prefix



def task_metrics(metrics: dict[str, float]) -> dict[str, float]:
    """A step's metrics as its KFP component outputs them: ``task.<name>``. Kubeflow's MLflow plugin
    logs a task's output metrics into the same MLflow run clasflow logs its per-epoch history to, so
    they must not share a name (a ``valid_top1`` point at step 0 would join the Top1 curve)."""
    return {f"task.{k}": float(v) for k, v in metrics.items()}


def keep_journal(journal: Path, published: str | None, metrics: dict[str, float]) -> int:
    """After a tracked stage: record ``mlflow_pending`` (journal records MLflow did not get) in the
    step's metrics and, when there are any, say where the journal is kept and how to send it."""
    from clasflow.tracking import STATE_SUFFIX, pending, write_state

    left = pending(journal)
    metrics["mlflow_pending"] = float(left)
    if published and journal.is_file():  # both copies know of each other: a sync of either updates the other
        write_state(journal, published=storage.join(published, journal.name))
        storage.upload(journal.with_name(journal.name + STATE_SUFFIX), storage.join(published, journal.name) + STATE_SUFFIX)
    if left:
        where = storage.join(published, journal.name) if published else str(journal)
        log.warning("MLflow did not get %d records of this step; they are kept in %s (and the step's artifact): run "
                    "`clasflow tracking sync %s` when the tracking server answers", left, where, where)
    return left


def _cache_key(kind: str, ident: str) -> str:
    return f"index/{kind}-{hashlib.sha256(ident.encode()).hexdigest()[:40]}"


def cache_restore(cache_root: str, kind: str, ident: str, dest: Path) -> bool:
    """Fetch `dest` from the content cache when the index knows `ident`."""
    if not cache_root:
        return False
    index = storage.join(cache_root, _cache_key(kind, ident))
    if not storage.exists(index):
        return False
    with tempfile.TemporaryDirectory() as tmp:
        sha = Path(storage.download(index, Path(tmp) / "sha")).read_text().strip()
    hit = storage.cache_get(sha, cache_root, dest) is not None
    log.info("cache %s for %s (%s)", "hit" if hit else "miss", dest.name, ident)
    return hit


def cache_store(cache_root: str, kind: str, ident: str, path: Path) -> None:
    if not cache_root:
        return
    storage.cache_put(path, cache_root)
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "sha").write_text(file_digest(path))
        storage.upload(Path(tmp) / "sha", storage.join(cache_root, _cache_key(kind, ident)))


# ------------------------------------------------------------------ dataset


def _fixture_spec(source: str) -> dict[str, Any]:
    parsed = urllib.parse.urlparse(source.replace("fixture:", "fixture://", 1))
    spec = {"source": parsed.netloc or "digits", "classes": 10, "per_class": 20, "size": 64, "seed": 0, "train": 0, "valid": 0}
    if spec["source"] == "glyphs":
        spec["offset"] = 0
    for key, value in urllib.parse.parse_qsl(parsed.query):
        if key not in spec:
            known = ", ".join(k for k in spec if k != "source")
            raise ConfigError(f"dataset source {source!r}: unknown option {key!r}; known: {known}")
        spec[key] = int(value)
    return spec


def prepare_dataset(out_dir: str | os.PathLike, source: str = "official", cache_root: str = "") -> dict[str, Any]:
    """flowers102 lists in `out_dir` from the official files, a mirror, or a fixture."""
    from clasflow.data.fixture import build_fixture
    from clasflow.data.flowers102 import OFFICIAL_MD5, OFFICIAL_URL_BASE, prepare_flowers102

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if source.startswith("fixture:"):
        spec = _fixture_spec(source)
        build_fixture(out, **spec)
        report = prepare_flowers102(out, download=False, strict=True)
    else:
        url_base = OFFICIAL_URL_BASE if source in ("", "official") else source
        for name, md5 in OFFICIAL_MD5.items():  # official files by their md5 pins
            if url_base == OFFICIAL_URL_BASE:
                cache_restore(cache_root, "md5", md5, out / name)
        report = prepare_flowers102(out, url_base=url_base)
        if url_base == OFFICIAL_URL_BASE:
            for name, md5 in OFFICIAL_MD5.items():
                cache_store(cache_root, "md5", md5, out / name)
    meta = {"source": source, "classes": report.classes, "counts": report.counts, "bad_images": len(report.bad_images)}
    write_text_atomic(out / DATASET_META, json.dumps(meta, indent=2))
    return meta


def read_dataset_meta(dataset_dir: str | os.PathLike) -> dict[str, Any]:
    path = Path(dataset_dir) / DATASET_META
    if not path.is_file():
        raise ClasflowError(f"{path} not found: {dataset_dir} was not made by the dataset step")
    return json.loads(path.read_text())


# ------------------------------------------------------------------ weights


def fetch_pretrained(arch: str, out_dir: str | os.PathLike, zoo_url: str = "", cache_root: str = "") -> dict[str, Any]:
    """The pretrained weights of `arch` into `out_dir` (official zoo, a mirror, or ``demo``)."""
    from clasflow.demo_zoo import ensure_demo_zoo
    from clasflow.zoo import download_weights, lookup

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if zoo_url == "demo":  # built once per machine by clasflow.demo_zoo
        result = download_weights(arch, out, url_base=f"file://{ensure_demo_zoo()}")
    else:
        entry = lookup(arch)
        filename = entry.v2_pdparams.rsplit("/", 1)[1]
        ident = f"{zoo_url or 'official'}/{filename}"
        cache_restore(cache_root, "url", ident, out / filename)
        result = download_weights(arch, out, url_base=zoo_url or None)
        cache_store(cache_root, "url", ident, Path(result.path))
    return asdict(result)


# ------------------------------------------------------------------ configs


def _set_op_arg(transforms: list, op: str, key: str, value: Any) -> None:
    for item in transforms:
        if isinstance(item, dict) and op in item:
            item[op] = {**(item[op] or {}), key: value}


def set_image_size(raw: dict, s: int) -> None:
    """Train crops and valid resize/crop of a raw config for `s` px images (the seed's 256/224 ratio)."""
    raw["image_shape"] = [3, s, s]
    _set_op_arg(raw["TRAIN"]["transforms"], "RandCropImage", "size", s)
    _set_op_arg(raw["VALID"]["transforms"], "ResizeImage", "resize_short", round(s * 256 / 224))
    _set_op_arg(raw["VALID"]["transforms"], "CropImage", "size", s)


def build_config(name: str, dataset_dir: str | os.PathLike, out_dir: str | os.PathLike, profile: Profile,
                 pretrained: list[str] | None = None):
    """A quick-start config pointed at the dataset, the output folder and the weights, resized by `profile`."""
    if name not in QUICK_START:
        raise ConfigError(f"config {name!r} is not a quick-start config; choose from {', '.join(QUICK_START)}")
    raw = load_raw(config_dir() / f"{name}.yaml")
    data = read_dataset_meta(dataset_dir)
    raw["classes_num"] = data["classes"]
    raw["model_save_dir"] = str(out_dir)
    raw["seed"] = profile.seed
    for section in ("TRAIN", "VALID"):
        sec = raw[section]
        sec["file_list"] = str(Path(dataset_dir) / Path(sec["file_list"]).name)
        sec["data_dir"] = str(dataset_dir)
        if profile.batch_size > 0:
            sec["batch_size"] = profile.batch_size
        if profile.num_workers >= 0:
            sec["num_workers"] = profile.num_workers
    raw["total_images"] = data["counts"][Path(raw["TRAIN"]["file_list"]).name]
    if profile.epochs > 0:
        raw["epochs"] = profile.epochs
    if profile.image_size > 0:
        set_image_size(raw, profile.image_size)
    if pretrained is not None:
        if isinstance(raw.get("pretrained_model"), list):  # distillation: [teacher, student]
            raw["pretrained_model"] = list(pretrained) if pretrained else ["", ""]
        else:
            raw["pretrained_model"] = pretrained[0] if pretrained else ""
    return config_from_dict(raw, f"{name}.yaml (profile {profile.name})", check_paths=True)


def _weights_in(folder: str | os.PathLike) -> str:
    """The PaddleClas prefix of the weights in a folder made by fetch_pretrained or train_step."""
    folder = Path(folder)
    found = sorted(folder.glob("*.pdparams"))
    if len(found) == 1:
        return str(found[0].with_suffix(""))
    if (folder / "final" / "ppcls.pdparams").is_file():
        return str(folder / "final" / "ppcls")
    raise ClasflowError(f"no weights in {folder}: expected one .pdparams file or final/ppcls.pdparams")


KEEP_CHECKPOINTS_ENV = "CLASFLOW_KEEP_CHECKPOINTS"  # 1: keep a finished step's stored checkpoints


def checkpoint_store(name: str, cfg, profile: "Profile"):
    """Where a training step keeps its checkpoints: ``$CLASFLOW_ARTIFACT_ROOT/runs/<pipeline
    run>/checkpoints/<config>-<config hash>/`` (None without an artifact root or a run id)."""
    from clasflow.engine.stored import CheckpointStore

    root = os.environ.get(ARTIFACT_ROOT_ENV)
    if not root:
        return None
    if not profile.pipeline_run:
        log.warning("no pipeline run id: %s's checkpoints stay in this pod (a retried step starts again from epoch 0)", name)
        return None
    return CheckpointStore(storage.join(storage.run_prefix(root, profile.pipeline_run), "checkpoints", f"{name}-{cfg.hash()}"))


def train_step(name: str, dataset_dir: str, out_dir: str, profile: Profile, pretrained_dirs: list[str] = (),
               run_name: str = "", gpus: int = 1) -> dict[str, float]:
    """Train one quick-start config; keep final/, best_model/ and the MLflow journal in `out_dir`
    (the model artifact).

    With an artifact root, every checkpoint is stored under the pipeline run and config, and a
    step started again for them (a retried task on a new pod) resumes from the latest complete
    stored one; the stored checkpoints are removed once the step succeeds (kept with
    ``CLASFLOW_KEEP_CHECKPOINTS=1``). `gpus` > 1 runs one process per GPU under
    paddle.distributed.launch (rank 0 writes checkpoints, the store and MLflow).
    """
    from clasflow.engine import checkpoint as ckpt
    from clasflow.engine.trainer import train
    from clasflow.tracking import JOURNAL

    profile.env()
    work = Path(out_dir)
    cfg = build_config(name, dataset_dir, work / "checkpoints", profile, [_weights_in(d) for d in pretrained_dirs])
    arch_dir = work / "checkpoints" / cfg.ARCHITECTURE.name
    store = checkpoint_store(name, cfg, profile)
    if store is not None:
        found = store.restore(arch_dir)
        if found is not None:
            meta = ckpt.read_meta(found)
            log.info("resuming from the stored checkpoint %s (epoch %d, step %d)", store.prefix + found.name, *meta.next_position())
        cfg = cfg.model_copy(update={"checkpoints": "auto"})
    if gpus > 1:
        final, best_top1, best_epoch = _train_launched(cfg, arch_dir, gpus, run_name or name, store)
        for kept in arch_dir.glob(JOURNAL + "*"):  # rank 0's journal (and its state), out of the folder deleted below
            shutil.move(kept, work / kept.name)
    else:
        result = train(cfg, run_name=run_name or name, on_checkpoint=store.put if store is not None else None, journal_dir=work)
        final, best_top1, best_epoch = result.final, result.best_top1, result.best_epoch
    last = arch_dir / str(cfg.epochs - 1)
    shutil.copytree(last, work / "final", dirs_exist_ok=True)
    shutil.copytree(arch_dir / "best_model", work / "best_model", dirs_exist_ok=True)
    shutil.copy(arch_dir / "config.resolved.yaml", work / "config.yaml")
    shutil.rmtree(work / "checkpoints")  # per-epoch checkpoints stay out of the artifact
    metrics = {"best_valid_top1": best_top1, "best_epoch": float(best_epoch)}
    metrics.update({k: v for k, v in final.items() if isinstance(v, float)})
    metrics["mlflow_pending"] = 0.0  # counted below, after the journal is published with the model
    write_text_atomic(work / "metrics.json", json.dumps(metrics, indent=2))
    published = publish(work, f"models/{name}", profile)
    if keep_journal(work / JOURNAL, published, metrics):
        write_text_atomic(work / "metrics.json", json.dumps(metrics, indent=2))
    if store is not None:
        if os.environ.get(KEEP_CHECKPOINTS_ENV, "0") == "1":
            log.info("stored checkpoints kept in %s (%s=1)", store.prefix, KEEP_CHECKPOINTS_ENV)
        else:
            log.info("step finished: removed %d stored checkpoint objects from %s", store.clear(), store.prefix)
    return metrics


def _train_launched(cfg, arch_dir: Path, gpus: int, run_name: str, store) -> tuple[dict, float, int]:
    """Train with one process per GPU under paddle.distributed.launch (CPU processes when this
    machine has no GPU, with a warning); returns (final epoch metrics, best top1, best epoch)
    as rank 0's last checkpoint records them."""
    import signal
    import subprocess
    import sys

    import yaml

    from clasflow.engine import checkpoint as ckpt
    from clasflow.engine.runtime import gpu_available

    config = arch_dir.parent / "train_config.yaml"
    config.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(config, yaml.safe_dump(cfg.to_raw(), sort_keys=False))
    if gpu_available():
        devices = ["--devices", ",".join(str(i) for i in range(gpus))]
    else:
        log.warning("gpus=%d but this machine has no GPU: running %d data-parallel CPU processes", gpus, gpus)
        devices = ["--nproc_per_node", str(gpus)]
    logs = arch_dir.parents[1] / "logs"  # kept with the model: one workerlog.N per rank
    cmd = [sys.executable, "-m", "paddle.distributed.launch", *devices, "--log_dir", str(logs),
           str(Path(sys.executable).parent / "clasflow"), "train", "-c", str(config), "--run-name", run_name]
    if store is not None:
        cmd += ["--checkpoint-store", store.prefix]
    log.info("launching %d training processes: %s", gpus, " ".join(cmd))
    proc = subprocess.Popen(cmd)
    # Kubernetes' SIGTERM goes to this process: hand it to the launcher, which passes it to every
    # rank and waits (30 s) while rank 0 writes and stores its interrupted checkpoint.
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: proc.send_signal(signal.SIGTERM))
    try:
        code = proc.wait()
    finally:
        signal.signal(signal.SIGTERM, previous)
    if code != 0:
        tail = (logs / "workerlog.0").read_text(errors="replace")[-3000:] if (logs / "workerlog.0").is_file() else ""
        raise ClasflowError(f"data-parallel training ({gpus} processes) exited with {code}; rank 0's log ends:\n{tail}")
    meta = ckpt.read_meta(arch_dir / str(cfg.epochs - 1))
    final = {k: v for k, v in meta.metrics.items() if k != "best_epoch"}
    return final, meta.best_top1, int(meta.metrics.get("best_epoch", -1))


def _checkpoint_config(name: str, dataset_dir: str, model_dir: str, scratch: str, profile: Profile):
    """The config of a trained model, with pretrained_model = its best checkpoint."""
    cfg = build_config(name, dataset_dir, scratch, profile, [])
    return cfg.model_copy(update={"pretrained_model": str(Path(model_dir) / "best_model" / "ppcls")})


def eval_step(name: str, dataset_dir: str, model_dir: str, profile: Profile, journal_dir: str) -> dict[str, float]:
    """Valid metrics of a trained model's best checkpoint; the MLflow journal is kept in `journal_dir`."""
    from clasflow.engine.trainer import evaluate
    from clasflow.tracking import JOURNAL

    profile.env()
    with tempfile.TemporaryDirectory() as scratch:
        metrics = evaluate(_checkpoint_config(name, dataset_dir, model_dir, scratch, profile), run_name=f"eval-{name}",
                           journal_dir=journal_dir)
    metrics = {f"valid_{k}": v for k, v in metrics.items()}
    keep_journal(Path(journal_dir) / JOURNAL, publish(journal_dir, f"mlflow/eval-{name}", profile), metrics)
    return metrics


def export_step(name: str, dataset_dir: str, model_dir: str, out_dir: str, profile: Profile, onnx: bool = True) -> dict[str, Any]:
    """Export the best model (the student for distillation) with its inference.yml, ONNX, and the
    int8 model calibrated on training images (for the TensorRT int8 benchmark; should that fail,
    the reason is recorded in inference.yml and the benchmark reports paddle-trt int8 as failed)."""
    import yaml

    from clasflow.export import export_from_config

    with tempfile.TemporaryDirectory() as scratch:
        cfg = _checkpoint_config(name, dataset_dir, model_dir, scratch, profile)
        cfg_path = Path(scratch) / f"{name}.yaml"
        raw = cfg.to_raw()
        raw["pretrained_model"] = ["", cfg.pretrained_model] if cfg.use_distillation else cfg.pretrained_model
        cfg_path.write_text(yaml.safe_dump(raw, sort_keys=False))
        result = export_from_config(cfg_path, [], out_dir, pretrained_model=cfg.pretrained_model, onnx=onnx,
                                    int8_calib=str(Path(dataset_dir) / "train_list.txt"), int8_data_dir=dataset_dir,
                                    int8_required=False)
    publish(out_dir, f"exported/{name}", profile)
    return asdict(result)


def benchmark_step(model_dir: str, out_json: str, dataset_dir: str = "", backends: str = "paddle,onnxruntime",
                   precisions: str = "fp32", batch_sizes: str = "1,4", repeats: int = 50,
                   profile: Profile | None = None, *, journal_dir: str) -> dict[str, float]:
    """Benchmark an exported model on real validation images: on the GPU when there is one (the
    rest reported as skipped with the reason). Its own MLflow run (metrics ``benchmark/...``, apart
    from the training curves) holds the figures and the ok/skipped/failed counts, also returned as
    the step's metrics; its journal is kept in `journal_dir`. Fails, after recording all that, when
    nothing useful was measured: no result ``ok``, or on a GPU no GPU result ``ok``."""
    from clasflow.benchmark import BACKENDS, PRECISIONS, BenchSettings, parse_batch_sizes, parse_choices, run_benchmark, write_report
    from clasflow.engine.runtime import check_gpu_requirement, device_tags, gpu_available

    check_gpu_requirement("benchmark")
    device = "gpu" if gpu_available() else "cpu"
    settings = BenchSettings(
        model_dir=model_dir,
        backends=parse_choices(backends, BACKENDS, "backend"),
        precisions=parse_choices(precisions, PRECISIONS, "precision"),
        devices=[device],
        batch_sizes=parse_batch_sizes(batch_sizes),
        repeats=repeats,
        image_list=str(Path(dataset_dir) / "val_list.txt") if dataset_dir else None,
        data_dir=dataset_dir or None,
    )
    from clasflow.benchmark import metric_tag, mlflow_metrics

    profile = profile or Profile()
    profile.env()
    report = run_benchmark(settings)
    write_report(report, out_json)
    counts = {f"benchmark/{status}": float(n) for status, n in report["summary"].items()}
    gpu_ok = sum(1 for r in report["results"] if r["status"] == "ok" and r["device"] == "gpu")
    counts["benchmark/gpu_ok"] = float(gpu_ok)
    reasons = {f"clasflow.benchmark.{r['status']}.{metric_tag(r)}": str(r.get("reason"))[:5000]
               for r in report["results"] if r["status"] != "ok"}
    metrics = {k.removeprefix("benchmark/"): v for k, v in counts.items()}
    _track("benchmark", {**mlflow_metrics(report), **counts}, out_json, "benchmark.json",
           {**device_tags(device), **reasons}, profile, journal_dir, metrics)
    problem = ("no result is ok" if report["summary"]["ok"] == 0 else
               "on a GPU, no GPU result is ok" if device == "gpu" and gpu_ok == 0 else "")
    if problem:
        lines = sorted({f"{r['backend']}/{r['device']}/{r['precision']}: {r['status']}: {r.get('reason')}" for r in report["results"]})
        raise ClasflowError(f"benchmark measured nothing useful ({problem}; {out_json}):\n  " + "\n  ".join(lines))
    return metrics


def _track(stage: str, metrics: dict[str, float], json_file: str, name: str, tags: dict[str, str], profile: Profile,
           journal_dir: str, step_metrics: dict[str, float]) -> None:
    """One MLflow run of a step: its metrics and its JSON result as ``name`` (the report reads it),
    published beside the pipeline run's artifacts. Its journal, with that JSON beside it for a later
    sync, is kept in `journal_dir` (the step's artifact) and as ``mlflow/<stage>`` in the object
    store, and counted in `step_metrics` (see `keep_journal`)."""
    from clasflow.tracking import JOURNAL, Tracker

    Path(journal_dir).mkdir(parents=True, exist_ok=True)
    shutil.copyfile(json_file, Path(journal_dir) / name)
    with Tracker(stage, journal_dir=journal_dir, tags={"clasflow.stage": stage, **tags}) as tracker:
        tracker.log_metrics(metrics, step=0)
        tracker.log_artifact(Path(journal_dir) / name)
    publish(json_file, name, profile)
    keep_journal(Path(journal_dir) / JOURNAL, publish(journal_dir, f"mlflow/{stage}", profile), step_metrics)


def parity_step(name: str, dataset_dir: str, model_dir: str, inference_dir: str, out_json: str, profile: Profile,
                tolerances: dict[str, float] | None = None, backends: str = "paddle,paddle-trt,onnxruntime,onnxruntime-trt,tensorrt",
                precisions: str = "fp32,fp16,int8", *, journal_dir: str) -> tuple[dict[str, Any], dict[str, float]]:
    """The parity gate: the export scored on the validation list through every backend and precision,
    against the dygraph eval of the same checkpoint (OpenCV loader: the decoding the export's
    preprocessing uses). Recorded (JSON, MLflow; the journal kept in `journal_dir`) before
    `check_parity` decides; returns the report and the step's metrics (with ``mlflow_pending``)."""
    from clasflow.benchmark import BACKENDS, PRECISIONS, parse_choices
    from clasflow.engine.runtime import check_gpu_requirement, device_tags, gpu_available
    from clasflow.engine.trainer import evaluate
    from clasflow.parity import gate, metrics, score_export

    check_gpu_requirement("parity")
    profile.env()
    with tempfile.TemporaryDirectory() as scratch:
        cfg = _checkpoint_config(name, dataset_dir, model_dir, scratch, profile)
        cfg = cfg.model_copy(update={"VALID": cfg.VALID.model_copy(update={"loader": "opencv"})})
        dygraph = evaluate(cfg, track=False)
    report = score_export(inference_dir, Path(dataset_dir) / Path(cfg.VALID.file_list).name, dataset_dir,
                          backends=parse_choices(backends, BACKENDS, "backend"),
                          precisions=parse_choices(precisions, PRECISIONS, "precision"), topk=cfg.topk)
    report["dygraph"] = {"top1": dygraph["top1"], "loader": "opencv", "checkpoint": str(Path(model_dir) / "best_model" / "ppcls")}
    gate(report, dygraph["top1"], tolerances)
    write_text_atomic(out_json, json.dumps(report, indent=2) + "\n")
    step_metrics = metrics(report)
    _track("parity", {f"parity.{k}": v for k, v in step_metrics.items()}, out_json, "parity.json",
           device_tags("gpu" if gpu_available() else "cpu"), profile, journal_dir, step_metrics)
    return report, step_metrics


def check_parity(report: dict[str, Any]) -> None:
    """Fail the step when the gate failed (skipped backends only warn)."""
    g = report["gate"]
    for reason in g["skipped"]:
        log.warning("parity: skipped %s", reason)
    if not g["passed"]:
        raise ClasflowError("export parity failed against the dygraph top-1 "
                            f"{g['dygraph_top1']:.4f}:\n  " + "\n  ".join(g["failures"]))
    if not g["ran"]:
        raise ClasflowError("export parity: no backend could score the export here:\n  " + "\n  ".join(g["skipped"]))


def report_step(html_path: str, markdown_path: str, profile: Profile, tolerance: float = 0.01, out_dir: str = "") -> None:
    """The report of this pipeline run: the folder `out_dir` (report.md with top1_curves.png beside
    it, report.html, report.json), attached to the run's parent MLflow run and published; the KFP
    HTML and Markdown outputs are single files, so both embed the PNG. Warnings include MLflow
    journals still undelivered in the object store. Without Kubeflow's MLflow plugin it also ends
    the pipeline run's parent run."""
    from clasflow import report, tracking

    experiment = profile.experiment or os.environ.get("MLFLOW_EXPERIMENT_NAME") or tracking.DEFAULT_EXPERIMENT
    if os.environ.get("MLFLOW_RUN_ID"):  # Kubeflow's MLflow plugin: the runs are in the experiment of this task's run
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking.tracking_uri())
        experiment = client.get_experiment(client.get_run(os.environ["MLFLOW_RUN_ID"]).info.experiment_id).name
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(out_dir or scratch)
        rep = report.compare(out, experiment=experiment, pipeline_run=profile.pipeline_run or None, profile=profile.name,
                             tolerance=tolerance, attach_to_parent=True, warnings=undelivered_journals(profile))
        shutil.copyfile(out / "report.html", html_path)
        write_text_atomic(markdown_path, report.markdown(rep, report.data_uri(out / report.CURVES)))
        publish(out, "report", profile)
    if profile.pipeline_run and not os.environ.get("MLFLOW_RUN_ID"):
        tracking.end_pipeline_parent(experiment, profile.pipeline_run)


def undelivered_journals(profile: Profile) -> list[str]:
    """One line per MLflow journal of this pipeline run in the object store with records MLflow has not got."""
    from clasflow.tracking import JOURNAL, STATE_SUFFIX, pending

    root = os.environ.get(ARTIFACT_ROOT_ENV)
    if not root or not profile.pipeline_run:
        return []
    lines = []
    for uri in storage.list(storage.run_prefix(root, profile.pipeline_run)):
        if uri.endswith("/" + JOURNAL):
            with tempfile.TemporaryDirectory() as tmp:
                local = storage.download(uri, Path(tmp) / JOURNAL)
                if storage.exists(uri + STATE_SUFFIX):
                    storage.download(uri + STATE_SUFFIX, Path(tmp) / (JOURNAL + STATE_SUFFIX))
                left = pending(local)
            if left:
                lines.append(f"mlflow_pending: {left} records not in MLflow, kept in {uri}; send them with "
                             f"`clasflow tracking sync {uri}`")
    return lines


def doctor_step(out_json: str, require_gpu: bool, profile: Profile | None = None, *, journal_dir: str,
                checks: list[str] | None = None) -> dict[str, float]:
    """`clasflow doctor` (all checks, or `checks`) before any training: its JSON is the step's
    artifact and goes to MLflow (the journal kept in `journal_dir`); a failed check fails the step,
    after all that, so a broken node stops the run in a minute, not after hours. Returns the step's
    metrics: the count of rows per status (``doctor.<status>``) and ``mlflow_pending``."""
    from clasflow.doctor import STATUSES, run

    profile = profile or Profile()
    profile.env()
    code = run(require_gpu=require_gpu, checks=checks, out=out_json)
    report = json.loads(Path(out_json).read_text())
    metrics = {f"doctor.{s}": float(sum(r["status"] == s for r in report["rows"])) for s in STATUSES}
    _track("doctor", dict(metrics), out_json, "doctor.json", {}, profile, journal_dir, metrics)
    if code != 0:
        failed = [f"{r['check']}: {r['detail']}" for r in report["rows"] if r["status"] == "failed"]
        raise ClasflowError("clasflow doctor failed on this node:\n  " + "\n  ".join(failed))
    return metrics

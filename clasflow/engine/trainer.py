"""The train, eval and distill stages (the seed's tools/train.py and tools/eval.py).

`train(cfg)` runs the epochs of a validated `Config` on the GPU when there is one (data
parallel under ``paddle.distributed.launch``), else on the CPU; logs one line per
``print_interval`` steps in the seed's format; validates every ``valid_interval`` epochs;
writes checkpoints every ``save_interval`` epochs plus ``best_model``; resumes from
``checkpoints`` (a checkpoint prefix, or ``auto`` for the latest one); saves an ``interrupted``
checkpoint on SIGTERM; and tracks everything in MLflow. Distillation (``use_distillation``)
trains the student against the frozen teacher with the JSDiv loss, without labels.
"""

from __future__ import annotations

import logging
import shutil
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import paddle
import yaml

from clasflow.config import Config, check_files
from clasflow.engine import checkpoint as ckpt
from clasflow.engine import losses
from clasflow.engine.progress import StepProgress
from clasflow.engine.runtime import (all_reduce_sum, check_gpu_requirement, device_tags, epoch_seed, rank, seed_everything,
                                     setup_device, world_size)
from clasflow.engine.schedules import build_lr, build_optimizer
from clasflow.errors import ClasflowError, ConfigError, DataError
from clasflow.fsutil import write_text_atomic
from clasflow.models import build_model, load_pretrained
from clasflow.tracking import Tracker

log = logging.getLogger(__name__)
MIXUP_ALPHA = 0.2


class TrainingInterrupted(ClasflowError):
    """SIGTERM arrived; an ``interrupted`` checkpoint was written."""


@dataclass
class TrainResult:
    arch_dir: str
    best_top1: float
    best_epoch: int
    final: dict[str, float]
    history: list[dict[str, float]] = field(default_factory=list)
    run_id: str | None = None

    @property
    def best_model(self) -> str:
        return str(Path(self.arch_dir) / "best_model" / ckpt.PREFIX)


# ------------------------------------------------------------------ model


def build_from_config(cfg: Config):
    params = dict(cfg.ARCHITECTURE.params)
    return build_model(cfg.ARCHITECTURE.name, class_num=cfg.classes_num, **params)


def load_weights(cfg: Config, model, trust: bool = False) -> None:
    """Pretrained weights: one path, or [teacher, student] for distillation. ``trust`` loads weight
    files whose sha256 differs from their ``zoo.lock.json`` entry (see ``load_pretrained``)."""
    if cfg.use_distillation:
        if not hasattr(model, "teacher"):
            raise ConfigError(f"use_distillation: ARCHITECTURE.name {cfg.ARCHITECTURE.name!r} is not a distillation model")
        teacher, student = cfg.pretrained_model
        if not teacher:
            raise ConfigError("pretrained_model[0]: distillation needs trained teacher weights; a random teacher teaches nothing")
        try:
            log.info("teacher: %s", load_pretrained(model.teacher, teacher, strict_head=True, trust=trust).summary())
        except ClasflowError as exc:
            raise ClasflowError(f"pretrained_model[0] (the teacher) did not load, refusing to distill from a random teacher: {exc}") from None
        if student:
            try:
                log.info("student: %s", load_pretrained(model.student, student, trust=trust).summary())
            except ClasflowError as exc:
                raise ClasflowError(f"pretrained_model[1] (the student): {exc}") from None
        return
    if cfg.pretrained_model:
        if isinstance(cfg.pretrained_model, list):
            raise ConfigError("pretrained_model: a list is only for distillation (use_distillation: True)")
        log.info("pretrained: %s", load_pretrained(model, cfg.pretrained_model, trust=trust).summary())


# ------------------------------------------------------------------ one epoch


class _Sigterm:
    """Turns SIGTERM into a flag the training loop checks after each step."""

    def __init__(self):
        self.received = False
        self._previous = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    def _handle(self, signum, frame):
        log.warning("SIGTERM received: finishing this step and writing a checkpoint")
        self.received = True

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


def _forward_loss(cfg: Config, model, images, labels, step_rng):
    """(loss, logits for metrics or None)."""
    if cfg.use_distillation:
        teacher_logits, student_logits = model(images)
        return losses.jsdiv(student_logits, teacher_logits), None
    if cfg.use_mix:
        mixed, la, lb, lam = losses.mixup(images, labels, MIXUP_ALPHA, step_rng)
        return losses.mixup_loss(model(mixed), la, lb, lam, cfg.classes_num, cfg.ls_epsilon), None
    logits = model(images)
    return losses.cross_entropy(logits, labels, cfg.classes_num, cfg.ls_epsilon), logits


class _DeviceSums:
    """Per-epoch sums of loss * n, top-1 and top-k hits, kept on the device: adding a step
    queues a few tensor ops, only `read` (at epoch end) waits for the device."""

    def __init__(self):
        self.loss = self.top1 = self.topk = None
        self.n = 0

    def add(self, loss, logits, labels, n: int, k: int) -> None:
        self.loss = _plus(self.loss, loss.detach().astype("float32") * n)
        if logits is not None:
            self.top1 = _plus(self.top1, losses.topk_hits(logits, labels, 1))
            self.topk = _plus(self.topk, losses.topk_hits(logits, labels, k))
        self.n += n

    def read(self) -> list[float]:
        """[loss * n, top1, topk, n] as floats."""
        return [float(t) if t is not None else 0.0 for t in (self.loss, self.top1, self.topk)] + [float(self.n)]


def _plus(total, term):
    return term if total is None else total + term


def _equal_steps(loader, steps: int, epoch: int):
    """Exactly `steps` batches from `loader`, on every data-parallel rank: a batch whose images
    all failed to decode (dropped by the loader under skip_bad_images) is made up for by
    training the last good batch again, so no rank waits in an all-reduce the others never
    reach."""
    count, last = 0, None
    for batch in loader:
        if count == steps:
            raise ClasflowError(f"the train loader yielded more than its {steps} batches in epoch {epoch}")
        count, last = count + 1, batch
        yield batch
    if count < steps:
        if last is None:
            raise DataError(f"epoch {epoch}: every image of this rank's share failed to decode; fix the train list")
        log.warning("epoch %d: %d batch(es) lost to bad images on rank %d; repeating the last good batch so every "
                    "rank runs %d steps", epoch, steps - count, rank(), steps)
    for _ in range(steps - count):
        yield last


def _share_bad_images(loader) -> None:
    """Make every rank leave out the images any rank found bad (so the ranks' epochs keep the
    same number of batches)."""
    if world_size() == 1:
        return
    mask = np.zeros(len(loader.samples.paths))
    mask[sorted(loader.bad_indices)] = 1.0
    loader.exclude(np.flatnonzero(np.asarray(all_reduce_sum(mask.tolist()))).tolist())


def _log_line(epoch: int, phase: str, step: int | None, values: dict[str, float], elapse: float) -> str:
    parts = [f"epoch:{epoch}", phase] + ([f"step:{step}"] if step is not None else [])
    parts += [f"{k}:{v:.6f}" if k == "lr" else f"{k}:{v:.4f}" for k, v in values.items()]
    return " ".join(parts + [f"elapse:{elapse:.3f}"])


def evaluate_model(cfg: Config, model, loader, epoch: int = 0) -> dict[str, float]:
    """Valid loss, top1 and top-k over the whole loader (all ranks)."""
    net = model.student if cfg.use_distillation else model
    net.eval()
    k = cfg.topk
    sums = _DeviceSums()
    start = time.time()
    with paddle.no_grad():
        for images, labels in loader:
            logits = net(images)
            sums.add(losses.cross_entropy(logits, labels, cfg.classes_num), logits, labels, images.shape[0], k)
    loss, top1, topk, n = all_reduce_sum(sums.read())
    if n == 0:
        raise ClasflowError(f"VALID.file_list {cfg.VALID.file_list}: no images to evaluate")
    metrics = {"loss": loss / n, "top1": top1 / n, f"top{k}": topk / n}
    log.info(_log_line(epoch, "valid", None, metrics, time.time() - start))
    return metrics


# ------------------------------------------------------------------ stages


def _loaders(cfg: Config, train: bool):
    from clasflow.data import build_loader

    train_loader = None
    if train:
        if cfg.TRAIN is None:
            raise ConfigError("TRAIN: training needs a TRAIN section")
        train_loader = build_loader(cfg.TRAIN, mode="train", labeled=not cfg.use_distillation,
                                    class_num=cfg.classes_num, seed=cfg.seed)
    valid_loader = None
    if cfg.VALID is not None and (cfg.validate or not train):
        valid_loader = build_loader(cfg.VALID, mode="eval", labeled=True, class_num=cfg.classes_num, seed=cfg.seed)
    return train_loader, valid_loader


def _ran_on(device: str, train_loader, valid_loader) -> dict[str, str]:
    """MLflow tags of what really ran: the device and each section's loader (and why, on a fallback)."""
    from clasflow.data import loader_tags

    tags = device_tags(device)
    for section, loader in (("TRAIN", train_loader), ("VALID", valid_loader)):
        if loader is not None:
            tags.update(loader_tags(loader, section))
    return tags


def train(cfg: Config, *, run_name: str = "train", track: bool = True, trust: bool = False,
          on_checkpoint: Callable[[Path], None] | None = None, journal_dir: str | Path | None = None) -> TrainResult:
    """Train (or distill) as the config says; see the module docstring. `on_checkpoint` is
    called (on rank 0) with each checkpoint folder written: epochs, best_model, interrupted. The
    MLflow journal goes to `journal_dir` (default: the architecture's output folder)."""
    check_gpu_requirement("distill" if cfg.use_distillation else "train")
    check_files(cfg)
    device = setup_device(cfg)
    seed_everything(cfg.seed)
    model = build_from_config(cfg)
    load_weights(cfg, model, trust=trust)
    train_loader, valid_loader = _loaders(cfg, train=True)
    steps = len(train_loader)
    if steps == 0:
        raise ConfigError(f"TRAIN.file_list {cfg.TRAIN.file_list}: fewer images than one batch ({cfg.TRAIN.batch_size})")
    schedule = build_lr(cfg, steps)
    trainable = model.trainable_parameters() if cfg.use_distillation else model.parameters()
    optimizer = build_optimizer(cfg, trainable, schedule)
    scaler = paddle.amp.GradScaler(init_loss_scaling=1024) if cfg.use_amp else None
    net = paddle.DataParallel(model) if world_size() > 1 else model

    arch_dir = Path(cfg.model_save_dir) / cfg.ARCHITECTURE.name
    start_epoch, start_step, best_top1, best_epoch = 0, 0, 0.0, -1
    resume = cfg.checkpoints
    if resume == "auto":
        found = ckpt.latest_checkpoint(arch_dir)
        resume = str(found) if found else ""
    config_hash = cfg.hash()
    if resume:
        meta = ckpt.load_checkpoint(resume, model, optimizer, (config_hash, cfg.legacy_hash()), scaler)
        start_epoch, start_step = meta.next_position()
        best_top1, best_epoch = meta.best_top1, int(meta.metrics.get("best_epoch", -1))
        log.info("resumed from %s: continuing at epoch %d, step %d", resume, start_epoch, start_step)

    is_main = rank() == 0
    if is_main:
        arch_dir.mkdir(parents=True, exist_ok=True)
        write_text_atomic(arch_dir / "config.resolved.yaml", yaml.safe_dump(cfg.to_raw(), sort_keys=False))
    tracker = Tracker(run_name, journal_dir=journal_dir or arch_dir, params=cfg.flat(),
                      tags={"clasflow.stage": "distill" if cfg.use_distillation else "train", "architecture": cfg.ARCHITECTURE.name,
                            **_ran_on(device, train_loader, valid_loader)},
                      enabled=track and is_main)
    history: list[dict[str, float]] = []
    final: dict[str, float] = {}
    global_step = start_epoch * steps + start_step
    k = cfg.topk
    def _interrupted(meta: ckpt.CheckpointMeta, where: str) -> None:
        """Write (rank 0) and store the ``interrupted`` checkpoint, then stop."""
        if is_main:
            folder = ckpt.save_checkpoint(arch_dir / "interrupted", model, optimizer, meta, scaler=scaler)
            log.warning("checkpoint written to %s; resume with -o checkpoints=%s/%s", folder, folder, ckpt.PREFIX)
            if on_checkpoint is not None:
                on_checkpoint(folder)
        raise TrainingInterrupted(f"stopped by SIGTERM {where}; checkpoint in {arch_dir / 'interrupted'}")

    with tracker, _Sigterm() as sigterm:
        tracker.log_artifact(arch_dir / "config.resolved.yaml")
        for epoch in range(start_epoch, cfg.epochs):
            first = start_step if epoch == start_epoch else 0
            if first == 0:
                seed_everything(epoch_seed(cfg.seed, epoch))
            train_loader.set_epoch(epoch)
            if cfg.TRAIN.skip_bad_images:
                _share_bad_images(train_loader)
            epoch_steps = len(train_loader)
            net.train()
            sums = _DeviceSums()
            tic = epoch_tic = time.time()
            with StepProgress(f"epoch {epoch}", total=epoch_steps, completed=first) as bar:
                for step, (images, labels) in enumerate(_equal_steps(train_loader, epoch_steps, epoch)):
                    if step < first:
                        continue  # replaying a mid-epoch resume: these batches were trained
                    reader_cost = time.time() - tic  # waiting for this batch (the rest of elapse is compute)
                    step_rng = np.random.default_rng(epoch_seed(cfg.seed, epoch) + step)
                    if scaler is not None:
                        with paddle.amp.auto_cast(level="O1"):
                            loss, logits = _forward_loss(cfg, net, images, labels, step_rng)
                        scaled = scaler.scale(loss)
                        scaled.backward()
                        scaler.minimize(optimizer, scaled)
                    else:
                        loss, logits = _forward_loss(cfg, net, images, labels, step_rng)
                        loss.backward()
                        optimizer.step()
                    optimizer.clear_grad()
                    lr = optimizer.get_lr()
                    schedule.step()
                    global_step += 1
                    n = images.shape[0]
                    sums.add(loss, logits, labels, n, k)  # stays on the device: no wait here
                    if step % cfg.print_interval == 0 and is_main:  # reading the values waits for the device
                        values = {"loss": float(loss)}
                        if logits is not None:
                            values["top1"] = float(losses.topk_hits(logits, labels, 1)) / n
                            values[f"top{k}"] = float(losses.topk_hits(logits, labels, k)) / n
                        log.info(_log_line(epoch, "train", step, values | {"lr": lr, "reader_cost": reader_cost}, time.time() - tic))
                    bar.advance(n)
                    tic = time.time()
                    if sigterm.received and step + 1 < epoch_steps:  # on an epoch's last step, the epoch is finished first
                        _interrupted(ckpt.CheckpointMeta(epoch, step + 1, global_step, config_hash, {"best_epoch": best_epoch},
                                                         best_top1, complete=False), f"at epoch {epoch} step {step}")
            total = all_reduce_sum(sums.read())  # the epoch's one wait for the device
            elapsed = max(time.time() - epoch_tic, 1e-9)
            epoch_metrics = {"train_loss": total[0] / max(total[3], 1), "lr": lr, "images_per_sec": total[3] / elapsed}
            if not cfg.use_distillation and not cfg.use_mix:
                epoch_metrics["train_top1"] = total[1] / max(total[3], 1)
            if valid_loader is not None and cfg.validate and (epoch + 1) % cfg.valid_interval == 0:
                valid = evaluate_model(cfg, model, valid_loader, epoch)
                epoch_metrics.update({"valid_loss": valid["loss"], "valid_top1": valid["top1"], f"valid_top{k}": valid[f"top{k}"]})
                if valid["top1"] > best_top1 or best_epoch < 0:
                    best_top1, best_epoch = valid["top1"], epoch
                    if is_main:
                        meta = ckpt.CheckpointMeta(epoch, 0, global_step, config_hash, epoch_metrics | {"best_epoch": epoch}, best_top1)
                        folder = ckpt.save_checkpoint(arch_dir / "best_model", model, optimizer, meta, scaler=scaler)
                        if on_checkpoint is not None:
                            on_checkpoint(folder)
                log.info("best valid top1 %.4f at epoch %d", best_top1, best_epoch)
            epoch_metrics["best_valid_top1"] = best_top1
            tracker.log_metrics(epoch_metrics, step=epoch)
            history.append({"epoch": epoch, **epoch_metrics})
            final = epoch_metrics
            last_epoch = epoch == cfg.epochs - 1
            saves = (epoch + 1) % cfg.save_interval == 0 or last_epoch
            if is_main and saves:
                meta = ckpt.CheckpointMeta(epoch, 0, global_step, config_hash, epoch_metrics | {"best_epoch": best_epoch}, best_top1)
                folder = ckpt.save_checkpoint(arch_dir / str(epoch), model, optimizer, meta, scaler=scaler)
                if (arch_dir / "interrupted").exists():
                    shutil.rmtree(arch_dir / "interrupted", ignore_errors=True)
                if on_checkpoint is not None:
                    on_checkpoint(folder)
            if sigterm.received and not last_epoch:  # it came during the epoch's last step
                if not saves:
                    _interrupted(ckpt.CheckpointMeta(epoch, 0, global_step, config_hash, epoch_metrics | {"best_epoch": best_epoch},
                                                     best_top1), f"after epoch {epoch}")
                raise TrainingInterrupted(f"stopped by SIGTERM after epoch {epoch}; checkpoint in {arch_dir / str(epoch)}")
        if final:
            tracker.log_metrics({"final_valid_top1": final.get("valid_top1", 0.0), "best_valid_top1": best_top1}, step=cfg.epochs - 1)
        if (arch_dir / "best_model").is_dir():
            tracker.log_artifact(arch_dir / "best_model", "best_model")
    return TrainResult(str(arch_dir), best_top1, best_epoch, final, history, tracker.run_id)


def evaluate(cfg: Config, *, run_name: str = "eval", track: bool = True, trust: bool = False,
             journal_dir: str | Path | None = None) -> dict[str, float]:
    """The eval stage: load ``pretrained_model`` and report valid loss/top1/top-k (MLflow journal in
    `journal_dir`, default ``<model_save_dir>/<arch>/eval``)."""
    check_gpu_requirement("eval")
    if cfg.VALID is None:
        raise ConfigError("VALID: evaluation needs a VALID section")
    if not cfg.pretrained_model:
        raise ConfigError("pretrained_model: evaluation needs weights, e.g. -o pretrained_model=output/ResNet50_vd/best_model/ppcls")
    check_files(cfg.model_copy(update={"TRAIN": None}))
    device = setup_device(cfg)
    model = build_from_config(cfg)
    if isinstance(cfg.pretrained_model, list):  # distillation config: evaluate the student weights
        load_pretrained(model.student, cfg.pretrained_model[1], strict_head=True, trust=trust)
    else:  # a checkpoint of this architecture (for distillation: teacher and student)
        load_pretrained(model, cfg.pretrained_model, strict_head=True, trust=trust)
    _, valid_loader = _loaders(cfg, train=False)
    metrics = evaluate_model(cfg, model, valid_loader)
    journal_dir = journal_dir or Path(cfg.model_save_dir) / cfg.ARCHITECTURE.name / "eval"
    tags = {"clasflow.stage": "eval", **_ran_on(device, None, valid_loader)}
    with Tracker(run_name, journal_dir=journal_dir, params=cfg.flat(), tags=tags, enabled=track and rank() == 0) as tracker:
        tracker.log_metrics({f"valid_{k}": v for k, v in metrics.items()}, step=0)
    return metrics

"""Checkpoints in the seed's layout, written atomically.

``model_save_dir/ARCH/EPOCH/ppcls.{pdparams,pdopt,json,pdstates}`` after each saved epoch,
``ARCH/best_model/`` by valid top1, and ``ARCH/interrupted/`` when a SIGTERM stops a run
mid-epoch. Each checkpoint folder is written under a temporary name and renamed into place,
so a kill at any moment leaves either the old folder or the new one, never half of one.
``ppcls.json`` holds epoch, step, metrics and the config hash (`Config.hash`: location-free, so
a checkpoint resumes in any folder); ``ppcls.pdstates`` the RNG states and, under AMP, the
GradScaler state (loss scale, good and bad step counts).
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import random
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import paddle

from clasflow.errors import ClasflowError
from clasflow.fsutil import recover_dir, replace_dir

log = logging.getLogger(__name__)
PREFIX = "ppcls"
SCALER_KEY = "grad_scaler"


@dataclass
class CheckpointMeta:
    epoch: int  # the epoch this checkpoint belongs to
    step_in_epoch: int  # batches of `epoch` already trained; 0 means the epoch is complete
    global_step: int
    config_hash: str
    metrics: dict[str, float] = field(default_factory=dict)
    best_top1: float = 0.0
    complete: bool = True  # False for a mid-epoch (SIGTERM) checkpoint

    def next_position(self) -> tuple[int, int]:
        """(epoch, batch) where training continues."""
        return (self.epoch + 1, 0) if self.complete else (self.epoch, self.step_in_epoch)


def _rng_states() -> dict[str, Any]:
    return {"paddle": paddle.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}


def _rename_optimizer_state(model, state: dict, to_structured: bool) -> dict:
    """Optimizer state is keyed by parameter names (``conv2d_54.w_0_velocity_0``) that depend on
    how many layers the process built before; store it by state-dict key instead."""
    pairs = [(p.name, key) for key, p in model.named_parameters()]
    if not to_structured:
        pairs = [(key, name) for name, key in pairs]
    pairs.sort(key=lambda pair: -len(pair[0]))
    out = {}
    for k, v in state.items():
        for src, dst in pairs:
            if k.startswith(src + "_"):
                k = dst + k[len(src):]
                break
        out[k] = v
    return out


def save_checkpoint(folder: str | os.PathLike, model, optimizer, meta: CheckpointMeta, rng: dict | None = None,
                    scaler=None) -> Path:
    """Write a checkpoint folder atomically (replacing an existing one); with an enabled AMP
    `scaler` (paddle.amp.GradScaler) its state goes into ``ppcls.pdstates`` too."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.tmp-", dir=folder.parent))
    try:
        paddle.save(model.state_dict(), str(tmp / f"{PREFIX}.pdparams"))
        if optimizer is not None:
            state = _rename_optimizer_state(model, optimizer.state_dict(), to_structured=True)
            paddle.save(state, str(tmp / f"{PREFIX}.pdopt"))
        states = dict(rng if rng is not None else _rng_states())
        if scaler is not None and scaler.is_enable():
            states[SCALER_KEY] = scaler.state_dict()
        with open(tmp / f"{PREFIX}.pdstates", "wb") as fh:
            pickle.dump(states, fh)
        (tmp / f"{PREFIX}.json").write_text(json.dumps(asdict(meta), indent=2, sort_keys=True))
        replace_dir(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


def read_meta(prefix: str | os.PathLike) -> CheckpointMeta:
    folder = _folder(prefix)
    recover_dir(folder)
    path = folder / f"{PREFIX}.json"
    if not path.is_file():
        raise ClasflowError(f"checkpoint {folder} has no {PREFIX}.json: it is not a clasflow checkpoint (or is incomplete)")
    return CheckpointMeta(**json.loads(path.read_text()))


def _folder(prefix: str | os.PathLike) -> Path:
    """A checkpoint is named by its folder or by the PaddleClas prefix ``FOLDER/ppcls``."""
    p = Path(prefix)
    if p.name == PREFIX or p.suffix in (".pdparams", ".pdopt", ".json"):
        p = p.parent
    recover_dir(p)
    return p


def load_checkpoint(prefix: str | os.PathLike, model, optimizer, config_hash: str | tuple[str, ...] | None = None,
                    scaler=None) -> CheckpointMeta:
    """Restore model, optimizer (with its LR schedule), RNG states and an enabled AMP `scaler`;
    return the metadata. `config_hash`: the hash (or hashes) the checkpoint must carry."""
    folder = _folder(prefix)
    meta = read_meta(folder)
    accepted = (config_hash,) if isinstance(config_hash, str) else config_hash
    if accepted is not None and meta.config_hash not in accepted:
        raise ClasflowError(
            f"checkpoint {folder} was written by a different config (hash {meta.config_hash}, now {accepted[0]}); "
            f"resume with the same config and overrides, or start a new model_save_dir"
        )
    missing = [n for n in (f"{PREFIX}.pdparams", f"{PREFIX}.pdopt") if not (folder / n).is_file()]
    if missing:
        raise ClasflowError(f"checkpoint {folder} lacks {', '.join(missing)}")
    model.set_state_dict(paddle.load(str(folder / f"{PREFIX}.pdparams")))
    state = paddle.load(str(folder / f"{PREFIX}.pdopt"))
    optimizer.set_state_dict(_rename_optimizer_state(model, state, to_structured=False))
    states_file = folder / f"{PREFIX}.pdstates"
    if states_file.is_file():
        with open(states_file, "rb") as fh:
            states = pickle.load(fh)
        paddle.set_rng_state(states["paddle"])
        np.random.set_state(states["numpy"])
        random.setstate(states["python"])
    else:
        states = {}
    if scaler is not None and scaler.is_enable():
        if states.get(SCALER_KEY):
            scaler.load_state_dict(states[SCALER_KEY])
        else:
            log.warning("checkpoint %s holds no AMP GradScaler state (written before clasflow saved it): the loss "
                        "scale starts again from its initial value", folder)
    return meta


def latest_checkpoint(arch_dir: str | os.PathLike) -> Path | None:
    """The most advanced checkpoint folder under ``model_save_dir/ARCH`` (epoch folders and
    ``interrupted``), ignoring temporary and incomplete ones."""
    arch_dir = Path(arch_dir)
    best: tuple[tuple[int, int], Path] | None = None
    if not arch_dir.is_dir():
        return None
    for old in arch_dir.glob(".*.old-*"):
        recover_dir(arch_dir / old.name[1:].rsplit(".old-", 1)[0])
    for folder in arch_dir.iterdir():
        if folder.name.startswith(".") or not (folder.name.isdigit() or folder.name == "interrupted"):
            continue
        try:
            position = read_meta(folder).next_position()
        except (ClasflowError, json.JSONDecodeError, TypeError):
            continue
        if best is None or position > best[0]:
            best = (position, folder)
    return best[1] if best else None

"""Learning-rate functions and the optimizer, as PaddleClas v1 configures them.

The schedule steps once per iteration. ``Cosine``: lr * (1 + cos(pi * t / T)) / 2 with
T = epochs * steps_per_epoch; ``Linear``: polynomial decay (power 1) to ``end_lr``;
``Piecewise``: lr * gamma**i after each of ``decay_epochs``; ``CosineWarmup``: linear from 0
over ``warmup_epoch`` epochs, then cosine over the rest.
"""

from __future__ import annotations

import paddle
from paddle.optimizer import lr as lr_mod

from clasflow.config import Config
from clasflow.errors import ConfigError


def _param(params: dict, key: str, default, where: str):
    value = params.get(key, default)
    if value is None:
        raise ConfigError(f"LEARNING_RATE.params.{key} is required for {where}")
    return value


def build_lr(cfg: Config, steps_per_epoch: int) -> lr_mod.LRScheduler:
    fn, params = cfg.LEARNING_RATE.function, dict(cfg.LEARNING_RATE.params)
    base = float(params["lr"])
    total = cfg.epochs * steps_per_epoch
    known = {"Linear": {"lr", "end_lr", "power"}, "Cosine": {"lr"}, "Piecewise": {"lr", "decay_epochs", "gamma"},
             "CosineWarmup": {"lr", "warmup_epoch"}}[fn]
    unknown = set(params) - known - {"epochs", "step_each_epoch"}  # the last two are filled in by PaddleClas
    if unknown:
        raise ConfigError(f"LEARNING_RATE.params: {fn} does not take {', '.join(sorted(unknown))}; it takes {', '.join(sorted(known))}")
    if fn == "Cosine":
        return lr_mod.CosineAnnealingDecay(learning_rate=base, T_max=total)
    if fn == "Linear":
        return lr_mod.PolynomialDecay(learning_rate=base, decay_steps=total, end_lr=float(params.get("end_lr", 0.0)),
                                      power=float(params.get("power", 1.0)))
    if fn == "Piecewise":
        epochs = _param(params, "decay_epochs", None, "Piecewise")
        gamma = float(params.get("gamma", 0.1))
        boundaries = [int(e) * steps_per_epoch for e in epochs]
        return lr_mod.PiecewiseDecay(boundaries=boundaries, values=[base * gamma**i for i in range(len(boundaries) + 1)])
    warmup = int(params.get("warmup_epoch", 5)) * steps_per_epoch
    if warmup >= total:
        raise ConfigError(f"LEARNING_RATE.params.warmup_epoch must be below epochs ({cfg.epochs})")
    cosine = lr_mod.CosineAnnealingDecay(learning_rate=base, T_max=total - warmup)
    return lr_mod.LinearWarmup(learning_rate=cosine, warmup_steps=warmup, start_lr=0.0, end_lr=base)


def build_optimizer(cfg: Config, parameters, schedule: lr_mod.LRScheduler) -> paddle.optimizer.Optimizer:
    """Momentum with the configured L2 (or L1) decay; per-parameter ParamAttr regularizers win."""
    params = dict(cfg.OPTIMIZER.params)
    unknown = set(params) - {"momentum", "use_nesterov"}
    if unknown:
        raise ConfigError(f"OPTIMIZER.params: Momentum does not take {', '.join(sorted(unknown))}")
    reg = cfg.OPTIMIZER.regularizer
    decay = None
    if reg is not None and reg.factor > 0:
        decay = paddle.regularizer.L2Decay(reg.factor) if reg.function == "L2" else paddle.regularizer.L1Decay(reg.factor)
    return paddle.optimizer.Momentum(
        learning_rate=schedule,
        momentum=float(params.get("momentum", 0.9)),
        use_nesterov=bool(params.get("use_nesterov", False)),
        parameters=parameters,
        weight_decay=decay,
    )

"""Loader throughput: images/s and CPU-ms per image for DALI and OpenCV on the same list."""

from __future__ import annotations

import copy
import dataclasses
import gc
import os
import time
from typing import Any, Sequence

__all__ = ["bench_loaders", "figure_lines", "images_needed", "process_tree_cpu_seconds"]

WARMUP_BATCHES = 2  # after the first batch (start-up), before the timed ones

_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _children_of() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    try:
        names = os.listdir("/proc")
    except OSError:
        return kids
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read().decode("ascii", "replace")
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        kids.setdefault(ppid, []).append(int(name))
    return kids


def _proc_cpu(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode("ascii", "replace")
    except OSError:
        return 0.0
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _TCK  # utime + stime


def process_tree_cpu_seconds() -> float:
    """CPU seconds used by this process (all threads), its finished children, and its live
    descendants (e.g. DataLoader workers, read from /proc)."""
    t = os.times()
    total = t.user + t.system + t.children_user + t.children_system
    kids = _children_of()
    stack = list(kids.get(os.getpid(), []))
    while stack:
        pid = stack.pop()
        total += _proc_cpu(pid)
        stack.extend(kids.get(pid, []))
    return total


def images_needed(batches: int, batch_size: int, warmup: int = WARMUP_BATCHES) -> int:
    """Images a list needs for `bench_loaders`: the first batch, the warm-up and the timed
    batches, all in one epoch."""
    return (1 + warmup + batches) * batch_size


def machine_busy_seconds() -> float:
    """CPU seconds all processes of the machine have used since boot (/proc/stat), to tell how
    much of a timed stretch other work took."""
    try:
        with open("/proc/stat") as f:
            ticks = [int(v) for v in f.readline().split()[1:9]]
    except (OSError, ValueError):
        return float("nan")
    return (sum(ticks) - ticks[3] - ticks[4]) / _TCK  # all but idle and iowait


def _with_loader(section: Any, name: str, workers: int | None) -> Any:
    update: dict[str, Any] = {"loader": name}
    if workers is not None:
        update["num_workers"] = workers
    if hasattr(section, "model_copy"):  # pydantic
        return section.model_copy(update=update)
    if dataclasses.is_dataclass(section):
        return dataclasses.replace(section, **update)
    s = copy.copy(section)
    for key, value in update.items():
        setattr(s, key, value)
    return s


def _dali_device(variant: str) -> str | None:
    """CLASFLOW_DALI_DEVICE for a loader variant: dali (auto), dali-cpu, dali-mixed (GPU decoding)."""
    return {"dali": None, "dali-cpu": "cpu", "dali-mixed": "gpu"}.get(variant)


def _timed(fn) -> float:
    tic = time.perf_counter()
    fn()
    return time.perf_counter() - tic


def _bench_one(section: Any, variant: str, batches: int, warmup: int, mode: str, workers: int | None) -> dict:
    """One loader: start-up (build + first batch), steady state, a new epoch's start, and
    for DALI a rebuild (close, build again, first batch: what every epoch used to cost)."""
    from clasflow.data import build_loader

    name = "opencv" if variant == "opencv" else "dali"
    device = _dali_device(variant)
    saved = os.environ.get("CLASFLOW_DALI_DEVICE")
    if device is not None:
        os.environ["CLASFLOW_DALI_DEVICE"] = device
    try:
        gc.collect()
        tic = time.perf_counter()
        loader = build_loader(_with_loader(section, name, workers), mode=mode)
        if 1 + warmup + batches > len(loader):
            from clasflow.errors import ConfigError

            raise ConfigError(f"the list has {len(loader)} batches; the benchmark needs warm-up + timed = "
                              f"{1 + warmup + batches} in one epoch (use a longer list or fewer --batches)")
        it = iter(loader)
        next(it)
        first_batch_s = time.perf_counter() - tic
        for _ in range(warmup):
            next(it)
        images = 0
        busy0, cpu0, t0 = machine_busy_seconds(), process_tree_cpu_seconds(), time.perf_counter()
        for _ in range(batches):
            x, _ = next(it)
            images += int(x.shape[0])
        wall = time.perf_counter() - t0
        cpu = process_tree_cpu_seconds() - cpu0
        others = max(0.0, machine_busy_seconds() - busy0 - cpu) / wall if wall > 0 else 0.0
        del x
        for _ in it:  # the rest of the epoch, then a new one starts (training's epoch switch)
            pass
        epoch_start_s = _timed(lambda: next(iter(loader)))
        out = {
            "images_per_sec": images / wall if wall > 0 else float("inf"),
            "cpu_ms_per_image": 1000.0 * cpu / images if images else 0.0,
            "images": images,
            "batches": batches,
            "wall_s": wall,
            "first_batch_s": first_batch_s,
            "epoch_start_s": epoch_start_s,
            "batch_s": wall / batches,
            "cores_used": cpu / wall if wall > 0 else 0.0,
            "other_cores": others,  # what other processes of the machine used meanwhile
        }
        if name == "dali":
            loader.close()
            out["rebuild_s"] = _timed(lambda: next(iter(loader)))
            out["builds"] = loader.builds
            out["threads"] = loader.num_threads
            out["device"] = "cpu" if loader.device_id is None else f"gpu:{loader.device_id}"
        else:
            out["workers"] = loader.num_workers
        loader.close()  # free DALI threads before the next loader forks its workers
        return out
    finally:
        if device is not None:
            if saved is None:
                os.environ.pop("CLASFLOW_DALI_DEVICE", None)
            else:
                os.environ["CLASFLOW_DALI_DEVICE"] = saved


_VARIANTS = ("dali", "dali-cpu", "dali-mixed", "opencv")


def _summary(runs: list[dict]) -> dict:
    """Median figures over the rounds, with the images/s and CPU-ms ranges."""
    if len(runs) == 1:
        return runs[0]
    out = dict(runs[len(runs) // 2])
    for key in ("images_per_sec", "cpu_ms_per_image", "first_batch_s", "epoch_start_s", "rebuild_s", "batch_s",
                "cores_used", "other_cores"):
        if key in out:
            values = sorted(r[key] for r in runs)
            out[key] = values[len(values) // 2]
            out[f"{key}_range"] = [values[0], values[-1]]
    out["rounds"] = len(runs)
    return out


def bench_loaders(
    section: Any,
    loaders: Sequence[str] = ("dali", "opencv"),
    batches: int = 20,
    *,
    warmup: int = WARMUP_BATCHES,
    mode: str = "train",
    rounds: int = 1,
    workers: dict[str, int] | None = None,
) -> dict[str, dict]:
    """Time ``batches`` batches (after the first and ``warmup`` more) of each loader on the section's list.

    Loaders: ``dali`` (its device chosen as in training), ``dali-cpu``, ``dali-mixed`` (GPU
    decoding) and ``opencv``; ``rounds`` alternates them (dali, opencv, dali, opencv, ...) in this
    one run and reports medians and ranges.  ``workers`` sets num_workers (OpenCV processes,
    DALI threads) per loader, else the section's.  Returns ``{name: {"images_per_sec",
    "cpu_ms_per_image", "images", "batches", "wall_s", "first_batch_s", "epoch_start_s", ...}}``:
    steady state apart from start-up (``first_batch_s``: build, worker start, first batch) and
    the start of a new epoch; CPU time counts all threads of this process and its worker
    processes.  A loader that cannot be built reports ``{"error": message}`` instead.
    """
    if batches < 1:
        raise ValueError(f"batches must be >= 1, got {batches}")
    for name in loaders:
        if name not in _VARIANTS:
            raise ValueError(f"unknown loader {name!r} ({', '.join(_VARIANTS)})")
    runs: dict[str, list[dict]] = {name: [] for name in loaders}
    errors: dict[str, dict] = {}
    for _ in range(max(1, rounds)):
        for name in loaders:
            if name in errors:
                continue
            try:
                runs[name].append(_bench_one(section, name, batches, warmup, mode, (workers or {}).get(name)))
            except Exception as e:  # noqa: BLE001 - reported per loader
                from clasflow.errors import ClasflowError

                if not isinstance(e, ClasflowError):
                    raise
                errors[name] = {"error": str(e)}
    return {name: errors.get(name) or _summary(runs[name]) for name in loaders}


def figure_lines(result: dict[str, dict]) -> list[str]:
    """One printable line per loader of a ``bench_loaders`` result."""
    lines = []
    for name, f in result.items():
        if not isinstance(f, dict):
            continue
        if "error" in f:
            lines.append(f"{name:10s} failed: {f['error']}")
            continue
        lo, hi = f.get("images_per_sec_range", [f["images_per_sec"]] * 2)
        extra = (f"rebuild {f['rebuild_s'] * 1000:.0f} ms, {f['threads']} threads" if "rebuild_s" in f
                 else f"{f['workers']} workers")
        lines.append(f"{name:10s} {f['images_per_sec']:7.1f} images/s ({lo:.0f}-{hi:.0f})  "
                     f"{f['cpu_ms_per_image']:5.2f} CPU-ms/image  start {f['first_batch_s'] * 1000:.0f} ms  "
                     f"new epoch {f['epoch_start_s'] * 1000:.0f} ms  {extra}  cores {f['cores_used']:.2f} "
                     f"(other processes {f['other_cores']:.2f})")
    return lines

"""Loader throughput: images/s and CPU-ms per image for DALI and OpenCV on the same list."""

from __future__ import annotations

import copy
import dataclasses
import gc
import os
import time
from typing import Any, Sequence

__all__ = ["bench_loaders", "process_tree_cpu_seconds"]

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


def _with_loader(section: Any, name: str) -> Any:
    if hasattr(section, "model_copy"):  # pydantic
        return section.model_copy(update={"loader": name})
    if dataclasses.is_dataclass(section):
        return dataclasses.replace(section, loader=name)
    s = copy.copy(section)
    setattr(s, "loader", name)
    return s


def _bench_one(section: Any, name: str, batches: int, warmup: int, mode: str) -> dict:
    from clasflow.data import build_loader

    gc.collect()
    loader = build_loader(_with_loader(section, name), mode=mode)
    it = iter(loader)

    def next_batch():
        nonlocal it
        try:
            return next(it)
        except StopIteration:
            it = iter(loader)
            return next(it)

    for _ in range(warmup):  # pipeline build, worker start-up, first allocations
        next_batch()
    images = 0
    cpu0, t0 = process_tree_cpu_seconds(), time.perf_counter()
    for _ in range(batches):
        x, _ = next_batch()
        images += int(x.shape[0])
    wall = time.perf_counter() - t0
    cpu = process_tree_cpu_seconds() - cpu0
    if hasattr(it, "close"):
        it.close()
    del it
    loader.close()  # free DALI threads before the next loader forks its workers
    out = {
        "images_per_sec": images / wall if wall > 0 else float("inf"),
        "cpu_ms_per_image": 1000.0 * cpu / images if images else 0.0,
        "images": images,
        "batches": batches,
        "wall_s": wall,
    }
    if name == "dali":
        dev = getattr(loader, "device_id", None)
        out["device"] = "cpu" if dev is None else f"gpu:{dev}"
    else:
        out["workers"] = getattr(loader, "num_workers", None)
    return out


def bench_loaders(
    section: Any,
    loaders: Sequence[str] = ("dali", "opencv"),
    batches: int = 20,
    *,
    warmup: int = 1,
    mode: str = "train",
) -> dict[str, dict]:
    """Time ``batches`` batches (after ``warmup``) of each loader on the section's list.

    Returns ``{name: {"images_per_sec", "cpu_ms_per_image", "images", "batches", "wall_s", ...}}``;
    CPU time counts all threads of this process and its worker processes.  A loader that
    cannot be built reports ``{"error": message}`` instead.
    """
    if batches < 1:
        raise ValueError(f"batches must be >= 1, got {batches}")
    results: dict[str, dict] = {}
    for name in loaders:
        if name not in ("dali", "opencv"):
            raise ValueError(f"unknown loader {name!r} (dali, opencv)")
        try:
            results[name] = _bench_one(section, name, batches, warmup, mode)
        except Exception as e:  # noqa: BLE001 - reported per loader
            from clasflow.errors import ClasflowError

            if not isinstance(e, ClasflowError):
                raise
            results[name] = {"error": str(e)}
    return results

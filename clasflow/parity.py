"""Export parity: an exported model scored on a labeled list through every backend and precision
(`clasflow eval --model_dir`), and the gate that compares it with the dygraph eval.

The images are preprocessed once, as the export's ``inference.yml`` says (`clasflow.predict`),
and fed to the benchmark's runners (`clasflow.benchmark.open_backend`: the same predictor,
session or engine that is timed). Each backend/precision gives an entry ``{backend, device, precision,
status, top1, topk, correct, images}``; one that cannot run here is ``status: skipped`` with the
reason, one that breaks is ``status: failed``. The gate (`gate`) fails an entry whose top-1
differs from the dygraph top-1 by more than its precision's tolerance (in points), and every
failed one; skipped ones are reported, not failed.
"""

from __future__ import annotations

import datetime as _dt
import gc
import logging
import os
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from clasflow.errors import ClasflowError, DataError

log = logging.getLogger(__name__)

SCHEMA = "clasflow.parity/1"
GPU_ONLY = ("paddle-trt", "onnxruntime-trt", "tensorrt")
TOLERANCES = {"fp32": 0.3, "fp16": 0.5, "int8": 1.0}  # points of top-1 (the pipeline's parity_* defaults)
CALIB_IMAGES = 32  # images of the list the native TensorRT int8 engine is calibrated on


def load_labeled(image_list: str | os.PathLike, data_dir: str | os.PathLike | None,
                 meta: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """Every image of a labeled PaddleClas list, preprocessed as ``inference.yml`` says: (N, 3, H, W), labels."""
    from clasflow.data.lists import read_list
    from clasflow.predict import build_preprocess, load_image

    lst = Path(image_list)
    if not lst.is_file():
        raise DataError(f"--image_list: file {str(lst)!r} not found (a labeled PaddleClas list: 'path label' lines)")
    base = Path(data_dir) if data_dir else lst.parent
    if not base.is_dir():
        raise DataError(f"--data_dir: folder {str(base)!r} (the root of the --image_list paths) not found")
    entries = read_list(str(lst), labeled=True, class_num=int(meta["class_num"]))
    if not entries:
        raise DataError(f"--image_list {lst}: no images listed")
    pre = build_preprocess(meta)
    images = np.stack([load_image(base / e.path, pre) for e in entries])
    return images, np.array([e.label for e in entries], dtype=np.int64)


def device_for(backend: str) -> str:
    """The GPU where there is one (TensorRT backends always ask for it, and say why they cannot)."""
    from clasflow.engine.runtime import gpu_available

    return "gpu" if backend in GPU_ONLY or gpu_available() else "cpu"


def _score(runner, images: np.ndarray, labels: np.ndarray, k: int, batch_size: int) -> dict[str, Any]:
    top1 = topk = 0
    for s in range(0, len(images), batch_size):
        logits = np.asarray(runner.run(images[s:s + batch_size]))
        if logits.ndim != 2 or logits.shape[0] != len(images[s:s + batch_size]):
            raise ClasflowError(f"the model returned shape {list(logits.shape)} for a batch of {len(images[s:s + batch_size])}")
        best = np.argsort(-logits, axis=1, kind="stable")[:, :k]
        truth = labels[s:s + batch_size, None]
        top1 += int((best[:, :1] == truth).sum())
        topk += int((best == truth).any(axis=1).sum())
    n = len(images)
    return {"top1": top1 / n, "topk": topk / n, "correct": top1, "correct_topk": topk}


def score_export(model_dir: str | os.PathLike, image_list: str | os.PathLike, data_dir: str | os.PathLike | None = None,
                 *, backends: Sequence[str] = ("paddle", "onnxruntime"), precisions: Sequence[str] = ("fp32",),
                 topk: int = 5, batch_size: int = 16, threads: int | None = None, engine_cache: str | None = None,
                 gpu_id: int = 0, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Top-1/top-k of an export per backend and precision on a labeled list (see the module docstring)."""
    from clasflow.benchmark import Skip, environment, make_context, open_backend
    from clasflow.predict import load_meta

    say = progress or (lambda text: log.info("%s", text))
    if batch_size < 1:
        raise ClasflowError(f"--batch_size: {batch_size} must be at least 1")
    meta = load_meta(model_dir)
    images, labels = load_labeled(image_list, data_dir, meta)
    k = max(1, min(int(topk), int(meta["class_num"])))
    bs = min(batch_size, len(images))
    calib = images[np.linspace(0, len(images) - 1, min(CALIB_IMAGES, len(images))).astype(int)]
    ctx = make_context(model_dir, max_batch=bs, threads=threads, engine_cache=engine_cache, calib=calib, gpu_id=gpu_id,
                       meta=meta)
    results: list[dict[str, Any]] = []
    for backend in backends:
        device = device_for(backend)
        for precision in precisions:
            entry: dict[str, Any] = {"backend": backend, "device": device, "precision": precision,
                                     "images": int(len(images)), "k": k}
            label = f"{backend}/{device}/{precision}"
            runner = None
            try:
                runner, options = open_backend(ctx, backend, device, precision)
                say(f"{label}: scoring {len(images)} images")
                entry.update(status="ok", **_score(runner, images, labels, k, bs), options=options)
            except Skip as exc:
                log.warning("%s: skipped: %s", label, exc)
                entry.update(status="skipped", reason=str(exc))
            except Exception as exc:  # a backend that is present but breaks: reported, and the gate fails it
                reason = f"{type(exc).__name__}: {exc}".strip()
                log.error("%s: failed: %s", label, reason)
                entry.update(status="failed", reason=reason)
            finally:
                if runner is not None:
                    runner.close()
                    del runner
                    gc.collect()
            results.append(entry)
    return {"schema": SCHEMA, "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "model": {"dir": str(Path(model_dir).resolve()), "architecture": meta.get("architecture"),
                      "class_num": meta.get("class_num")},
            "list": {"path": str(image_list), "images": int(len(images)), "k": k},
            **environment(ctx.threads), "results": results}


def gate(report: dict[str, Any], dygraph_top1: float, tolerances: dict[str, float] | None = None) -> dict[str, Any]:
    """Compare every entry with the dygraph top-1; adds ``delta_points`` and ``verdict`` to each and
    ``report["gate"]`` = {dygraph_top1, tolerances, passed, failures, skipped}."""
    tol = {**TOLERANCES, **(tolerances or {})}
    failures, skipped = [], []
    for r in report["results"]:
        name = f"{r['backend']}/{r['device']}/{r['precision']}"
        if r["status"] == "skipped":
            r["verdict"] = "skipped"
            skipped.append(f"{name}: {r['reason']}")
        elif r["status"] == "failed":
            r["verdict"] = "fail"
            failures.append(f"{name} could not be scored: {r['reason']}")
        else:
            r["delta_points"] = (r["top1"] - dygraph_top1) * 100.0
            ok = abs(r["delta_points"]) <= tol[r["precision"]] + 1e-9
            r["verdict"] = "pass" if ok else "fail"
            if not ok:
                failures.append(f"{name}: top-1 {r['top1']:.4f} vs dygraph {dygraph_top1:.4f} "
                                f"({r['delta_points']:+.2f} points, allowed {tol[r['precision']]:.2f})")
    report["gate"] = {"dygraph_top1": float(dygraph_top1), "tolerances": tol, "passed": not failures,
                      "ran": sum(1 for r in report["results"] if r["status"] == "ok"),
                      "failures": failures, "skipped": skipped}
    return report["gate"]


def metrics(report: dict[str, Any]) -> dict[str, float]:
    """Flat metrics of a (gated) report, for MLflow and the KFP step: ``top1.<backend>.<precision>`` etc."""
    out: dict[str, float] = {}
    for r in report["results"]:
        if r["status"] != "ok":
            continue
        tag = f"{r['backend']}.{r['precision']}" + ("" if r["device"] == "cpu" else f".{r['device']}")
        out[f"top1.{tag}"] = r["top1"]
        out[f"top{r['k']}.{tag}"] = r["topk"]
        if "delta_points" in r:
            out[f"delta_points.{tag}"] = r["delta_points"]
    g = report.get("gate")
    if g:
        out.update({"dygraph_top1": g["dygraph_top1"], "passed": float(g["passed"]), "ran": float(g["ran"]),
                    "skipped": float(len(g["skipped"])), "failed": float(len(g["failures"]))})
    return out


def print_table(report: dict[str, Any], console=None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = console or Console(width=120)
    g = report.get("gate")
    table = Table(title=f"{report['model'].get('architecture')} on {report['list']['path']} ({report['list']['images']} images)")
    cols = ["backend", "device", "prec", "top-1", f"top-{report['list']['k']}"] + (["delta pts", "verdict"] if g else [])
    for col in cols:
        table.add_column(col, justify="left" if col in ("backend", "device", "prec", "verdict") else "right")
    for r in report["results"]:
        head = [r["backend"], r["device"], r["precision"]]
        if r["status"] == "ok":
            row = head + [f"{r['top1']:.4f}", f"{r['topk']:.4f}"]
            if g:
                row += [f"{r['delta_points']:+.2f}", r["verdict"]]
        else:
            row = head + ["-", "-"] + (["-", r["verdict"]] if g else [])
        table.add_row(*row)
    console.print(table)
    for r in report["results"]:
        if r["status"] != "ok":
            console.print(f"[yellow]{r['backend']}/{r['device']}/{r['precision']} {r['status']}[/yellow]: {r['reason']}",
                          highlight=False)
    if g:
        console.print(f"dygraph top-1 {g['dygraph_top1']:.4f}: parity " + ("passed" if g["passed"] else "FAILED"))

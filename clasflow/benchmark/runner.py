"""The benchmark run: every backend x device x precision x batch size, timed the same way.

A combination this machine cannot run becomes a result ``{"status": "skipped", "reason": ...}``;
one that breaks while running becomes ``{"status": "failed", "reason": ...}``. Engine build /
predictor creation (``build_s``) and warm-up (``warmup_s``, ``first_run_ms``) are measured apart
from the steady-state latencies (mean/p50/p90/p99 over ``repeats`` timed runs, host array in,
host array out). With ``--image_list`` the inputs are real images preprocessed as inference.yml
says, and each result reports its top-1 agreement with fp32 on the held-out ones: images that
neither TensorRT's int8 calibration here nor the export's (``files_sha256``) has seen.
"""

from __future__ import annotations

import datetime as _dt
import gc
import logging
import math
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from clasflow.benchmark import backend_onnxruntime, backend_paddle, backend_paddle_trt, backend_tensorrt
from clasflow.benchmark.common import (CALIB_IMAGES, MAX_IMAGES, PRECISIONS, BenchSettings, Context, Runner, Skip,
                                       default_engine_cache)
from clasflow.benchmark.environment import environment
from clasflow.errors import ClasflowError
from clasflow.fsutil import file_digest
from clasflow.predict import default_threads, load_image_list, load_meta

log = logging.getLogger(__name__)

SCHEMA = "clasflow.benchmark/1"

# backend name -> make(ctx, device, precision) -> (runner, options reported with each result)
MAKERS: dict[str, Callable[[Context, str, str], tuple[Runner, dict[str, Any]]]] = {
    "paddle": backend_paddle.make,
    "paddle-trt": backend_paddle_trt.make,
    "onnxruntime": backend_onnxruntime.make,
    "onnxruntime-trt": backend_onnxruntime.make_trt,
    "tensorrt": backend_tensorrt.make,
}


def _batches(images: np.ndarray | None, bs: int, hw: tuple[int, int], rng: np.random.Generator, count: int = 4) -> list[np.ndarray]:
    if images is None:
        return [rng.standard_normal((bs, 3, hw[0], hw[1])).astype(np.float32) for _ in range(count)]
    n = len(images)
    out = []
    for b in range(max(1, min(count, math.ceil(n / bs)))):
        idx = [(b * bs + j) % n for j in range(bs)]
        out.append(np.ascontiguousarray(images[idx]))
    return out


def measure(runner: Runner, batches: Sequence[np.ndarray], warmup: int, repeats: int) -> dict[str, Any]:
    bs = int(batches[0].shape[0])
    started = time.perf_counter()
    runner.run(batches[0])
    first_ms = (time.perf_counter() - started) * 1000
    for i in range(1, max(1, warmup)):
        runner.run(batches[i % len(batches)])
    warmup_s = time.perf_counter() - started
    times = np.empty(repeats, dtype=np.float64)
    for i in range(repeats):
        batch = batches[i % len(batches)]
        t = time.perf_counter()
        runner.run(batch)
        times[i] = time.perf_counter() - t
    ms = times * 1000.0
    mean = float(ms.mean())
    return {
        "latency_ms": {"mean": mean, "p50": float(np.percentile(ms, 50)), "p90": float(np.percentile(ms, 90)),
                       "p99": float(np.percentile(ms, 99)), "min": float(ms.min()), "max": float(ms.max()),
                       "std": float(ms.std())},
        "throughput_ips": bs * 1000.0 / mean if mean > 0 else None,
        "first_run_ms": first_ms,
        "warmup_s": warmup_s,
    }


def _top1(runner: Runner, images: np.ndarray, chunk: int) -> np.ndarray:
    out = [np.asarray(runner.run(images[s:s + chunk])).argmax(axis=1) for s in range(0, len(images), chunk)]
    return np.concatenate(out)


def split_images(hashes: Sequence[str], exported_calibration: Sequence[str] | None, max_calib: int) -> tuple[list[int], list[int]]:
    """(calibration indices, held-out indices) of the benchmark's images: images the export
    calibrated on (``files_sha256`` in inference.yml) are in neither; of the rest, up to
    ``max_calib`` and at most half, spread over them, calibrate TensorRT; the others are held out
    for the top-1 agreement of every backend and precision."""
    seen = set(exported_calibration or ())
    free = [i for i, h in enumerate(hashes) if h not in seen]
    n_calib = min(max_calib, len(free) // 2)
    picks = sorted({free[j] for j in np.linspace(0, len(free) - 1, n_calib).astype(int)}) if n_calib else []
    return picks, [i for i in free if i not in set(picks)]


def _entry(backend: str, device: str, precision: str, bs: int, **kw) -> dict[str, Any]:
    return {"backend": backend, "device": device, "precision": precision, "batch_size": bs, **kw}


def make_context(model_dir: str | Path, *, max_batch: int = 1, threads: int | None = None,
                 engine_cache: str | Path | None = None, calib: np.ndarray | None = None, gpu_id: int = 0,
                 meta: dict[str, Any] | None = None) -> Context:
    """The context a backend needs for the export in ``model_dir`` (batch profile 1..max_batch)."""
    meta = meta if meta is not None else load_meta(model_dir)
    h, w = (int(v) for v in meta["input"]["shape"][2:])
    cache_dir = Path(engine_cache) if engine_cache else default_engine_cache()
    return Context(Path(model_dir), meta, (h, w), (1, max_batch, max_batch), int(threads or default_threads()),
                   cache_dir, calib, gpu_id)


def open_backend(ctx: Context, backend: str, device: str = "cpu", precision: str = "fp32") -> tuple[Runner, dict[str, Any]]:
    """One backend's runner (``runner.run(batch) -> logits``; close it after use) and the options
    it runs with. Raises :class:`Skip` (with the reason) when it cannot run here."""
    if backend not in MAKERS:
        raise ClasflowError(f"unknown backend {backend!r}; choose one of {', '.join(MAKERS)}")
    return MAKERS[backend](ctx, device, precision)


def run_benchmark(settings: BenchSettings, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Every backend x device x precision x batch size; returns the report (see the module docstring)."""
    say = progress or (lambda text: log.info("%s", text))
    meta = load_meta(settings.model_dir)
    model_dir = Path(settings.model_dir)
    bss = sorted(settings.batch_sizes)
    if settings.warmup < 1 or settings.repeats < 1:
        raise ClasflowError("--warmup and --repeats must be at least 1")
    images, image_paths = (None, [])
    if settings.image_list:
        images, image_paths = load_image_list(settings.image_list, settings.data_dir, meta, limit=MAX_IMAGES)
    calib = held_out = None
    split: dict[str, Any] = {}
    if images is not None:
        exported = ((meta.get("int8") or {}).get("calibration") or {}).get("files_sha256")
        calib_idx, held_idx = split_images([file_digest(p) for p in image_paths], exported, CALIB_IMAGES)
        calib, held_out = images[calib_idx], images[held_idx]
        split = {"calibration_images": len(calib_idx), "held_out_images": len(held_idx),
                 "export_calibration_excluded": (len(images) - len(calib_idx) - len(held_idx)) if exported is not None
                 else ("not checked: the export records no files_sha256" if meta.get("int8") else None)}
        if meta.get("int8") and exported is None:
            log.warning("%s: inference.yml records no files_sha256 of its int8 calibration images: the held-out "
                        "images may include them (re-export with --int8_calib)", model_dir)
    ctx = make_context(model_dir, max_batch=max(bss), threads=settings.threads, engine_cache=settings.engine_cache,
                       calib=calib, gpu_id=settings.gpu_id, meta=meta)
    h, w = ctx.hw
    threads, cache_dir = ctx.threads, ctx.cache_dir
    env = environment(threads)
    report: dict[str, Any] = {
        "schema": SCHEMA,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "model": {"dir": str(model_dir.resolve()), "architecture": meta.get("architecture"),
                  "class_num": meta.get("class_num"), "input_shape": [-1, 3, h, w]},
        "inputs": ({"kind": "images", "count": len(image_paths), "list": str(settings.image_list), **split} if images is not None
                   else {"kind": "random", "distribution": "standard normal", "seed": settings.seed}),
        "settings": {"backends": settings.backends, "devices": settings.devices, "precisions": settings.precisions,
                     "batch_sizes": bss, "threads": threads, "warmup": settings.warmup, "repeats": settings.repeats,
                     "engine_cache": str(cache_dir), "timing": "host input -> host output, per batch"},
        **env,
        "results": [],
    }
    results: list[dict[str, Any]] = report["results"]
    reference: dict[str, Any] = {}  # "<backend>/<device>" -> fp32 top-1; "*" -> the first fp32 top-1
    precisions = sorted(settings.precisions, key=PRECISIONS.index)  # fp32 first: it is the reference
    for device in settings.devices:
        for backend in settings.backends:
            for precision in precisions:
                label = f"{backend}/{device}/{precision}"
                try:
                    runner, options = open_backend(ctx, backend, device, precision)
                except Skip as exc:
                    log.debug("%s: skipped: %s", label, exc)
                    results += [_entry(backend, device, precision, bs, status="skipped", reason=str(exc)) for bs in bss]
                    continue
                except Exception as exc:  # a backend that is present but breaks: report it, go on
                    reason = f"{type(exc).__name__}: {exc}".strip()
                    say(f"{label}: failed: {reason}")
                    results += [_entry(backend, device, precision, bs, status="failed", reason=reason) for bs in bss]
                    continue
                try:
                    agreement: dict[str, Any] = {"top1_agreement_vs_fp32": None}
                    if held_out is not None and len(held_out):  # images no calibration has seen
                        top1 = _top1(runner, held_out, max(bss))
                        own = f"{backend}/{device}"
                        if precision == "fp32":  # fp32 entries: agreement with the first fp32 measured
                            reference.setdefault(own, top1)
                            reference.setdefault("*", (label, top1))
                            ref_name, ref = reference["*"]
                        else:  # fp16/int8: agreement with this backend's fp32 (else the first fp32)
                            ref_name, ref = ((f"{own}/fp32", reference[own]) if own in reference
                                             else reference.get("*", (None, None)))
                        if ref is not None and ref_name != label:
                            agreement = {"top1_agreement_vs_fp32": float((top1 == ref).mean()),
                                         "agreement_reference": ref_name, "agreement_images": int(len(held_out))}
                    for bs in bss:
                        say(f"{label}: batch {bs}: {settings.warmup} warm-up + {settings.repeats} timed runs")
                        rng = np.random.default_rng(settings.seed + bs)
                        try:
                            stats = measure(runner, _batches(images, bs, (h, w), rng), settings.warmup, settings.repeats)
                        except Exception as exc:
                            reason = f"{type(exc).__name__}: {exc}".strip()
                            results.append(_entry(backend, device, precision, bs, status="failed", reason=reason))
                            continue
                        results.append(_entry(backend, device, precision, bs, status="ok", build_s=float(runner.build_s),
                                              **stats, **agreement, options=options))
                except Exception as exc:
                    reason = f"{type(exc).__name__}: {exc}".strip()
                    results += [_entry(backend, device, precision, bs, status="failed", reason=reason)
                                for bs in bss if not any(r["batch_size"] == bs and r["backend"] == backend and r["device"] == device
                                                         and r["precision"] == precision for r in results)]
                finally:
                    runner.close()
                    del runner
                    gc.collect()
    report["summary"] = {s: sum(1 for r in results if r["status"] == s) for s in ("ok", "skipped", "failed")}
    return report

"""CPU figures for `make bench`: paddle (oneDNN) and onnxruntime side by side on exports with
random weights."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Sequence

from clasflow.benchmark.common import BenchSettings
from clasflow.benchmark.report import fmt, write_report
from clasflow.benchmark.runner import run_benchmark
from clasflow.predict import default_threads

BENCH_ARCHS = ("MobileNetV3_large_x1_0", "ResNet50_vd")


def bench_cpu(out: str | os.PathLike | None = None, *, archs: Sequence[str] = BENCH_ARCHS, image_size: int = 224,
              batch_sizes: Sequence[int] = (1, 4), warmup: int = 10, repeats: int = 50, threads: int | None = None,
              work_dir: str | os.PathLike | None = None, print_results: bool = True) -> dict[str, Any]:
    """CPU latency of paddle (oneDNN) and onnxruntime side by side for ``archs`` (random weights)."""
    from clasflow.export import export_model

    threads = int(threads or default_threads())
    combined: dict[str, Any] = {"schema": "clasflow.bench-cpu/1", "image_size": image_size, "threads": threads,
                                "weights": "random (latency only)", "models": {}}
    with tempfile.TemporaryDirectory(prefix="clasflow-bench-", dir=work_dir) as tmp:
        for arch in archs:
            model_dir = Path(tmp) / arch
            exported = export_model(arch=arch, output_path=model_dir, pretrained_model=None, class_num=1000,
                                    image_size=image_size, onnx=True)
            report = run_benchmark(BenchSettings(model_dir=str(model_dir), backends=["paddle", "onnxruntime"],
                                                 batch_sizes=list(batch_sizes), threads=threads, warmup=warmup,
                                                 repeats=repeats), progress=lambda text: None)
            report["export_max_abs_diff"] = exported.max_abs_diff
            combined["models"][arch] = report
            combined.setdefault("versions", report["versions"])
            combined.setdefault("device", report["device"])
    combined["table"] = [
        {"architecture": arch, "batch_size": bs,
         **{f"{b}_ms_{k}": next((r["latency_ms"][k] for r in rep["results"]
                                 if r["backend"] == b and r["batch_size"] == bs and r["status"] == "ok"), None)
            for b in ("paddle", "onnxruntime") for k in ("mean", "p50")}}
        for arch, rep in combined["models"].items() for bs in batch_sizes]
    if out:
        write_report(combined, out)
    if print_results:
        print_bench_cpu(combined)
    return combined


def print_bench_cpu(combined: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"CPU inference, {combined['image_size']}px, {combined['threads']} threads "
                    f"({combined.get('device', {}).get('cpu', '?')}), random weights")
    for col in ("model", "bs", "paddle oneDNN p50 ms", "paddle mean ms", "onnxruntime p50 ms", "onnxruntime mean ms",
                "paddle / ort"):
        t.add_column(col, justify="left" if col == "model" else "right")
    for row in combined["table"]:
        p, o = row["paddle_ms_p50"], row["onnxruntime_ms_p50"]
        ratio = f"{p / o:.2f}" if p and o else "-"
        t.add_row(row["architecture"], str(row["batch_size"]), _fmt(p), _fmt(row["paddle_ms_mean"]), _fmt(o),
                  _fmt(row["onnxruntime_ms_mean"]), ratio)
    Console(width=140).print(t)

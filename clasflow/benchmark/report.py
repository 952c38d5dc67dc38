"""A benchmark report's outputs: the JSON file, the MLflow metrics and the printed table."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
from typing import Any

from clasflow.fsutil import write_text_atomic


def metric_tag(r: dict[str, Any]) -> str:
    tag = f"{r['backend']}.{r['precision']}.bs{r['batch_size']}"
    return tag if r["device"] == "cpu" else f"{r['backend']}.{r['device']}.{r['precision']}.bs{r['batch_size']}"


def mlflow_metrics(report: dict[str, Any]) -> dict[str, float]:
    """The figures of every ok result as ``benchmark/<figure>.<backend...>`` (the prefix puts them in
    their own section of MLflow's chart view, apart from the training curves)."""
    out: dict[str, float] = {}
    for r in report["results"]:
        if r["status"] != "ok":
            continue
        tag = metric_tag(r)
        for k in ("mean", "p50", "p90", "p99"):
            out[f"benchmark/latency_ms_{k}.{tag}"] = r["latency_ms"][k]
        if r.get("throughput_ips") is not None:
            out[f"benchmark/throughput_ips.{tag}"] = r["throughput_ips"]
        out[f"benchmark/build_s.{tag}"] = r["build_s"]
        out[f"benchmark/warmup_s.{tag}"] = r["warmup_s"]
        if r.get("top1_agreement_vs_fp32") is not None:
            out[f"benchmark/top1_agreement.{tag}"] = r["top1_agreement_vs_fp32"]
    return out


def log_to_mlflow(report: dict[str, Any], json_path: str | os.PathLike | None = None) -> bool:
    """Log every result to the active MLflow run, if there is one (and mlflow is in use)."""
    mlflow = sys.modules.get("mlflow")  # no run can be active unless mlflow was imported
    if mlflow is None or mlflow.active_run() is None:
        return False
    metrics = mlflow_metrics(report)
    if metrics:
        mlflow.log_metrics(metrics)
    with contextlib.suppress(Exception):
        mlflow.set_tags({"benchmark.device": str(report["device"].get("gpu") or report["device"]["cpu"]),
                         "benchmark.paddle": str(report["versions"].get("paddlepaddle")),
                         "benchmark.onnxruntime": str(report["versions"].get("onnxruntime")),
                         "benchmark.tensorrt": str(report["versions"].get("tensorrt"))})
    if json_path:
        mlflow.log_artifact(str(json_path))
    return True


def write_report(report: dict[str, Any], path: str | os.PathLike) -> None:
    write_text_atomic(path, json.dumps(report, indent=2) + "\n")


def fmt(v: Any, digits: int = 2) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def print_table(report: dict[str, Any], console=None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = console or Console(width=max(120, shutil.get_terminal_size((120, 20)).columns))
    arch = report["model"].get("architecture")
    shape = "x".join(str(s) for s in report["model"]["input_shape"][1:])
    table = Table(title=f"{arch} {shape}  ({report['inputs']['kind']} inputs)", show_lines=False)
    for col in ("backend", "device", "prec", "bs", "mean ms", "p50 ms", "p90 ms", "p99 ms", "img/s", "build s",
                "warm-up s", "top1 agr"):
        table.add_column(col, justify="right" if col not in ("backend", "device", "prec") else "left")
    reasons: dict[str, str] = {}
    for r in report["results"]:
        head = [r["backend"], r["device"], r["precision"], str(r["batch_size"])]
        if r["status"] == "ok":
            lat = r["latency_ms"]
            agr = r.get("top1_agreement_vs_fp32")
            table.add_row(*head, fmt(lat["mean"]), fmt(lat["p50"]), fmt(lat["p90"]), fmt(lat["p99"]),
                          fmt(r["throughput_ips"], 1), fmt(r["build_s"]), fmt(r["warmup_s"]),
                          "-" if agr is None else f"{agr:.3f}")
        else:
            reasons.setdefault(f"{r['backend']}/{r['device']}/{r['precision']} {r['status']}", r.get("reason", ""))
    if table.row_count:
        console.print(table)
    for what, why in reasons.items():
        console.print(f"[yellow]{what}[/yellow]: {why}", highlight=False)
    v, d = report["versions"], report["device"]
    console.print(f"device: {d['cpu']} ({d['threads']} threads)" + (f", GPU {d['gpu']}" if d.get("gpu") else ""))
    console.print("versions: " + ", ".join(f"{k} {v[k]}" for k in ("paddlepaddle", "onnxruntime", "tensorrt", "paddle_cuda",
                                                                   "cuda_runtime", "cuda_driver", "nvidia_driver") if v.get(k) not in (None, "False")))

"""The run's report from a recorded MLflow experiment: Top1 table and curves, export parity,
machine, warnings; the files (Markdown with its PNG beside it, self-contained HTML) and the
copy attached to the parent MLflow run."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import pytest

CURVES = {"ResNet50_vd": [0.1, 0.2, 0.28], "ResNet50_vd_finetune": [0.8, 0.93, 0.91],
          "R50_vd_distill_MV3_large_x1_0": [0.9, 0.97]}


def _entry(backend, device, precision, **kw):
    return {"backend": backend, "device": device, "precision": precision, **kw}


PARITY = {
    "schema": "clasflow.parity/1", "list": {"path": "val_list.txt", "images": 1020, "k": 5},
    "model": {"architecture": "MobileNetV3_large_x1_0"},
    "device": {"cpu": "AMD EPYC test", "cpu_count": 2, "threads": 2, "gpu": None, "gpu_count": 0},
    "versions": {"paddlepaddle": "3.3.0", "onnxruntime": "1.20.0", "tensorrt": None},
    "results": [
        _entry("paddle", "cpu", "fp32", status="ok", top1=0.9647, topk=0.99, delta_points=0.0, verdict="pass"),
        _entry("onnxruntime", "cpu", "fp32", status="ok", top1=0.9637, topk=0.99, delta_points=-0.1, verdict="pass"),
        _entry("tensorrt", "gpu", "int8", status="skipped", reason="no CUDA device 0 visible", verdict="skipped"),
    ],
    "gate": {"dygraph_top1": 0.9647, "tolerances": {"fp32": 0.3, "fp16": 0.5, "int8": 1.0}, "passed": True, "ran": 2,
             "failures": [], "skipped": ["tensorrt/gpu/int8: no CUDA device 0 visible"]},
}
BENCH = {
    "schema": "clasflow.benchmark/1", "device": {"cpu": "AMD EPYC 7B13", "cpu_count": 2, "threads": 2, "gpu": None,
                                                 "gpu_count": 0},
    "versions": {"paddlepaddle": "3.3.0", "onnxruntime": "1.20.0", "tensorrt": None, "python": "3.11.9"},
    "results": [
        _entry("paddle", "cpu", "fp32", batch_size=1, status="ok", latency_ms={"p50": 15.3}, throughput_ips=60.0),
        _entry("paddle", "cpu", "fp32", batch_size=4, status="ok", latency_ms={"p50": 38.2}, throughput_ips=101.5),
        _entry("onnxruntime", "cpu", "fp32", batch_size=1, status="ok", latency_ms={"p50": 4.9}, throughput_ips=190.0),
        _entry("tensorrt", "gpu", "fp32", batch_size=1, status="skipped", reason="the tensorrt Python package is not usable here"),
    ],
}


def _record(uri: str, tmp: Path, *, parent: bool = True) -> str | None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    exp = client.create_experiment("recorded")
    parent_id = client.create_run(exp, tags={"mlflow.runName": "pipeline p1"}).info.run_id if parent else None
    tags = {"clasflow.pipeline_run": "p1", **({"mlflow.parentRunId": parent_id} if parent else {})}
    for name, curve in CURVES.items():
        extra = {"clasflow.device": "gpu", "clasflow.loader.train": "dali", "clasflow.loader.valid": "dali"}
        if name == "ResNet50_vd":
            extra = {"clasflow.device": "gpu", "clasflow.loader.train": "opencv",
                     "clasflow.loader.train.fallback": "DALI could not open decoder"}
        run = client.create_run(exp, tags={"mlflow.runName": name, "clasflow.stage": "train", **tags, **extra})
        for step, value in enumerate(curve):
            client.log_metric(run.info.run_id, "valid_top1", value, step=step)
        if name == "ResNet50_vd_finetune":
            client.log_metric(run.info.run_id, "mlflow_pending", 3)
        client.set_terminated(run.info.run_id)
    for stage, result in (("parity", PARITY), ("benchmark", BENCH)):
        run = client.create_run(exp, tags={"mlflow.runName": stage, "clasflow.stage": stage, **tags})
        path = tmp / f"{stage}.json"
        path.write_text(json.dumps(result))
        client.log_artifact(run.info.run_id, str(path))
    other = client.create_run(exp, tags={"mlflow.runName": "ResNet50_vd", "clasflow.stage": "train", "clasflow.pipeline_run": "p0"})
    client.log_metric(other.info.run_id, "valid_top1", 0.99, step=0)
    return parent_id


@pytest.fixture
def recorded(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.delenv("MLFLOW_PARENT_RUN_ID", raising=False)
    (tmp_path / "rec").mkdir()
    return uri, _record(uri, tmp_path / "rec")


def test_report_files_from_a_recorded_run(recorded, tmp_path):
    from mlflow.tracking import MlflowClient

    from clasflow.report import compare

    uri, parent = recorded
    rep = compare(tmp_path / "out", experiment="recorded", pipeline_run="p1", profile="full", tolerance=0.01,
                  attach_to_parent=True)
    by = {r.config: r for r in rep.rows}
    assert set(by) == set(CURVES)
    assert by["ResNet50_vd"].best_top1 == pytest.approx(0.28) and by["ResNet50_vd"].verdict == "pass"  # not p0's 0.99
    assert by["ResNet50_vd_finetune"].best_top1 == pytest.approx(0.93) and by["ResNet50_vd_finetune"].last_top1 == pytest.approx(0.91)
    assert by["ResNet50_vd_finetune"].verdict == "fail"  # 0.93 < 0.9402 - 0.01
    out = tmp_path / "out"
    md = (out / "report.md").read_text()
    assert "| ResNet50_vd_finetune | 0.9300 | 0.9100 | 0.9402 | -0.0102 | gpu | train dali, valid dali | fail |" in md
    # the PNG the Markdown links is written beside it
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert links == ["top1_curves.png"]
    png = (out / links[0]).read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    # parity beside the benchmark: p50 at bs1, images/s at the largest batch
    assert "| paddle | cpu | fp32 | 0.9647 | +0.00 | 15.30 | 101.5 (bs 4) | pass |" in md
    assert "| onnxruntime | cpu | fp32 | 0.9637 | -0.10 | 4.90 | 190.0 (bs 1) | pass |" in md
    assert "| tensorrt | gpu | int8 | skipped | - | - | - | skipped |" in md
    assert "dygraph top-1 0.9647" in md and "Gate: passed" in md
    assert "AMD EPYC 7B13" in md and "paddlepaddle 3.3.0" in md  # the benchmark's machine, not the parity's
    warnings = md.split("## Warnings", 1)[1]
    assert "ResNet50_vd_finetune: 3 MLflow records were still pending" in warnings
    assert "ResNet50_vd: train loader fell back: DALI could not open decoder" in warnings
    assert "parity: tensorrt/gpu/int8 skipped: no CUDA device 0 visible" in warnings
    assert "benchmark: tensorrt/gpu/fp32 skipped: the tensorrt Python package" in warnings
    # the HTML is one file: the same PNG embedded
    page = (out / "report.html").read_text()
    embedded = re.search(r"src='data:image/png;base64,([^']+)'", page).group(1)
    assert base64.b64decode(embedded) == png
    assert "<td class='fail'>fail</td>" in page and "Export parity" in page
    assert json.loads((out / "report.json").read_text())["parity"]["gate"]["passed"] is True
    # attached to the pipeline run's parent MLflow run
    client = MlflowClient(uri)
    assert rep.parent_run == parent
    files = {a.path for a in client.list_artifacts(parent, "report")}
    assert {"report/report.md", "report/report.html", "report/top1_curves.png", "report/report.json"} <= files


def test_report_section_list_is_open_for_more_sections(recorded, tmp_path, monkeypatch):
    from clasflow import report

    monkeypatch.setattr(report, "SECTIONS", report.SECTIONS + [lambda rep, img: report.Section("Lessons", "- L1 PASS", "<p>L1</p>")])
    report.compare(tmp_path / "o", experiment="recorded", pipeline_run="p1", profile="demo")
    md = (tmp_path / "o" / "report.md").read_text()
    assert md.index("## Warnings") < md.index("## Lessons") and "- L1 PASS" in md
    assert "not comparable" in md and "n/a (demo)" in md


def test_report_without_parent_or_step_results_says_so(tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    from clasflow.report import compare

    uri = f"sqlite:///{tmp_path / 'm.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.delenv("MLFLOW_PARENT_RUN_ID", raising=False)
    client = MlflowClient(uri)
    exp = client.create_experiment("bare")
    run = client.create_run(exp, tags={"mlflow.runName": "ResNet50_vd", "clasflow.stage": "train", "clasflow.pipeline_run": "p9"})
    client.log_metric(run.info.run_id, "valid_top1", 0.3, step=0)
    rep = compare(tmp_path / "out", experiment="bare", pipeline_run="p9", attach_to_parent=True)
    assert rep.parity is None and rep.parent_run is None
    md = (tmp_path / "out" / "report.md").read_text()
    assert "Export parity" not in md
    assert "no parity result in MLflow" in md and "no benchmark result in MLflow" in md
    assert "not attached to a parent MLflow run" in md


def test_cli_compare_exits_nonzero_on_a_failed_full_run(recorded, tmp_path):
    from clasflow.cli import main

    args = ["compare", "--experiment", "recorded", "--pipeline-run", "p1", "--out", str(tmp_path / "r")]
    assert main(args) == 1  # ResNet50_vd_finetune fails against its published figure
    assert main(args + ["--profile", "demo"]) == 0


def test_cli_compare_takes_the_profile_from_the_runs_tags(recorded, tmp_path):
    from mlflow.tracking import MlflowClient

    from clasflow.cli import main

    uri, _ = recorded
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("recorded").experiment_id
    for run in client.search_runs([exp], "tags.`clasflow.pipeline_run` = 'p1'"):
        client.set_tag(run.info.run_id, "clasflow.profile", "demo")
    args = ["compare", "--experiment", "recorded", "--pipeline-run", "p1", "--out", str(tmp_path / "r")]
    assert main(args) == 0  # demo runs: not judged against the published figures, with no --profile given
    assert "(demo profile)" in (tmp_path / "r" / "report.md").read_text()
    assert main(args + ["--profile", "full"]) == 1  # asked for explicitly, it still judges them as full
    other = client.search_runs([exp], "tags.`clasflow.pipeline_run` = 'p0'")[0]
    client.set_tag(other.info.run_id, "clasflow.profile", "full")
    assert main(["compare", "--experiment", "recorded", "--out", str(tmp_path / "all")]) == 2  # mixed: a clear error

"""Export parity: `clasflow eval --model_dir` and the pipeline's gate against the dygraph eval.

The validation list is relabeled with the dygraph model's own predictions, so the dygraph top-1
is near 1 and a wrong preprocessing in an export shows as a large drop (with random weights and
the true labels every variant would sit near chance, and a gate could not tell them apart).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from clasflow.steps import Profile
from tests.test_export import cli_error, cli_json, make_checkpoint

NAME = "MobileNetV3_large_x1_0_finetune"
PROFILE = Profile("demo", image_size=32, batch_size=8, num_workers=0)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(dataset dir, trained-model dir, export dir) with val_list.txt labeled by the dygraph model."""
    import paddle

    from clasflow.models import build_model
    from clasflow.parity import load_labeled
    from clasflow.steps import export_step, prepare_dataset

    root = tmp_path_factory.mktemp("parity")
    data, model, export = root / "data", root / "model", root / "export"
    prepare_dataset(data, "fixture:digits?classes=10&per_class=16&size=36")
    ckpt = make_checkpoint("MobileNetV3_large_x1_0", model / "best_model", class_num=10, kaiming=True, seed=1)
    export_step(NAME, str(data), str(model), str(export), PROFILE)
    meta = yaml.safe_load((export / "inference.yml").read_text())
    images, _ = load_labeled(data / "val_list.txt", data, meta)
    net = build_model("MobileNetV3_large_x1_0", class_num=10)
    net.set_state_dict(paddle.load(f"{ckpt}.pdparams"))
    net.eval()
    with paddle.no_grad():
        pred = net(paddle.to_tensor(images)).numpy().argmax(axis=1)
    assert len(set(pred.tolist())) >= 4, "the relabeled list needs several classes to be a fair test"
    lines = (data / "val_list.txt").read_text().splitlines()
    (data / "val_list.txt").write_text("".join(f"{line.rsplit(maxsplit=1)[0]} {p}\n" for line, p in zip(lines, pred)))
    return data, model, export


def _swapped_copy(export: Path, dest: Path) -> Path:
    shutil.copytree(export, dest)
    meta = yaml.safe_load((dest / "inference.yml").read_text())
    pre = meta["PreProcess"]
    pre["mean"], pre["std"] = pre["std"], pre["mean"]
    (dest / "inference.yml").write_text(yaml.safe_dump(meta, sort_keys=False))
    return dest


def test_eval_model_dir_scores_each_backend_and_reports_gpu_ones_skipped(exported, capsys):
    data, _, export = exported
    entries = cli_json(capsys, ["eval", "--model_dir", str(export), "--image_list", str(data / "val_list.txt"),
                                "--data_dir", str(data), "--backend", "paddle,onnxruntime,paddle-trt,onnxruntime-trt,tensorrt",
                                "--precision", "fp32,fp16", "--topk", "3", "--json"])
    by = {(e["backend"], e["precision"]): e for e in entries}
    assert len(by) == 10
    n = len((data / "val_list.txt").read_text().splitlines())
    for backend in ("paddle", "onnxruntime"):
        e = by[(backend, "fp32")]
        assert e["status"] == "ok" and e["images"] == n and e["k"] == 3
        assert e["top1"] == pytest.approx(e["correct"] / n) and e["top1"] > 0.9  # labels are the model's own
        assert e["topk"] >= e["top1"]
    for backend in ("paddle-trt", "onnxruntime-trt", "tensorrt"):
        for precision in ("fp32", "fp16"):
            e = by[(backend, precision)]
            assert e["status"] == "skipped" and e["device"] == "gpu" and e["reason"], e
    assert by[("paddle", "fp16")]["status"] == "skipped" and "GPU" in by[("paddle", "fp16")]["reason"]


def test_eval_model_dir_bad_input_names_the_option(exported, tmp_path, capsys):
    data, _, export = exported
    assert "--image_list" in cli_error(capsys, ["eval", "--model_dir", str(export)])
    assert "--data_dir" in cli_error(capsys, ["eval", "--model_dir", str(export), "--image_list",
                                              str(data / "val_list.txt"), "--data_dir", str(tmp_path / "nope")])
    bad = tmp_path / "bad_list.txt"
    bad.write_text("a.jpg 99\n")
    assert "bad_list.txt:1" in cli_error(capsys, ["eval", "--model_dir", str(export), "--image_list", str(bad)])
    assert "--model_dir" in cli_error(capsys, ["eval", "-c", "x.yaml", "--backend", "paddle"])


def test_parity_gate_passes_within_two_images_and_fails_on_swapped_mean_std(exported, tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    from clasflow.errors import ClasflowError
    from clasflow.steps import check_parity, parity_step

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.delenv("CLASFLOW_ARTIFACT_ROOT", raising=False)
    data, model, export = exported
    profile = Profile("demo", image_size=32, experiment="parity", pipeline_run="p1")
    report, metrics = parity_step(NAME, str(data), str(model), str(export), str(tmp_path / "good.json"), profile,
                                  backends="paddle,onnxruntime,tensorrt", precisions="fp32,int8", journal_dir=str(tmp_path / "j1"))
    assert metrics["mlflow_pending"] == 0 and metrics["passed"] == 1.0 and metrics["ran"] == 2.0
    check_parity(report)  # passes: tensorrt and int8 are skipped here, reported, not failed
    g = report["gate"]
    assert g["passed"] and g["ran"] == 2 and g["dygraph_top1"] > 0.9
    n = report["list"]["images"]
    dygraph_correct = round(g["dygraph_top1"] * n)
    ok = {r["backend"]: r for r in report["results"] if r["status"] == "ok"}
    assert set(ok) == {"paddle", "onnxruntime"}
    for r in ok.values():
        assert abs(r["correct"] - dygraph_correct) <= 2 and r["verdict"] == "pass"
    assert any("tensorrt/gpu/fp32" in s for s in g["skipped"]) and any("paddle/cpu/int8" in s for s in g["skipped"])
    assert json.loads((tmp_path / "good.json").read_text())["gate"]["passed"] is True

    bad, _ = parity_step(NAME, str(data), str(model), str(_swapped_copy(export, tmp_path / "swapped")),
                         str(tmp_path / "bad.json"), profile, backends="paddle,onnxruntime", precisions="fp32",
                         journal_dir=str(tmp_path / "j2"))
    assert not bad["gate"]["passed"]
    for r in bad["results"]:
        assert r["verdict"] == "fail" and r["delta_points"] < -10, r  # far beyond parity_fp32's 0.3 points
    with pytest.raises(ClasflowError, match=r"paddle/cpu/fp32: top-1 .* allowed 0.30"):
        check_parity(bad)

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("parity").experiment_id], order_by=["attributes.start_time ASC"])
    runs = [r for r in runs if r.data.tags["clasflow.stage"] != "pipeline"]  # the pipeline run's parent run
    assert [r.data.tags["clasflow.stage"] for r in runs] == ["parity", "parity"]
    first, second = runs
    assert first.data.metrics["parity.passed"] == 1.0 and second.data.metrics["parity.passed"] == 0.0
    assert second.data.metrics["parity.delta_points.paddle.fp32"] < -10
    assert first.data.tags["clasflow.pipeline_run"] == "p1"
    assert [a.path for a in client.list_artifacts(first.info.run_id)] == ["parity.json"]


def test_gate_tolerances_per_precision():
    from clasflow.parity import gate

    def entry(precision, top1):
        return {"backend": "b", "device": "gpu", "precision": precision, "status": "ok", "top1": top1}

    report = {"results": [entry("fp32", 0.9030), entry("fp16", 0.8945), entry("int8", 0.8890),
                          {"backend": "t", "device": "gpu", "precision": "int8", "status": "failed", "reason": "boom"}]}
    g = gate(report, 0.9)
    assert [r["verdict"] for r in report["results"]] == ["pass", "fail", "fail", "fail"]
    assert report["results"][0]["delta_points"] == pytest.approx(0.3)
    assert len(g["failures"]) == 3 and "t/gpu/int8 could not be scored: boom" in g["failures"]
    g = gate({"results": [entry("fp16", 0.8945), entry("int8", 0.8905)]}, 0.9, {"fp16": 0.6, "int8": 1.0})
    assert g["passed"]

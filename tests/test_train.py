"""Train, eval and distill end to end on fixture data (tiny images, CPU)."""

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import paddle
import pytest

from clasflow.config import load_config
from clasflow.engine.trainer import evaluate, train
from clasflow.errors import ClasflowError, ConfigError
from clasflow.models import build_model
from tests.conftest import CONFIGS, tiny_overrides

SMALL = ["ARCHITECTURE.name=MobileNetV3_small_x0_35", "LEARNING_RATE.params.lr=0.02"]


def _cfg(root, *extra, epochs=2, config="ResNet50_vd.yaml", **kw):
    return load_config(CONFIGS / config, tiny_overrides(root, classes=10, epochs=epochs, **kw) + SMALL + list(extra))


def _weights(path):
    return {k: v.numpy() for k, v in paddle.load(str(path)).items()}


def test_log_lines_checkpoints_and_best_model(digits_data, tmp_path, caplog):
    caplog.set_level("INFO", logger="clasflow")
    cfg = _cfg(digits_data, f"model_save_dir={tmp_path}", "save_interval=1")
    result = train(cfg, track=False)
    lines = [r.getMessage() for r in caplog.records if " train step:" in r.getMessage()]
    pattern = r"^epoch:\d+ train step:\d+ loss:\d+\.\d{4} top1:\d\.\d{4} top5:\d\.\d{4} lr:\d\.\d{6} reader_cost:\d+\.\d{4} elapse:\d+\.\d{3}$"
    assert lines and all(re.match(pattern, line) for line in lines), lines[:3]
    arch = tmp_path / "MobileNetV3_small_x0_35"
    assert sorted(p.name for p in arch.iterdir() if p.is_dir()) == ["0", "1", "best_model"]
    meta = json.loads((arch / "1" / "ppcls.json").read_text())
    assert meta["epoch"] == 1 and meta["complete"] and meta["config_hash"] == cfg.hash()
    assert len(result.history) == 2 and result.best_top1 == max(h["valid_top1"] for h in result.history)
    # eval of best_model reproduces the best valid top1
    ev = load_config(CONFIGS / "ResNet50_vd.yaml", tiny_overrides(digits_data, classes=10) + SMALL + [f"pretrained_model={result.best_model}"])
    assert evaluate(ev, track=False)["top1"] == pytest.approx(result.best_top1)


def test_amp_is_refused_on_cpu(digits_data, tmp_path):
    with pytest.raises(ConfigError, match="use_amp: AMP needs a GPU"):
        train(_cfg(digits_data, "use_amp=True", f"model_save_dir={tmp_path}"), track=False)


@pytest.mark.parametrize("loader", ["opencv", "dali"])
def test_epoch_resume_matches_uninterrupted(digits_data, tmp_path, loader):
    full = train(_cfg(digits_data, f"model_save_dir={tmp_path / 'a'}", epochs=3, loader=loader), track=False)
    cfg = _cfg(digits_data, f"model_save_dir={tmp_path / 'a'}", epochs=3, loader=loader)
    arch = tmp_path / "a" / "MobileNetV3_small_x0_35"
    reference = _weights(arch / "2" / "ppcls.pdparams")
    resumed = train(cfg.model_copy(update={"checkpoints": str(arch / "0" / "ppcls")}), track=False)
    assert resumed.final == pytest.approx({k: v for k, v in full.final.items() if k != "images_per_sec"} | {"images_per_sec": resumed.final["images_per_sec"]})
    got = _weights(arch / "2" / "ppcls.pdparams")
    for k in reference:
        np.testing.assert_array_equal(got[k], reference[k], err_msg=k)


def test_checkpoint_resumes_in_another_folder_with_moved_data(digits_data, tmp_path):
    """A checkpoint carries a location-free config hash: another model_save_dir, a copy of the
    dataset elsewhere and another pretrained path resume it, and the result is the same."""
    import shutil

    full = train(_cfg(digits_data, f"model_save_dir={tmp_path / 'a'}"), track=False)
    moved = tmp_path / "moved"
    shutil.copytree(digits_data / "data", moved / "data")
    cfg = _cfg(moved, f"model_save_dir={tmp_path / 'b'}", f"checkpoints={Path(full.arch_dir) / '0' / 'ppcls'}")
    resumed = train(cfg, track=False)
    assert resumed.history[0]["epoch"] == 1 and resumed.final["valid_top1"] == full.final["valid_top1"]
    got, ref = _weights(Path(resumed.arch_dir) / "1" / "ppcls.pdparams"), _weights(Path(full.arch_dir) / "1" / "ppcls.pdparams")
    for k in ref:
        np.testing.assert_array_equal(got[k], ref[k], err_msg=k)


def _run_cli(args, env=None):
    return subprocess.Popen([sys.executable, "-m", "clasflow", *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env={**os.environ, "OMP_NUM_THREADS": "2", **(env or {})})


def test_sigterm_writes_checkpoint_and_resume_matches(digits_data, tmp_path):
    over = tiny_overrides(digits_data, classes=10, epochs=2) + SMALL
    # the reference runs in a fresh process too, so both see the same process-wide math settings
    ref = _run_cli(["train", "-c", str(CONFIGS / "ResNet50_vd.yaml"), "--no-track",
                    *sum((["-o", o] for o in over + [f"model_save_dir={tmp_path / 'ref'}"]), [])])
    ref.stdout.read()
    assert ref.wait(timeout=300) == 0
    reference = json.loads((tmp_path / "ref" / "MobileNetV3_small_x0_35" / "1" / "ppcls.json").read_text())["metrics"]
    over += [f"model_save_dir={tmp_path / 'run'}"]
    proc = _run_cli(["train", "-c", str(CONFIGS / "ResNet50_vd.yaml"), "--no-track", *sum((["-o", o] for o in over), [])])
    output = []
    for line in proc.stdout:
        output.append(line)
        if "epoch:1 train step:3" in line:
            proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=300) == 143, "".join(output[-20:])
    arch = tmp_path / "run" / "MobileNetV3_small_x0_35"
    meta = json.loads((arch / "interrupted" / "ppcls.json").read_text())
    assert meta["epoch"] == 1 and not meta["complete"] and meta["step_in_epoch"] >= 4
    proc = _run_cli(["train", "-c", str(CONFIGS / "ResNet50_vd.yaml"), "--no-track",
                     *sum((["-o", o] for o in over + ["checkpoints=auto"]), [])])
    tail = proc.stdout.read()
    assert proc.wait(timeout=300) == 0, tail[-2000:]
    assert "resumed from" in tail and "continuing at epoch 1" in tail
    resumed = json.loads((arch / "1" / "ppcls.json").read_text())["metrics"]
    assert resumed["valid_top1"] == reference["valid_top1"]
    assert resumed["valid_loss"] == pytest.approx(reference["valid_loss"], rel=1e-6)
    got, ref = _weights(arch / "1" / "ppcls.pdparams"), _weights(tmp_path / "ref" / "MobileNetV3_small_x0_35" / "1" / "ppcls.pdparams")
    for k in ref:
        np.testing.assert_allclose(got[k], ref[k], rtol=1e-6, atol=1e-7, err_msg=k)
    assert not (arch / "interrupted").exists()


def test_sigterm_on_an_epochs_last_step_finishes_the_epoch(digits_data, tmp_path, monkeypatch):
    """A SIGTERM during an epoch's last step lets the epoch end (validation, best model) and
    writes a complete checkpoint; the resumed run starts at the next epoch."""
    from clasflow.engine import checkpoint as ckpt
    from clasflow.engine import trainer
    from clasflow.engine.trainer import TrainingInterrupted

    real = trainer._equal_steps

    def term_on_last_step_of_epoch_0(loader, steps, epoch):
        for i, batch in enumerate(real(loader, steps, epoch)):
            if epoch == 0 and i == steps - 1:
                os.kill(os.getpid(), signal.SIGTERM)  # the trainer's handler only sets a flag
            yield batch

    monkeypatch.setattr(trainer, "_equal_steps", term_on_last_step_of_epoch_0)
    cfg = _cfg(digits_data, f"model_save_dir={tmp_path}", "save_interval=2")  # epoch 0 writes no epoch checkpoint
    with pytest.raises(TrainingInterrupted, match="after epoch 0"):
        train(cfg, track=False)
    meta = ckpt.read_meta(tmp_path / "MobileNetV3_small_x0_35" / "interrupted")
    assert meta.complete and meta.epoch == 0 and "valid_top1" in meta.metrics and meta.next_position() == (1, 0)
    monkeypatch.undo()
    resumed = train(cfg.model_copy(update={"checkpoints": "auto"}), track=False)
    assert [h["epoch"] for h in resumed.history] == [1] and (tmp_path / "MobileNetV3_small_x0_35" / "1").is_dir()


def _teacher(tmp_path, classes=10):
    teacher = build_model("ResNet50_vd", class_num=classes)
    path = tmp_path / "teacher" / "ppcls.pdparams"
    path.parent.mkdir(parents=True)
    paddle.save(teacher.state_dict(), str(path))
    return path


def _distill_cfg(root, tmp_path, teacher, student=""):
    unlabeled = tmp_path / "unlabeled_list.txt"
    lines = (root / "data" / "train_list.txt").read_text().splitlines()
    unlabeled.write_text("".join(f"{l.split()[0]}\n" for l in lines[:24]))  # no label column at all
    over = tiny_overrides(root, classes=10, epochs=1) + [
        f"model_save_dir={tmp_path / 'out'}", f"TRAIN.file_list={unlabeled}", "total_images=24",
        f"pretrained_model=[{teacher}, '{student}']",
    ]
    return load_config(CONFIGS / "R50_vd_distill_MV3_large_x1_0.yaml", over)


def test_distillation_trains_student_against_frozen_teacher(digits_data, tmp_path):
    teacher_path = _teacher(tmp_path)
    student_path = tmp_path / "student" / "ppcls.pdparams"
    student_path.parent.mkdir()
    paddle.save(build_model("MobileNetV3_large_x1_0", class_num=10).state_dict(), str(student_path))
    cfg = _distill_cfg(digits_data, tmp_path, str(teacher_path.with_suffix("")), str(student_path.with_suffix("")))
    result = train(cfg, track=False)
    saved = _weights(Path(result.arch_dir) / "0" / "ppcls.pdparams")
    original = _weights(teacher_path)
    for k, v in original.items():
        np.testing.assert_array_equal(saved[f"teacher.{k}"], v, err_msg=f"teacher {k} changed")
    start = _weights(student_path)
    trainable = [k for k in start if not k.endswith(("_mean", "_variance"))]
    changed = [k for k in trainable if not np.array_equal(saved[f"student.{k}"], start[k])]
    assert len(changed) >= 0.9 * len(trainable), f"only {len(changed)} of {len(trainable)} student tensors were trained"
    assert "train_top1" not in result.final and result.final["train_loss"] > 0
    assert 0.0 <= result.final["valid_top1"] <= 1.0


def test_distillation_refuses_a_teacher_that_does_not_load(digits_data, tmp_path):
    with pytest.raises(ClasflowError, match=r"pretrained_model\[0\] \(the teacher\) did not load.*missing/ppcls"):
        train(_distill_cfg(digits_data, tmp_path, str(tmp_path / "missing" / "ppcls")), track=False)
    wrong = build_model("MobileNetV3_small_x0_35", class_num=10)
    (tmp_path / "wrong").mkdir()
    paddle.save(wrong.state_dict(), str(tmp_path / "wrong" / "ppcls.pdparams"))
    with pytest.raises(ClasflowError, match=r"the teacher\) did not load.*(missing|unexpected)"):
        train(_distill_cfg(digits_data, tmp_path, str(tmp_path / "wrong" / "ppcls")), track=False)
    with pytest.raises(ConfigError, match="pretrained_model\\[0\\]"):
        train(_distill_cfg(digits_data, tmp_path, "''"), track=False)


def test_mlflow_run_against_a_real_server(digits_data, tmp_path, mlflow_server, monkeypatch):
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.url)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "test-train")
    cfg = _cfg(digits_data, f"model_save_dir={tmp_path}")
    result = train(cfg, run_name="digits-small")
    client = MlflowClient(mlflow_server.url)
    run = client.get_run(result.run_id)
    assert run.info.run_name == "digits-small" and run.info.status == "FINISHED"
    assert {k: v for k, v in run.data.tags.items() if k.startswith(("clasflow.device", "clasflow.loader"))} == {
        "clasflow.device": "cpu", "clasflow.loader.TRAIN": "opencv", "clasflow.loader.VALID": "opencv"}  # what really ran
    assert run.data.params["LEARNING_RATE.params.lr"] == "0.02" and run.data.params["epochs"] == "2"
    for key in ("train_loss", "train_top1", "valid_top1", "valid_top5", "lr", "images_per_sec"):
        history = client.get_metric_history(result.run_id, key)
        assert [m.step for m in sorted(history, key=lambda m: m.step)] == [0, 1], key
    top1 = [m.value for m in sorted(client.get_metric_history(result.run_id, "valid_top1"), key=lambda m: m.step)]
    assert top1 == pytest.approx([h["valid_top1"] for h in result.history])
    assert run.data.metrics["best_valid_top1"] == pytest.approx(result.best_top1)
    artifacts = {a.path for a in client.list_artifacts(result.run_id)}
    assert {"config.resolved.yaml", "best_model"} <= artifacts


def test_nested_under_a_parent_run(digits_data, tmp_path, mlflow_server, monkeypatch):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(mlflow_server.url)
    exp = client.get_experiment_by_name("parents") or client.get_experiment(client.create_experiment("parents"))
    parent = client.create_run(exp.experiment_id).info.run_id
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.url)
    monkeypatch.setenv("MLFLOW_PARENT_RUN_ID", parent)
    result = train(_cfg(digits_data, f"model_save_dir={tmp_path}", epochs=1), run_name="child")
    assert client.get_run(result.run_id).data.tags["mlflow.parentRunId"] == parent
    # MLFLOW_RUN_ID (what Kubeflow's MLflow plugin sets): into that very run, whose end is not ours
    monkeypatch.delenv("MLFLOW_PARENT_RUN_ID")
    monkeypatch.setenv("MLFLOW_RUN_ID", parent)
    attached = train(_cfg(digits_data, f"model_save_dir={tmp_path / 'b'}", epochs=1), run_name="task")
    run = client.get_run(parent)
    assert attached.run_id == parent and run.info.status == "RUNNING" and "valid_top1" in run.data.metrics


def test_tracking_server_down_keeps_every_point(digits_data, tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    from clasflow.tracking import sync_journal
    from tests.services import MlflowServer

    server = MlflowServer(tmp_path / "srv")
    (tmp_path / "srv").mkdir()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server.url)  # nothing listens there yet
    monkeypatch.setattr("clasflow.tracking.time.sleep", lambda s: None)
    result = train(_cfg(digits_data, f"model_save_dir={tmp_path / 'out'}"), run_name="offline")
    journal = Path(result.arch_dir) / "mlflow-journal.jsonl"
    points = [json.loads(l) for l in journal.read_text().splitlines()]
    assert sum(1 for p in points if p["op"] == "metrics") == 3  # 2 epochs + final
    with server:
        sent = sync_journal(journal)
        client = MlflowClient(server.url)
        run = client.search_runs([client.get_experiment_by_name("flowers102-quickstart").experiment_id])[0]
        history = client.get_metric_history(run.info.run_id, "valid_top1")
        assert sent == len(points) and sorted(m.step for m in history) == [0, 1]
        assert [m.value for m in sorted(history, key=lambda m: m.step)] == pytest.approx([h["valid_top1"] for h in result.history])


def test_training_learns_the_digits(digits_data, tmp_path):
    """From scratch on the digits fixture (10 classes, 160 train / 120 valid images at 32 px).

    Threshold 0.30 = 3x chance (0.10): measured 0.375-0.52 over seeds 0-2 after 10 epochs; when
    the data pipeline was broken (strokes of random polarity that even logistic regression could
    not separate, or wrong labels) the same run stayed at 0.10-0.15. It runs in a fresh process
    through the CLI: an in-process Paddle Inference predictor (the export tests) changes the
    process's math threads, and from-scratch training amplifies such differences.
    """
    over = tiny_overrides(digits_data, classes=10, epochs=10, batch=16) + [
        "ARCHITECTURE.name=MobileNetV3_small_x0_5", "LEARNING_RATE.params.lr=0.05",
        "TRAIN.transforms.1.RandCropImage.scale=[0.6, 1.0]", f"model_save_dir={tmp_path}", "print_interval=100",
    ]
    proc = _run_cli(["train", "-c", str(CONFIGS / "ResNet50_vd.yaml"), "--no-track", *sum((["-o", o] for o in over), [])])
    output = proc.stdout.read()
    assert proc.wait(timeout=600) == 0, output[-3000:]
    arch = tmp_path / "MobileNetV3_small_x0_5"
    best = json.loads((arch / "best_model" / "ppcls.json").read_text())["best_top1"]
    first, last = (json.loads((arch / str(e) / "ppcls.json").read_text())["metrics"] for e in (0, 9))
    assert best >= 0.30, re.findall(r"valid loss:\S+ top1:\S+", output)
    assert last["train_loss"] < first["train_loss"]


def test_data_parallel_on_two_cpu_ranks(digits_data, tmp_path):
    """paddle.distributed.launch with two CPU processes: each rank trains on its shard, the
    valid metrics are all-reduced (identical on both ranks), rank 0 writes the checkpoints."""
    clasflow_bin = Path(sys.executable).parent / "clasflow"
    over = tiny_overrides(digits_data, classes=10, epochs=1) + SMALL + [f"model_save_dir={tmp_path / 'out'}"]
    cmd = [sys.executable, "-m", "paddle.distributed.launch", "--nproc_per_node", "2", "--log_dir", str(tmp_path / "log"),
           str(clasflow_bin), "train", "-c", str(CONFIGS / "ResNet50_vd.yaml"), "--no-track", *sum((["-o", o] for o in over), [])]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    logs = [(tmp_path / "log" / f"workerlog.{r}").read_text() for r in (0, 1)]
    assert "rank 0 of 2" in logs[0] and "rank 1 of 2" in logs[1]
    valid = [re.findall(r"epoch:0 valid (loss:\S+ top1:\S+)", text) for text in logs]
    assert valid[0] and valid[0] == valid[1]
    steps = [len(re.findall(r"epoch:0 train step:", text)) for text in logs]
    assert steps == [10, 0]  # 160 images / 2 ranks / batch 8 = 10 steps, logged by rank 0 only
    assert (tmp_path / "out" / "MobileNetV3_small_x0_35" / "0" / "ppcls.pdparams").is_file()


def test_mixup_and_label_smoothing_train(tmp_path):
    from clasflow.data.fixture import build_fixture
    from clasflow.data.flowers102 import prepare_flowers102

    root = tmp_path / "synthetic"  # 4 easy classes: learning shows within 4 short epochs
    build_fixture(root / "data", source="synthetic", classes=4, per_class=40, size=32, seed=0)
    prepare_flowers102(root / "data", download=False)
    over = tiny_overrides(root, classes=4, epochs=4) + SMALL + [f"model_save_dir={tmp_path / 'out'}", "use_mix=True",
                                                                "ls_epsilon=0.1", "print_interval=100"]
    result = train(load_config(CONFIGS / "ResNet50_vd.yaml", over), track=False)
    assert "train_top1" not in result.final  # PaddleClas reports no train accuracy under mixup
    losses = [h["train_loss"] for h in result.history]
    # A model that predicts nothing has loss ln(4) under mixup and label smoothing alike.
    assert losses[-1] < losses[0] and losses[-1] < np.log(4) - 0.1, losses
    assert result.final["valid_top1"] >= 0.5, result.history  # chance is 0.25


def test_bench_loader_cli_reports_both_loaders(digits_data, capsys):
    from clasflow.cli import main

    over = tiny_overrides(digits_data, classes=10)
    args = ["bench-loader", "-c", str(CONFIGS / "ResNet50_vd.yaml"), "--batches", "3", "--json", *sum((["-o", o] for o in over), [])]
    assert main(args) == 0
    figures = json.loads(capsys.readouterr().out)
    dali, opencv = figures["dali"], figures["opencv"]
    assert dali["images"] == opencv["images"] == 3 * 8 and dali["batches"] == opencv["batches"] == 3  # the same work
    for f in (dali, opencv):  # the figures agree with each other: rate = images / time, time per batch = time / batches
        assert f["images_per_sec"] == pytest.approx(f["images"] / f["wall_s"]) and f["images_per_sec"] > 0
        assert f["batch_s"] == pytest.approx(f["wall_s"] / f["batches"])
        assert f["first_batch_s"] > 0 and f["cpu_ms_per_image"] >= 0  # CPU clock ticks are 10 ms: 0 is possible


def test_require_gpu_refuses_every_stage_before_any_work(digits_data, tmp_path, monkeypatch, capsys):
    """CLASFLOW_REQUIRE_GPU=1 (compiled into the cluster's GPU tasks) or --require-gpu: no silent CPU run."""
    from clasflow.cli import main

    monkeypatch.setenv("CLASFLOW_REQUIRE_GPU", "0")  # restored after the test (the CLI flag sets it to 1)
    out = tmp_path / "out"
    cfg = _cfg(digits_data, f"model_save_dir={out}")
    assert main(["train", "-c", str(CONFIGS / "ResNet50_vd.yaml"), "--require-gpu", "--no-track",
                 *sum((["-o", o] for o in tiny_overrides(digits_data, classes=10) + [f"model_save_dir={out}"]), [])]) == 2
    message = capsys.readouterr().err
    assert "train: a GPU is required (CLASFLOW_REQUIRE_GPU=1 or --require-gpu) but Paddle sees none" in message
    assert "compiled with CUDA: False" in message and "paddle.device.cuda.device_count() = 0" in message
    assert main(["benchmark", "--model_dir", str(tmp_path / "missing"), "--require-gpu"]) == 2
    assert "benchmark: a GPU is required" in capsys.readouterr().err
    calls = {"train": lambda: train(cfg, track=False),
             "distill": lambda: train(_distill_cfg(digits_data, tmp_path, "t"), track=False),
             "eval": lambda: evaluate(cfg.model_copy(update={"pretrained_model": "w/ppcls"}), track=False)}
    for stage, call in calls.items():
        with pytest.raises(ClasflowError, match=rf"^{stage}: a GPU is required .*device_count\(\) = 0"):
            call()
    assert not out.exists() and not (tmp_path / "out").exists()  # no checkpoint, no folder: nothing started
    monkeypatch.setenv("CLASFLOW_REQUIRE_GPU", "0")
    assert train(cfg.model_copy(update={"epochs": 1}), track=False).best_epoch == 0  # not required: the CPU is fine

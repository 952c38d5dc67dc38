"""Preemption and scale-out of the pipeline's train step: checkpoints in the object store (moto's
S3 server), resume on a fresh work folder after SIGKILL and SIGTERM, one process per GPU under
paddle.distributed.launch (2 CPU ranks here), and data parallel with bad images (no hang)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from clasflow import steps, storage
from tests.conftest import CONFIGS, tiny_overrides

CONFIG = "MobileNetV3_large_x1_0_finetune"
STEP = textwrap.dedent("""
    import json, logging, sys
    logging.basicConfig(level=logging.INFO, format="%(name)s %(levelname)s %(message)s", stream=sys.stdout)
    from clasflow.steps import Profile, train_step
    dataset, out, run, gpus, epochs = sys.argv[1:6]
    profile = Profile("demo", image_size=32, epochs=int(epochs), batch_size=8, num_workers=0, pipeline_run=run)
    print("METRICS", json.dumps(train_step(sys.argv[6], dataset, out, profile, gpus=int(gpus))), flush=True)
""")


@pytest.fixture(scope="module")
def step_dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("step-data")
    steps.prepare_dataset(root, "fixture:synthetic?classes=4&per_class=40&size=40")  # 64 train images: 8 steps/epoch
    return root


@pytest.fixture
def step_env(s3_env, tmp_path, monkeypatch):
    monkeypatch.setenv(steps.ARTIFACT_ROOT_ENV, s3_env.uri("artifacts"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    monkeypatch.setenv("PYTHONUNBUFFERED", "1")
    script = tmp_path / "step.py"
    script.write_text(STEP)
    return s3_env, script


def _step(script, dataset, out, run, *, gpus=1, epochs=3, config=CONFIG):
    return subprocess.Popen([sys.executable, str(script), str(dataset), str(out), run, str(gpus), str(epochs), config],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _finish(proc, timeout=400) -> tuple[int, str]:
    out, _ = proc.communicate(timeout=timeout)
    return proc.returncode, out


def _signal_on(proc, pattern: str, sig: int) -> str:
    """Send `sig` once a line matches `pattern`; return the whole output."""
    lines, sent = [], False
    for line in proc.stdout:
        lines.append(line)
        if not sent and re.search(pattern, line):
            proc.send_signal(sig)
            sent = True
    proc.wait(timeout=120)
    assert sent, "".join(lines[-40:])
    return "".join(lines)


def _weights(path: Path) -> dict[str, np.ndarray]:
    import paddle

    return {k: np.asarray(v) for k, v in paddle.load(str(path), return_numpy=True).items()}


def _assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        np.testing.assert_allclose(wa[k], wb[k], rtol=1e-6, atol=1e-7, err_msg=k)


def _stored(s3, run) -> list[str]:
    """Stored checkpoint files of `run`'s one training, as FOLDER/FILE."""
    uris = storage.list(s3.uri(f"artifacts/runs/{run}/checkpoints/"))
    assert len({u.split(f"/runs/{run}/checkpoints/", 1)[1].split("/")[0] for u in uris}) <= 1  # <config>-<hash>
    return [u.split(f"/runs/{run}/checkpoints/", 1)[1].split("/", 1)[1] for u in uris]


# ------------------------------------------------------------------ the store itself


def test_checkpoint_store_keeps_complete_checkpoints_and_prunes(s3_env, tmp_path, caplog):
    import paddle

    from clasflow.engine import checkpoint as ckpt
    from clasflow.engine.stored import CheckpointStore
    from clasflow.models import build_model

    model = build_model("MobileNetV3_small_x0_35", class_num=3)
    opt = paddle.optimizer.Momentum(learning_rate=0.1, parameters=model.parameters())
    store = CheckpointStore(s3_env.uri("ck/run/cfg"))
    local = tmp_path / "w"
    for epoch in (0, 1):
        store.put(ckpt.save_checkpoint(local / str(epoch), model, opt, ckpt.CheckpointMeta(epoch, 0, epoch * 4 + 4, "h")))
    store.put(ckpt.save_checkpoint(local / "best_model", model, opt, ckpt.CheckpointMeta(0, 0, 4, "h", best_top1=0.5)))
    names = sorted({u.split("/ck/run/cfg/", 1)[1].split("/")[0] for u in storage.list(store.prefix)})
    assert names == ["1", "best_model"]  # storing epoch 1 removed epoch 0
    store.put(ckpt.save_checkpoint(local / "interrupted", model, opt, ckpt.CheckpointMeta(2, 3, 11, "h", complete=False)))
    # a newer upload cut short (files, no manifest) and a corrupt file are never resumed from
    storage.upload(local / "1" / "ppcls.pdparams", store.prefix + "5/ppcls.pdparams")
    restored = store.restore(tmp_path / "fresh")
    assert restored == tmp_path / "fresh" / "interrupted" and ckpt.read_meta(restored).next_position() == (2, 3)
    assert ckpt.read_meta(tmp_path / "fresh" / "best_model").best_top1 == 0.5
    s3_env.client().put_object(s3_env.bucket, "ck/run/cfg/interrupted/ppcls.pdopt", __import__("io").BytesIO(b"x"), 1,
                               metadata={"sha256": "0" * 64})
    caplog.set_level("WARNING", logger="clasflow")
    restored = store.restore(tmp_path / "fresh2")
    assert restored == tmp_path / "fresh2" / "1" and "incomplete or corrupt" in caplog.text
    store.put(ckpt.save_checkpoint(local / "2", model, opt, ckpt.CheckpointMeta(2, 0, 12, "h")))
    names = sorted({u.split("/ck/run/cfg/", 1)[1].split("/")[0] for u in storage.list(store.prefix)})
    assert names == ["2", "best_model"]  # older, interrupted and cut-short folders gone
    assert store.clear() == 10 and storage.list(store.prefix) == []  # 5 files (4 + manifest) x 2 folders
    assert CheckpointStore(s3_env.uri("ck/other")).restore(tmp_path / "none") is None


# ------------------------------------------------------------------ the train step, killed and resumed


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_step_resumes_from_the_store_on_a_fresh_folder(step_env, step_dataset, tmp_path):
    s3, script = step_env
    rc, log = _finish(_step(script, step_dataset, tmp_path / "ref", "ref"))
    assert rc == 0, log[-3000:]
    reference = tmp_path / "ref" / "final" / "ppcls.pdparams"
    assert "stored checkpoint 2 in" in log and _stored(s3, "ref") == []  # stored while running, removed on success
    assert re.search(rf"runs/ref/checkpoints/{CONFIG}-[0-9a-f]{{16}}/2", log)

    # SIGKILL (no handler runs) once epoch 1 is stored; a new pod with an empty folder resumes at epoch 2
    log = _signal_on(_step(script, step_dataset, tmp_path / "a", "p1"), r"stored checkpoint 1 in", signal.SIGKILL)
    assert {p.split("/")[0] for p in _stored(s3, "p1")} == {"1", "best_model"}, log[-2000:]
    rc, log = _finish(_step(script, step_dataset, tmp_path / "b", "p1"))
    assert rc == 0, log[-3000:]
    assert re.search(r"resuming from the stored checkpoint s3://\S+/checkpoints/\S+/1 \(epoch 2, step 0\)", log), log[-3000:]
    _assert_same_weights(tmp_path / "b" / "final" / "ppcls.pdparams", reference)
    assert _stored(s3, "p1") == []

    # SIGTERM (what Kubernetes sends before evicting) early in epoch 1: the interrupted checkpoint is stored
    # before the exit (a SIGTERM on an epoch's last step would finish the epoch and store it instead)
    log = _signal_on(_step(script, step_dataset, tmp_path / "c", "p2"), r"epoch:1 train step:0 ", signal.SIGTERM)
    assert "stopped by SIGTERM" in log, log[-3000:]
    stored = _stored(s3, "p2")
    assert any(p.startswith("interrupted/") and p.endswith("manifest.json") for p in stored), stored
    rc, log = _finish(_step(script, step_dataset, tmp_path / "d", "p2"))
    assert rc == 0, log[-3000:]
    assert re.search(r"resuming from the stored checkpoint \S+/interrupted \(epoch 1, step [1-7]\)", log), log[-3000:]
    _assert_same_weights(tmp_path / "d" / "final" / "ppcls.pdparams", reference)


def test_finished_step_keeps_stored_checkpoints_when_asked(step_env, step_dataset, tmp_path, monkeypatch):
    s3, script = step_env
    monkeypatch.setenv(steps.KEEP_CHECKPOINTS_ENV, "1")
    rc, log = _finish(_step(script, step_dataset, tmp_path / "k", "keep", epochs=1))
    assert rc == 0, log[-3000:]
    assert {p.split("/")[0] for p in _stored(s3, "keep")} == {"0", "best_model"}
    assert "stored checkpoints kept" in log


# ------------------------------------------------------------------ every GPU of the node (2 CPU ranks here)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_train_step_runs_one_process_per_gpu(step_env, step_dataset, tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    s3, script = step_env
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    rc, log = _finish(_step(script, step_dataset, tmp_path / "dp", "dp", gpus=2, epochs=1), timeout=800)
    assert rc == 0, log[-3000:]
    assert "gpus=2 but this machine has no GPU: running 2 data-parallel CPU processes" in log
    logs = [(tmp_path / "dp" / "logs" / f"workerlog.{r}").read_text() for r in (0, 1)]
    assert "rank 0 of 2" in logs[0] and "rank 1 of 2" in logs[1]
    assert "stored checkpoint 0 in" in logs[0] and "stored checkpoint" not in logs[1]  # rank 0 alone stores
    metrics = json.loads(re.search(r"METRICS (.*)", log).group(1))
    assert metrics["best_epoch"] == 0.0 and 0.0 <= metrics["best_valid_top1"] <= 1.0
    assert (tmp_path / "dp" / "final" / "ppcls.pdparams").is_file() and (tmp_path / "dp" / "best_model" / "ppcls.pdparams").is_file()
    client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    runs = [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]
    trains = [r for r in runs if r.data.tags.get("clasflow.stage") != "pipeline"]  # beside the pipeline run's parent
    assert [r.info.run_name for r in trains] == [CONFIG]  # one training run, from rank 0
    assert {r.data.tags.get("mlflow.parentRunId") for r in trains} == {r.info.run_id for r in runs if r not in trains}
    assert _stored(s3, "dp") == []


# ------------------------------------------------------------------ data parallel with bad images


@pytest.mark.timeout(600)
def test_data_parallel_with_bad_images_does_not_hang(digits_data, tmp_path):
    """Two CPU ranks, batch 2, corrupt JPEGs (they pass the header check, only decoding finds
    them): rank 0 loses a whole batch in epoch 0 and rank 1 one image. Without equal step counts
    rank 1 would wait in an all-reduce rank 0 never reaches."""
    import shutil

    from clasflow.data import epoch_indices
    from clasflow.data.lists import check_image_file

    data = tmp_path / "data"
    lines = (digits_data / "data" / "train_list.txt").read_text().splitlines()[:24]
    order0 = epoch_indices(24, 0, shuffle=True, seed=0, rank=0, world=2)
    order1 = epoch_indices(24, 0, shuffle=True, seed=0, rank=1, world=2)
    bad = {int(order0[0]), int(order0[1]), int(order1[5]), int(order1[8])}  # rank 0's first batch, 2 of rank 1's
    for i, line in enumerate(lines):
        rel = line.split()[0]
        (data / rel).parent.mkdir(parents=True, exist_ok=True)
        raw = bytearray((digits_data / "data" / rel).read_bytes())
        if i in bad:  # wreck the Huffman tables; markers and lengths stay valid
            dht = raw.find(b"\xff\xc4")
            seglen = (raw[dht + 2] << 8) | raw[dht + 3]
            raw[dht + 4: dht + 2 + seglen] = b"\xff" * (seglen - 2)
        (data / rel).write_bytes(bytes(raw))
        assert check_image_file(str(data / rel)) is None
    (data / "train_list.txt").write_text("\n".join(lines) + "\n")
    shutil.copy(digits_data / "data" / "val_list.txt", data / "val_list.txt")
    for rel in {l.split()[0] for l in (data / "val_list.txt").read_text().splitlines()}:
        (data / rel).parent.mkdir(parents=True, exist_ok=True)
        if not (data / rel).exists():
            shutil.copy(digits_data / "data" / rel, data / rel)
    over = tiny_overrides(tmp_path, classes=10, epochs=2, batch=2) + [
        "ARCHITECTURE.name=MobileNetV3_small_x0_35", "LEARNING_RATE.params.lr=0.02", f"model_save_dir={tmp_path / 'out'}",
        "TRAIN.skip_bad_images=True", "TRAIN.shuffle_seed=0", "total_images=24"]
    cmd = [sys.executable, "-m", "paddle.distributed.launch", "--nproc_per_node", "2", "--log_dir", str(tmp_path / "log"),
           str(Path(sys.executable).parent / "clasflow"), "train", "-c", str(CONFIGS / "ResNet50_vd.yaml"), "--no-track",
           *sum((["-o", o] for o in over), [])]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        out, _ = proc.communicate(timeout=420)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        logs = "\n".join((tmp_path / "log" / f"workerlog.{r}").read_text()[-1500:] for r in (0, 1))
        pytest.fail(f"data-parallel training with bad images hung:\n{logs}")
    logs = [(tmp_path / "log" / f"workerlog.{r}").read_text() for r in (0, 1)]
    assert proc.returncode == 0, out[-2000:] + logs[0][-2000:] + logs[1][-2000:]
    assert "repeating the last good batch so every rank runs 6 steps" in logs[0]  # 24 / 2 ranks / batch 2
    assert len(re.findall(r"epoch:0 train step:", logs[0])) == 6
    # from epoch 1 on both ranks leave out all four bad images: 20 images -> 10 per rank -> 5 steps
    assert len(re.findall(r"epoch:1 train step:", logs[0])) == 5
    assert "failed to decode on another data-parallel rank" in logs[0] and "failed to decode on another data-parallel rank" in logs[1]
    assert (tmp_path / "out" / "MobileNetV3_small_x0_35" / "1" / "ppcls.pdparams").is_file()

"""The side-by-side bench's pieces that need no training: its configs and its arithmetic.

PaddleClas 2.2.1's step line as its Trainer.train formats it: its time meters joined by "s, "."""

from pathlib import Path

import pytest
import yaml

from clasflow.bench_peer import (WARMUP, clasflow_overrides, fixture_per_class, loader_bench_config, paddleclas_config,
                                 parse_clasflow_log, parse_paddleclas_log, spread, _schedule, _summary)
from clasflow.config import load_config
from clasflow.steps import config_dir

SETTINGS = {"arch": "MobileNetV3_large_x1_0", "classes": 4, "batch": 8, "workers": 2, "size": 224}


def test_both_configs_describe_the_same_work(tmp_path):
    data, file_list = tmp_path / "data", tmp_path / "data" / "list.txt"
    peer = yaml.safe_load(yaml.safe_dump(paddleclas_config(data=data, file_list=file_list, out=tmp_path / "o", **_schedule(),
                                                           **SETTINGS)))
    ours = load_config(config_dir() / "ResNet50_vd.yaml", clasflow_overrides(data=data, file_list=file_list,
                                                                            out=tmp_path / "c", **SETTINGS))
    train = peer["DataLoader"]["Train"]
    assert peer["Arch"] == {"name": "MobileNetV3_large_x1_0", "class_num": 4} and ours.ARCHITECTURE.name == peer["Arch"]["name"]
    assert ours.classes_num == 4 and peer["Global"]["epochs"] == ours.epochs == 1
    assert train["sampler"]["batch_size"] == ours.TRAIN.batch_size == 8
    assert train["loader"]["num_workers"] == ours.TRAIN.num_workers == 2
    assert train["dataset"]["cls_label_path"] == ours.TRAIN.file_list == str(file_list)
    assert Path(train["dataset"]["image_root"]) == Path(ours.TRAIN.data_dir) == data
    # the same operators with the same arguments, in the same order
    peer_ops = [(name, args or {}) for op in train["dataset"]["transform_ops"] for name, args in op.items()]
    ours_ops = [(name, args or {}) for op in ours.to_raw()["TRAIN"]["transforms"] for name, args in op.items()]
    # (PaddleClas 2.2's dataset transposes to CHW itself, after its operators: no ToCHWImage there)
    assert [n for n, _ in peer_ops] + ["ToCHWImage"] == [n for n, _ in ours_ops] == [
        "DecodeImage", "RandCropImage", "RandFlipImage", "NormalizeImage", "ToCHWImage"]
    assert peer_ops[1][1]["size"] == ours_ops[1][1]["size"] == 224
    assert peer_ops[2][1]["flip_code"] == ours_ops[2][1]["flip_code"] == 1
    assert peer_ops[3][1]["mean"] == ours_ops[3][1]["mean"] and peer_ops[3][1]["std"] == ours_ops[3][1]["std"]
    assert peer_ops[3][1]["scale"] == pytest.approx(1 / 255)
    # optimizer and schedule as the quick start's
    assert peer["Optimizer"]["name"] == ours.OPTIMIZER.function and peer["Optimizer"]["momentum"] == 0.9
    assert peer["Optimizer"]["lr"] == {"name": "Cosine", "learning_rate": ours.LEARNING_RATE.params["lr"]}
    assert peer["Optimizer"]["regularizer"] == {"name": "L2", "coeff": ours.OPTIMIZER.regularizer.factor}
    assert peer["Global"]["print_batch_step"] == 1 and ours.print_interval == 1


def test_paddleclas_figures_come_from_its_last_averaged_line():
    log = "\n".join(f"[2026/12/01 22:00:00] root INFO: [Train][Epoch 1/1][Iter: {i}/15]lr: 0.00375, CELoss: 1.38, "
                    f"loss: 1.38, batch_cost: {0.5 + i / 100:.5f}s, reader_cost: {0.1:.5f}, ips: 16.0 images/sec, eta: 0:00:05"
                    for i in range(15))
    got = parse_paddleclas_log(log, batch=8)
    assert got["steps"] == 15 - WARMUP
    assert got["step_s"] == pytest.approx(0.64) and got["images_per_sec"] == pytest.approx(8 / 0.64)
    assert got["data_share"] == pytest.approx(0.1 / 0.64)
    with pytest.raises(ValueError, match="warm-up"):
        parse_paddleclas_log(log.splitlines()[0], batch=8)


def test_clasflow_figures_drop_the_warm_up_steps():
    lines = [f"epoch:0 train step:{s} loss:1.3800 top1:0.2500 top5:1.0000 lr:0.003750 reader_cost:{r:.4f} elapse:{e:.3f}"
             for s, r, e in [(0, 5.0, 9.0), (1, 0.0, 1.0), (2, 0.0, 1.0), (3, 0.0, 1.0), (4, 0.0, 1.0),
                             (5, 0.1, 0.5), (6, 0.3, 1.5)]]
    got = parse_clasflow_log("noise\n" + "\n".join(lines), batch=8)
    assert got["steps"] == 2 and got["step_s"] == pytest.approx(1.0) and got["images_per_sec"] == pytest.approx(8.0)
    assert got["data_share"] == pytest.approx(0.4 / 2.0)
    with pytest.raises(ValueError, match="warm-up"):
        parse_clasflow_log("\n".join(lines[:5]), batch=8)


def test_summary_ratio_of_medians():
    runs = {"clasflow": [{"images_per_sec": v, "data_share": 0.1} for v in (9.0, 12.0, 10.0)],
            "paddleclas": [{"images_per_sec": v, "data_share": 0.2} for v in (4.0, 5.0, 100.0)]}
    got = _summary(runs, "clasflow", "paddleclas")
    assert got["clasflow"]["images_per_sec"] == spread([9.0, 12.0, 10.0]) == {"median": 10.0, "min": 9.0, "max": 12.0,
                                                                               "runs": [9.0, 12.0, 10.0]}
    assert got["ratio"] == pytest.approx(2.0) and got["paddleclas"]["data_share"]["median"] == 0.2


def test_loader_bench_list_holds_the_warm_up_and_the_timed_batches(tmp_path):
    """The fixture and list `make bench-peer` builds let clasflow's loader bench time every batch
    asked for (it failed with 'the list has N batches' when the list held the timed ones only)."""
    from clasflow.data.bench import bench_loaders
    from clasflow.data.fixture import build_fixture
    from clasflow.data.flowers102 import prepare_flowers102

    settings = SETTINGS | {"batch": 2, "workers": 1}
    data = tmp_path / "data"
    build_fixture(data, source="synthetic", classes=4, per_class=fixture_per_class(1, 2, 3), size=48, seed=0)
    prepare_flowers102(data, download=False)
    file_list, cfg = loader_bench_config(tmp_path, data, settings, batches=3)
    assert len(file_list.read_text().splitlines()) == (1 + 2 + 3) * 2  # first batch, warm-up, timed
    got = bench_loaders(cfg.TRAIN, loaders=("dali", "opencv"), batches=3)
    for name in ("dali", "opencv"):
        assert "error" not in got[name], got[name]
        assert got[name]["images"] == 3 * 2 and got[name]["batches"] == 3 and got[name]["images_per_sec"] > 0

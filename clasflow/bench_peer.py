"""`make bench-peer`: clasflow side by side with PaddleClas's own trainer and loader, on this machine.

PaddleClas 2.6.0 on the package index ships only ``ppcls/arch`` and ``ppcls/utils`` (no engine, no
data loader; neither does its sdist); the newest release there that carries its own trainer
(``ppcls.engine.trainer.Trainer``, the class 2.3+ renamed ``Engine``) and its loader
(``ppcls.data.build_dataloader`` with its operators) is 2.2.1, so that is the peer. The Makefile
installs it without its dependencies into a side folder (``PEER_SITE``); PaddleClas runs in a
child process with that folder on its path and three shims, all in this file, none in its code:
``visualdl`` (its TensorBoard-like logger, off here) is a stub module, ``collections.Callable``
(gone in Python 3.10) points to ``collections.abc.Callable``, and its loss is given shape [1]
(it reads ``loss.numpy()[0]``; Paddle >= 2.5 returns 0-d losses).

Same fixture (flowers102 layout, JPEGs of flowers102's size), architecture, batch size, image
size, transforms, CPU and threads for both; each run trains WARMUP + steps steps, alternating
PaddleClas and ``clasflow train``; figures come from each trainer's own step log (PaddleClas:
its averaged ``batch_cost``/``reader_cost``, which it resets after 5 steps; clasflow: its
``reader_cost``/``elapse`` per step, the first 5 dropped). The loaders alone: PaddleClas's
DataLoader at each worker count (its best reported) against clasflow's DALI and OpenCV loaders.
Prints a table and writes bench.json; it asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from clasflow.fsutil import write_text_atomic

WARMUP = 5  # PaddleClas's Trainer resets its timers at iteration 5; clasflow's first 5 are dropped alike
MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
PEER_VERSION = "2.2.1"


def train_list(data: Path, images: int) -> Path:
    """The first `images` lines of the fixture's train+test list (both trainers read it)."""
    lines = (data / "train_extra_list.txt").read_text().splitlines()[:images]
    if len(lines) < images:
        raise ValueError(f"{data / 'train_extra_list.txt'} has {len(lines)} images; the bench needs {images}")
    path = data / f"bench_list_{images}.txt"
    write_text_atomic(path, "".join(f"{line}\n" for line in lines))
    return path


def fixture_per_class(steps: int, batch: int, loader_batches: int) -> int:
    """Images per class of the 4-class fixture, so that its train+test list (70 %) holds both the
    training runs' images and the loader bench's (its first batch and warm-up included)."""
    from clasflow.data.bench import images_needed

    return -(-max((WARMUP + steps) * batch, images_needed(loader_batches, batch)) // 2)


def paddleclas_config(*, data: Path, file_list: Path, out: Path, arch: str, classes: int, batch: int,
                      workers: int, size: int, lr: float, l2: float) -> dict:
    """PaddleClas 2.2 Trainer config equal to clasflow's quick-start settings (one epoch, no eval)."""
    return {
        "Global": {"checkpoints": None, "pretrained_model": None, "output_dir": str(out), "device": "cpu",
                   "save_interval": 1000, "eval_during_train": False, "eval_interval": 1, "epochs": 1,
                   "print_batch_step": 1, "use_visualdl": False, "image_shape": [3, size, size]},
        "Arch": {"name": arch, "class_num": classes},
        "Loss": {"Train": [{"CELoss": {"weight": 1.0}}]},
        "Optimizer": {"name": "Momentum", "momentum": 0.9, "lr": {"name": "Cosine", "learning_rate": lr},
                      "regularizer": {"name": "L2", "coeff": l2}},
        "DataLoader": {"Train": {
            "dataset": {"name": "ImageNetDataset", "image_root": f"{data}/", "cls_label_path": str(file_list),
                        "transform_ops": [
                            {"DecodeImage": {"to_rgb": True, "channel_first": False}},
                            {"RandCropImage": {"size": size}},
                            {"RandFlipImage": {"flip_code": 1}},
                            {"NormalizeImage": {"scale": 1.0 / 255.0, "mean": MEAN, "std": STD, "order": ""}}]},
            # no ToCHWImage: its CommonDataset transposes to CHW after the operators (2.2's configs omit it)
            "sampler": {"name": "DistributedBatchSampler", "batch_size": batch, "drop_last": False, "shuffle": True},
            "loader": {"num_workers": workers, "use_shared_memory": True}}},
    }


def clasflow_overrides(*, data: Path, file_list: Path, out: Path, arch: str, classes: int, batch: int,
                       workers: int, size: int) -> list[str]:
    """`clasflow train -o` settings for the same work (configs/quick_start/ResNet50_vd.yaml's transforms)."""
    return [f"ARCHITECTURE.name={arch}", f"classes_num={classes}", "epochs=1", "validate=False",
            f"model_save_dir={out}", "print_interval=1", "save_interval=1", f"image_shape=[3,{size},{size}]",
            f"TRAIN.file_list={file_list}", f"TRAIN.data_dir={data}", f"TRAIN.batch_size={batch}",
            f"TRAIN.num_workers={workers}", f"VALID.file_list={data / 'val_list.txt'}", f"VALID.data_dir={data}"]


_PPCLS_LINE = re.compile(r"\[Train\]\[Epoch \d+/\d+\]\[Iter: (\d+)/\d+\].*batch_cost: ([\d.]+) ?s, reader_cost: ([\d.]+)")
_CLASFLOW_LINE = re.compile(r"train step:(\d+) .*reader_cost:([\d.]+) elapse:([\d.]+)")


def parse_paddleclas_log(text: str, batch: int) -> dict:
    """Its last step line: averages over the steps after its 5-step reset."""
    rows = [(int(i), float(b), float(r)) for i, b, r in _PPCLS_LINE.findall(text)]
    if not rows or rows[-1][0] < WARMUP:
        raise ValueError(f"PaddleClas logged no step after its {WARMUP} warm-up steps; its log ends:\n{text[-2000:]}")
    last, batch_cost, reader_cost = rows[-1]
    return {"steps": last + 1 - WARMUP, "step_s": batch_cost, "images_per_sec": batch / batch_cost,
            "data_share": reader_cost / batch_cost}


def parse_clasflow_log(text: str, batch: int) -> dict:
    """Its step lines after the first 5: mean step time and the share spent waiting for batches."""
    rows = [(int(s), float(r), float(e)) for s, r, e in _CLASFLOW_LINE.findall(text)]
    rows = [row for row in rows if row[0] >= WARMUP]
    if not rows:
        raise ValueError(f"clasflow train logged no step after {WARMUP} warm-up steps")
    step_s = sum(e for _, _, e in rows) / len(rows)
    return {"steps": len(rows), "step_s": step_s, "images_per_sec": batch / step_s,
            "data_share": sum(r for _, r, _ in rows) / sum(e for _, _, e in rows)}


def spread(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "runs": values}


def _run(cmd: list[str], env: dict, what: str) -> str:
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{what} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc.stdout + proc.stderr


def _peer_env(peer_site: Path) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(peer_site / "paddleclas"), str(Path(__file__).resolve().parents[1])])
    return env


# ------------------------------------------------------------------ inside the PaddleClas child


def _peer_imports() -> None:
    """The shims named in the module docstring, applied before ppcls is imported."""
    import collections
    import collections.abc
    import types

    collections.Callable = collections.abc.Callable  # type: ignore[attr-defined]
    stub = types.ModuleType("visualdl")
    stub.LogWriter = None  # use_visualdl is False: never called
    sys.modules["visualdl"] = stub


def _peer_train(config_path: str) -> None:
    _peer_imports()
    from ppcls.engine.trainer import Trainer
    from ppcls.loss import build_loss
    from ppcls.utils.config import get_config

    config = get_config(config_path, show=False)
    trainer = Trainer(config, mode="train")
    loss = build_loss(config["Loss"]["Train"])
    trainer.train_loss_func = lambda out, label: {k: v.reshape([1]) for k, v in loss(out, label).items()}
    trainer.train()


def _peer_loader(config_path: str, batches: int) -> None:
    _peer_imports()
    import paddle
    from ppcls.data import build_dataloader
    from ppcls.utils.config import get_config
    from ppcls.utils.logger import init_logger

    from clasflow.data.bench import process_tree_cpu_seconds

    init_logger()  # its Trainer does this; build_dataloader logs through it

    config = get_config(config_path, show=False)
    loader = build_dataloader(config["DataLoader"], "Train", paddle.set_device("cpu"))
    it = iter(loader)
    next(it)  # worker start-up
    images, cpu0, t0 = 0, process_tree_cpu_seconds(), time.perf_counter()
    for _ in range(batches):
        try:
            x = next(it)[0]
        except StopIteration:
            it = iter(loader)
            x = next(it)[0]
        images += int(x.shape[0])
    wall, cpu = time.perf_counter() - t0, process_tree_cpu_seconds() - cpu0
    print("PEER_LOADER " + json.dumps({"images_per_sec": images / wall, "cpu_ms_per_image": 1e3 * cpu / images,
                                       "images": images, "wall_s": wall}))


# ------------------------------------------------------------------ the bench


def bench_training(work: Path, data: Path, peer_site: Path, settings: dict, steps: int, repeats: int) -> dict:
    file_list = train_list(data, (WARMUP + steps) * settings["batch"])
    runs: dict[str, list[dict]] = {"paddleclas": [], "clasflow": []}
    for r in range(repeats):
        out = work / f"peer-{r}"
        cfg_path = work / f"paddleclas-{r}.yaml"
        cfg = paddleclas_config(data=data, file_list=file_list, out=out, **_schedule(), **settings)
        write_text_atomic(cfg_path, yaml.safe_dump(cfg, sort_keys=False))
        text = _run([sys.executable, "-m", "clasflow.bench_peer", "--peer-train", str(cfg_path)], _peer_env(peer_site),
                    "PaddleClas Trainer")
        runs["paddleclas"].append(parse_paddleclas_log(text, settings["batch"]))
        overrides = clasflow_overrides(data=data, file_list=file_list, out=work / f"clasflow-{r}", **settings)
        cmd = [sys.executable, "-m", "clasflow", "train", "--no-track", "-c", str(_quick_start_config())]
        cmd += [a for o in overrides for a in ("-o", o)]
        text = _run(cmd, dict(os.environ), "clasflow train")
        runs["clasflow"].append(parse_clasflow_log(text, settings["batch"]) | _loader_used(text))
        for name in runs:
            print(f"  train repeat {r + 1}/{repeats} {name:10s} {runs[name][-1]['images_per_sec']:7.2f} images/s, "
                  f"data share {runs[name][-1]['data_share']:.1%}", flush=True)
    return _summary(runs, "clasflow", "paddleclas") | {"steps": steps, "warmup_steps": WARMUP, **settings}


def _quick_start_config() -> Path:
    from clasflow.steps import config_dir

    return config_dir() / "ResNet50_vd.yaml"


def _schedule() -> dict:
    """Learning rate and L2 factor of the config clasflow trains with, for PaddleClas's config."""
    from clasflow.config import load_config

    cfg = load_config(_quick_start_config())
    return {"lr": cfg.LEARNING_RATE.params["lr"], "l2": cfg.OPTIMIZER.regularizer.factor}


def _loader_used(text: str) -> dict:
    return {"loader_warnings": [line for line in text.splitlines() if "WARNING" in line and "loader" in line.lower()]}


def _summary(runs: dict[str, list[dict]], ours: str, theirs: str) -> dict:
    out: dict = {}
    for name, rows in runs.items():
        out[name] = {"images_per_sec": spread([row["images_per_sec"] for row in rows])}
        if "data_share" in rows[0]:
            out[name]["data_share"] = spread([row["data_share"] for row in rows])
    out["ratio"] = out[ours]["images_per_sec"]["median"] / out[theirs]["images_per_sec"]["median"]
    return out


def loader_bench_config(work: Path, data: Path, settings: dict, batches: int):
    """The loader bench's list (the first batch, warm-up and `batches` timed batches in one epoch)
    and clasflow's config over it; PaddleClas's loader reads the same list."""
    from clasflow.config import load_config
    from clasflow.data.bench import images_needed

    file_list = train_list(data, images_needed(batches, settings["batch"]))
    overrides = clasflow_overrides(data=data, file_list=file_list, out=work / "loaders", **settings)
    return file_list, load_config(_quick_start_config(), overrides)


def bench_loaders(work: Path, data: Path, peer_site: Path, settings: dict, batches: int, repeats: int,
                  worker_counts: tuple[int, ...]) -> dict:
    from clasflow.data.bench import bench_loaders as clasflow_loaders

    file_list, cfg = loader_bench_config(work, data, settings, batches)
    per_workers: dict[int, list[float]] = {w: [] for w in worker_counts}
    runs: dict[str, list[dict]] = {"dali": [], "opencv": []}
    for r in range(repeats):
        for w in worker_counts:
            cfg_path = work / f"paddleclas-loader-{w}.yaml"
            peer = paddleclas_config(data=data, file_list=file_list, out=work / "peer-loader", **_schedule(),
                                     **(settings | {"workers": w}))
            write_text_atomic(cfg_path, yaml.safe_dump(peer, sort_keys=False))
            text = _run([sys.executable, "-m", "clasflow.bench_peer", "--peer-loader", str(cfg_path),
                         "--batches", str(batches)], _peer_env(peer_site), "PaddleClas DataLoader")
            line = next(ln for ln in text.splitlines() if ln.startswith("PEER_LOADER "))
            per_workers[w].append(json.loads(line[len("PEER_LOADER "):])["images_per_sec"])
        ours = clasflow_loaders(cfg.TRAIN, loaders=("dali", "opencv"), batches=batches)
        for name in runs:
            if "error" in ours[name]:
                raise RuntimeError(f"clasflow's {name} loader: {ours[name]['error']}")
            runs[name].append(ours[name])
        print(f"  loader repeat {r + 1}/{repeats}: PaddleClas " +
              ", ".join(f"{w} workers {v[-1]:.1f}" for w, v in per_workers.items()) +
              f"; DALI {runs['dali'][-1]['images_per_sec']:.1f}, OpenCV {runs['opencv'][-1]['images_per_sec']:.1f} images/s",
              flush=True)
    best = max(worker_counts, key=lambda w: statistics.median(per_workers[w]))
    runs["paddleclas"] = [{"images_per_sec": v} for v in per_workers[best]]
    out = _summary(runs, "dali", "paddleclas")
    out["ratio_opencv"] = out["opencv"]["images_per_sec"]["median"] / out["paddleclas"]["images_per_sec"]["median"]
    out["paddleclas"]["best_workers"] = best
    out["paddleclas"]["by_workers"] = {str(w): spread(v) for w, v in per_workers.items()}
    return out | {"batches": batches, **settings}


def table(figures: dict) -> str:
    t, lo = figures["training"], figures["loaders"]
    rows = [f"{'':34s} {'median':>8s} {'min':>8s} {'max':>8s}  data share",
            *(f"train {name:28s} {t[name]['images_per_sec']['median']:8.2f} {t[name]['images_per_sec']['min']:8.2f} "
              f"{t[name]['images_per_sec']['max']:8.2f}  {t[name]['data_share']['median']:.1%}"
              for name in ("paddleclas", "clasflow")),
            f"train ratio clasflow/PaddleClas  {t['ratio']:.2f}x (target >= 1.0x)",
            *(f"loader {name + (' (%d workers)' % lo[name]['best_workers'] if name == 'paddleclas' else ''):27s} "
              f"{lo[name]['images_per_sec']['median']:8.1f} {lo[name]['images_per_sec']['min']:8.1f} "
              f"{lo[name]['images_per_sec']['max']:8.1f}"
              for name in ("paddleclas", "dali", "opencv")),
            f"loader ratio DALI/PaddleClas {lo['ratio']:.2f}x, OpenCV/PaddleClas {lo['ratio_opencv']:.2f}x (target >= 1.5x)"]
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m clasflow.bench_peer", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="bench.json")
    parser.add_argument("--peer-site", default=".venv/peer-site", help=f"where PaddleClas {PEER_VERSION} is installed")
    parser.add_argument("--arch", default="MobileNetV3_large_x1_0")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--workers", type=int, default=2, help="loader workers of both trainers")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per run, after the warm-up")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--loader-batches", type=int, default=12)
    parser.add_argument("--peer-workers", default="1,2,4", help="PaddleClas loader worker counts to try")
    parser.add_argument("--peer-train", help=argparse.SUPPRESS)
    parser.add_argument("--peer-loader", help=argparse.SUPPRESS)
    parser.add_argument("--batches", type=int, default=12, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.peer_train:
        _peer_train(args.peer_train)
        return 0
    if args.peer_loader:
        _peer_loader(args.peer_loader, args.batches)
        return 0

    from clasflow.benchmark import environment
    from clasflow.data.fixture import build_fixture
    from clasflow.data.flowers102 import prepare_flowers102

    os.environ.setdefault("OMP_NUM_THREADS", str(os.cpu_count() or 1))  # as the Makefile does, for both trainers
    peer_site = Path(args.peer_site).resolve()
    if not (peer_site / "paddleclas" / "ppcls" / "engine" / "trainer.py").is_file():
        raise SystemExit(f"--peer-site {peer_site}: no PaddleClas {PEER_VERSION} there; run `make bench-peer`")
    settings = {"arch": args.arch, "classes": 4, "batch": args.batch, "workers": args.workers, "size": args.size}
    start = time.time()
    figures: dict = {"date": time.strftime("%Y-%m-%d", time.gmtime()), "threads": os.environ.get("OMP_NUM_THREADS"),
                     "peer": f"PaddleClas {PEER_VERSION} (Trainer, build_dataloader) from the package index"}
    with tempfile.TemporaryDirectory(prefix="clasflow-bench-peer-") as tmp:
        work, data = Path(tmp), Path(tmp) / "data"
        per_class = fixture_per_class(args.steps, args.batch, args.loader_batches)
        build_fixture(data, source="synthetic", classes=4, per_class=per_class, size=500, seed=0)  # 500-625 px, like flowers
        prepare_flowers102(data, download=False)
        print(f"fixture: {4 * per_class} JPEGs, 500-625 px short side; {args.arch}, batch {args.batch}, "
              f"{args.size} px, {args.workers} workers, OMP_NUM_THREADS={figures['threads']}", flush=True)
        figures["training"] = bench_training(work, data, peer_site, settings, args.steps, args.repeats)
        workers = tuple(int(w) for w in args.peer_workers.split(","))
        figures["loaders"] = bench_loaders(work, data, peer_site, settings, args.loader_batches, args.repeats, workers)
    figures["machine"] = environment(int(os.environ.get("OMP_NUM_THREADS", "2")))
    figures["wall_s"] = time.time() - start
    print(table(figures))
    write_text_atomic(args.out, json.dumps(figures, indent=2, default=str) + "\n")
    print(f"figures saved to {args.out} ({figures['wall_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

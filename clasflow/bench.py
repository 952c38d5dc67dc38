"""`make bench`: the figures of this machine, printed and saved to bench.json.

1. Loaders: DALI (CPU here) vs OpenCV workers on the same list at 224 px with the train
   transforms; images/s, CPU-ms/image and the ratio (the target: DALI at least 1.8x ahead).
2. Training: images/s per architecture (ResNet50_vd, MobileNetV3_large_x1_0) and loader at
   224 px, batch 8, a few steps.
3. Engine overhead: the trainer's step time next to a plain Paddle loop (forward, loss,
   backward, optimizer step) over the same model, loader, data and batch, in one run; the
   target: the engine within 5 % of the plain loop.
4. Inference: CPU latency of Paddle Inference (oneDNN) and onnxruntime side by side.

Benchmarks print figures; they assert nothing. Run one at a time: they share the two cores.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

from clasflow.fsutil import write_text_atomic

log = logging.getLogger(__name__)
TRAIN_ARCHS = ("ResNet50_vd", "MobileNetV3_large_x1_0")


def _dataset(root: Path, per_class: int) -> Path:
    from clasflow.data.fixture import build_fixture
    from clasflow.data.flowers102 import prepare_flowers102

    build_fixture(root, source="synthetic", classes=4, per_class=per_class, size=375, seed=0)  # ~375-468 px, like flowers
    prepare_flowers102(root, download=False)
    return root


def _config(data: Path, arch: str, loader: str, out: Path, batch: int, workers: int):
    from clasflow.steps import config_dir
    from clasflow.config import load_config

    return load_config(config_dir() / "ResNet50_vd.yaml", [
        f"ARCHITECTURE.name={arch}", "classes_num=4", "epochs=1", "validate=False", f"model_save_dir={out}",
        f"TRAIN.file_list={data / 'train_extra_list.txt'}", f"TRAIN.data_dir={data}", f"TRAIN.loader={loader}",
        f"TRAIN.batch_size={batch}", f"TRAIN.num_workers={workers}", "print_interval=1000", "save_interval=1",
        f"VALID.file_list={data / 'val_list.txt'}", f"VALID.data_dir={data}",
    ])


# The loaders' best settings for 2 cores, measured (num_workers 1-4 each): DALI threads, OpenCV processes.
LOADER_WORKERS = {"dali": 2, "dali-cpu": 2, "dali-mixed": 2, "opencv": 2}


def flowers_sized(root: Path, batches: int, batch: int = 32) -> Path:
    """JPEGs of flowers102's size and weight (500-625 px a side, ~1.1 bits per pixel: ~42 KB), 128
    distinct, and a list long enough for one epoch of ``batches`` batches; returns the list."""
    from clasflow.data.fixture import build_fixture
    from clasflow.data.flowers102 import prepare_flowers102

    build_fixture(root, source="synthetic", classes=4, per_class=32, size=500, noise=2.0, seed=1)
    prepare_flowers102(root, download=False)
    lines = [line for name in ("train_list.txt", "val_list.txt", "extra_list.txt")
             for line in (root / name).read_text().splitlines()]
    listed = root / "loader_bench_list.txt"
    listed.write_text("".join(f"{lines[i % len(lines)]}\n" for i in range(batches * batch)))
    return listed


def bench_loaders_224(data: Path, work: Path, batches: int, rounds: int = 3) -> dict:
    """Loader figures at 224 px with the train transforms, batch 32, on flowers-sized JPEGs:
    DALI (CPU, and on a GPU also the mixed path) against OpenCV workers, alternating in one run."""
    from clasflow.data.bench import bench_loaders
    from clasflow.engine.runtime import gpu_available

    listed = flowers_sized(data, batches + 6)
    cfg = _config(data, "ResNet50_vd", "auto", work, batch=32, workers=2)
    section = cfg.TRAIN.model_copy(update={"file_list": str(listed)})
    loaders = ("dali-cpu", "dali-mixed", "opencv") if gpu_available() else ("dali-cpu", "opencv")
    result = bench_loaders(section, loaders=loaders, batches=batches, rounds=rounds, workers=LOADER_WORKERS)
    jpgs = sorted((data / "jpg").glob("*.jpg"))
    result["jpeg_kb"] = sum(p.stat().st_size for p in jpgs) / len(jpgs) / 1000
    dali, cv = result.get("dali-cpu", {}), result.get("opencv", {})
    if dali.get("images_per_sec") and cv.get("images_per_sec"):
        result["dali_over_opencv"] = dali["images_per_sec"] / cv["images_per_sec"]
    return result


def print_loaders(loaders: dict) -> None:
    from clasflow.data.bench import figure_lines

    for line in figure_lines(loaders):
        print(f"loader {line}", flush=True)
    if "dali_over_opencv" in loaders:
        print(f"loader DALI(CPU)/OpenCV ratio {loaders['dali_over_opencv']:.2f}x (target >= 1.8x), "
              f"JPEGs {loaders['jpeg_kb']:.0f} KB", flush=True)


def bench_training(data: Path, work: Path, steps: int) -> dict:
    from clasflow.engine.trainer import train

    out = {}
    for arch in TRAIN_ARCHS:
        for loader in ("dali", "opencv"):
            cfg = _config(data, arch, loader, work / f"{arch}-{loader}", batch=8, workers=2)
            cfg = cfg.model_copy(update={"TRAIN": cfg.TRAIN.model_copy(update={"file_list": str(_subset(data, work, 8 * steps))})})
            tic = time.time()
            result = train(cfg, track=False)
            out[f"{arch}/{loader}"] = {"images_per_sec": result.history[-1]["images_per_sec"], "steps": steps,
                                       "batch_size": 8, "wall_s": time.time() - tic}
            print(f"train {arch:24s} {loader:7s} {out[f'{arch}/{loader}']['images_per_sec']:7.2f} images/s", flush=True)
    return out


def _plain_loop_seconds_per_image(cfg) -> float:
    """One epoch of the plainest Paddle training loop over `cfg`'s model, loader and optimizer."""
    import paddle

    from clasflow.engine import losses
    from clasflow.engine.runtime import seed_everything, setup_device
    from clasflow.engine.schedules import build_lr, build_optimizer
    from clasflow.engine.trainer import _loaders, build_from_config

    setup_device(cfg)
    seed_everything(cfg.seed)
    model = build_from_config(cfg)
    loader, _ = _loaders(cfg, train=True)
    schedule = build_lr(cfg, len(loader))
    optimizer = build_optimizer(cfg, model.parameters(), schedule)
    model.train()
    images_seen = 0
    tic = time.time()
    for images, labels in loader:
        images_seen += images.shape[0]
        loss = losses.cross_entropy(model(images), labels, cfg.classes_num, cfg.ls_epsilon)
        loss.backward()
        optimizer.step()
        optimizer.clear_grad()
        schedule.step()
    float(loss)  # wait for the device, as the engine does at the epoch's end
    return (time.time() - tic) / images_seen


def bench_engine_overhead(data: Path, work: Path, steps: int, rounds: int = 3, arch: str = "MobileNetV3_large_x1_0") -> dict:
    """Step time of `train` and of the plain loop, alternated `rounds` times (best of each)."""
    from clasflow.engine.trainer import train

    cfg = _config(data, arch, "auto", work / "overhead", batch=8, workers=2)
    cfg = cfg.model_copy(update={"TRAIN": cfg.TRAIN.model_copy(update={"file_list": str(_subset(data, work, 8 * steps))})})
    engine, plain = [], []  # seconds per step of 8 images
    for _ in range(rounds):
        result = train(cfg, track=False)
        engine.append(8 / result.history[-1]["images_per_sec"])
        plain.append(8 * _plain_loop_seconds_per_image(cfg))
    out = {"architecture": arch, "batch_size": 8, "images": len(Path(cfg.TRAIN.file_list).read_text().splitlines()), "engine_step_ms": min(engine) * 1e3,
           "plain_step_ms": min(plain) * 1e3, "overhead_pct": (min(engine) / min(plain) - 1) * 100,
           "rounds_engine_ms": [e * 1e3 for e in engine], "rounds_plain_ms": [p * 1e3 for p in plain]}
    print(f"engine step {out['engine_step_ms']:8.1f} ms, plain Paddle loop {out['plain_step_ms']:8.1f} ms "
          f"({arch}, 224 px, batch 8, {out['images']} images): overhead {out['overhead_pct']:+.1f} % (target <= 5 %)", flush=True)
    return out


def _subset(data: Path, work: Path, n: int) -> Path:
    lines = (data / "train_extra_list.txt").read_text().splitlines()[:n]
    path = work / f"subset-{n}.txt"
    path.write_text("".join(f"{line}\n" for line in lines))
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m clasflow.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="bench.json")
    parser.add_argument("--loader-batches", type=int, default=20)
    parser.add_argument("--loader-rounds", type=int, default=3)
    parser.add_argument("--only-loaders", action="store_true", help="the loader figures only")
    parser.add_argument("--train-steps", type=int, default=4)
    parser.add_argument("--overhead-steps", type=int, default=5)
    parser.add_argument("--inference-repeats", type=int, default=30)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    from clasflow.benchmark import bench_cpu
    from clasflow.benchmark import environment

    figures: dict = {"threads": os.environ.get("OMP_NUM_THREADS")}
    with tempfile.TemporaryDirectory(prefix="clasflow-bench-") as tmp:
        work = Path(tmp)
        figures["loaders_224_train"] = loaders = bench_loaders_224(work / "flowers-sized", work, args.loader_batches,
                                                                   args.loader_rounds)
        print_loaders(loaders)
        if args.only_loaders:
            write_text_atomic(args.out, json.dumps(figures, indent=2, default=str) + "\n")
            return 0
        data = _dataset(work / "data", per_class=16)
        figures["training_224"] = bench_training(data, work, args.train_steps)
        figures["engine_overhead_224"] = bench_engine_overhead(data, work, args.overhead_steps)
        figures["inference_cpu_224"] = bench_cpu(None, repeats=args.inference_repeats, work_dir=tmp)
        figures["machine"] = environment(int(os.environ.get("OMP_NUM_THREADS", "2")))
    write_text_atomic(args.out, json.dumps(figures, indent=2, default=str) + "\n")
    print(f"figures saved to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

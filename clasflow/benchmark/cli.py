"""Command-line glue: the parsing of --backend/--precision/--device/--batch_size values, the
translation of PaddleClas predict.py's benchmark flags, and ``python -m clasflow.benchmark
--bench-cpu`` (the CPU figures of `make bench`)."""

from __future__ import annotations

import logging
import os
import re
import sys
from typing import Sequence

from clasflow.benchmark.bench_cpu import BENCH_ARCHS, bench_cpu
from clasflow.errors import ClasflowError
from clasflow.predict import default_threads


def parse_choices(text: str | Sequence[str], allowed: Sequence[str], what: str) -> list[str]:
    items = text if not isinstance(text, str) else [t for t in re.split(r"[,\s]+", text) if t]
    out: list[str] = []
    for item in items:
        item = item.strip().lower().replace("_", "-")
        if item not in allowed:
            raise ClasflowError(f"--{what}: {item!r} is not one of {', '.join(allowed)}")
        if item not in out:
            out.append(item)
    if not out:
        raise ClasflowError(f"--{what}: give at least one of {', '.join(allowed)}")
    return out


def parse_batch_sizes(text: str | Sequence[int]) -> list[int]:
    items = re.split(r"[,\s]+", text) if isinstance(text, str) else list(text)
    out: list[int] = []
    for item in items:
        if item == "":
            continue
        try:
            n = int(item)
        except ValueError:
            raise ClasflowError(f"--batch_size: {item!r} is not an integer (e.g. --batch_size 1,4)") from None
        if n < 1:
            raise ClasflowError(f"--batch_size: {n} must be at least 1")
        if n not in out:
            out.append(n)
    if not out:
        raise ClasflowError("--batch_size: give at least one batch size, e.g. 1,4")
    return out


def translate_seed_flags(*, use_gpu: bool | None, use_tensorrt: bool | None, use_fp16: bool | None,
                         enable_benchmark: bool | None) -> tuple[dict[str, str], str | None]:
    """PaddleClas predict.py's benchmark flags -> (backend/device/precision values, a note)."""
    given = {k: v for k, v in (("use_gpu", use_gpu), ("use_tensorrt", use_tensorrt), ("use_fp16", use_fp16),
                               ("enable_benchmark", enable_benchmark)) if v is not None}
    if not given:
        return {}, None
    out: dict[str, str] = {}
    if use_tensorrt:
        out["backend"], out["device"] = "paddle-trt", "gpu"
    if use_gpu is not None and "device" not in out:
        out["device"] = "gpu" if use_gpu else "cpu"
    if use_gpu is False and use_tensorrt:
        raise ClasflowError("--use_tensorrt needs the GPU; drop --use_gpu False")
    if use_fp16 is not None:
        out["precision"] = "fp16" if use_fp16 else "fp32"
    seed = " ".join(f"--{k} {v}" for k, v in given.items())
    new = " ".join(f"--{k} {v}" for k, v in out.items()) or "(defaults)"
    return out, f"clasflow: seed flags {seed} -> {new}"


def main(argv: Sequence[str] | None = None) -> int:
    import argparse

    os.environ.setdefault("OMP_NUM_THREADS", str(default_threads()))
    parser = argparse.ArgumentParser(prog="python -m clasflow.benchmark",
                                     description="CPU inference figures (paddle oneDNN vs onnxruntime); "
                                                 "the full benchmark is `clasflow benchmark`")
    parser.add_argument("--bench-cpu", action="store_true", required=True,
                        help="MobileNetV3_large_x1_0 and ResNet50_vd at 224px, bs 1 and 4, random weights")
    parser.add_argument("--out", default=None, help="write the figures as JSON here")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", default="1,4")
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--archs", default=",".join(BENCH_ARCHS))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        bench_cpu(args.out, archs=[a for a in args.archs.split(",") if a], image_size=args.image_size,
                  batch_sizes=parse_batch_sizes(args.batch_size), warmup=args.warmup, repeats=args.repeats,
                  threads=args.threads)
    except ClasflowError as exc:
        print(f"clasflow: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

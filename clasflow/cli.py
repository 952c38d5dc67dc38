"""The `clasflow` command: one subcommand per stage, each a thin wrapper over a library function.

Heavy imports (paddle, dali, kfp, mlflow) happen inside the handlers, after OMP_NUM_THREADS is
set: Paddle pins its CPU threads to 1 unless that variable exists when it is first imported.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from clasflow.errors import ClasflowError

log = logging.getLogger("clasflow")


def _cpu_threads() -> None:
    os.environ.setdefault("OMP_NUM_THREADS", str(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1))


# ------------------------------------------------------------------ dataset


def _dataset_flowers102(args: argparse.Namespace) -> int:
    from clasflow.data.flowers102 import prepare_flowers102

    report = prepare_flowers102(args.root, url_base=args.url_base, download=not args.no_download, strict=args.strict)
    print(json.dumps(report.__dict__, indent=2) if args.json else report.summary())
    return 0


def _dataset_fixture(args: argparse.Namespace) -> int:
    from clasflow.data.fixture import build_fixture

    counts = build_fixture(
        args.root, source=args.source, classes=args.classes, per_class=args.per_class,
        size=args.size, seed=args.seed, archive=args.archive, train=args.train, valid=args.valid,
    )
    print(f"fixture ({args.source}) at {args.root}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    return 0


def _add_dataset(sub: argparse._SubParsersAction) -> None:
    from clasflow.data.flowers102 import OFFICIAL_URL_BASE

    p = sub.add_parser("dataset", help="prepare a dataset (flowers102) or build a fixture")
    ds = p.add_subparsers(dest="dataset", required=True)
    f = ds.add_parser("flowers102", help="download, verify, extract and write PaddleClas lists")
    f.add_argument("--root", required=True, help="dataset folder, e.g. ./dataset/flowers102")
    f.add_argument("--url-base", default=OFFICIAL_URL_BASE, help="where the three files live (http(s)://, file://, s3://)")
    f.add_argument("--no-download", action="store_true", help="use the files already in --root as they are")
    f.add_argument("--strict", action="store_true", help="fail on missing or corrupt images instead of dropping them")
    f.add_argument("--json", action="store_true", help="print the report as JSON")
    f.set_defaults(func=_dataset_flowers102)
    x = ds.add_parser("fixture", help="write a small dataset in the flowers102 layout")
    x.add_argument("--root", required=True)
    x.add_argument("--source", choices=["digits", "synthetic"], default="synthetic")
    x.add_argument("--classes", type=int, default=10)
    x.add_argument("--per-class", type=int, default=20)
    x.add_argument("--size", type=int, default=64, help="approximate image side in pixels")
    x.add_argument("--seed", type=int, default=0)
    x.add_argument("--train", type=int, default=0, help="train images per class (default 40 %% of --per-class)")
    x.add_argument("--valid", type=int, default=0, help="valid images per class (default 30 %%); the rest: the test split")
    x.add_argument("--archive", action="store_true", help="also write 102flowers.tgz and MD5SUMS (a download mirror)")
    x.set_defaults(func=_dataset_fixture)


# ------------------------------------------------------------------ zoo


def _bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "y"):
        return True
    if text.lower() in ("0", "false", "no", "n"):
        return False
    raise argparse.ArgumentTypeError(f"expected True or False, got {text!r}")


def _download(args: argparse.Namespace) -> int:
    from clasflow.zoo import download_weights

    result = download_weights(
        args.architecture, args.path, decompress=args.decompress, fmt=args.format,
        url_base=args.url_base, trust=args.trust,
    )
    print(f"{result.arch}: {result.path} sha256 {result.sha256}{' (DEMO weights)' if result.demo else ''}")
    return 0


def _zoo_list(args: argparse.Namespace) -> int:
    from clasflow.zoo import registry

    for entry in registry().values():
        print(f"{entry.name:32s} {'pdparams+tar' if entry.v2_pdparams else 'tar'}")
    return 0


def _zoo_mirror(args: argparse.Namespace) -> int:
    from clasflow.zoo import write_demo_mirror

    if not args.demo:
        raise ClasflowError("only demo mirrors can be written offline: pass --demo")
    out = write_demo_mirror(args.dir)
    print(f"demo zoo mirror (DEMO weights pretrained by clasflow on a generated task, not ImageNet) at {out}")
    return 0


def _add_zoo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("download", help="download pretrained weights (the seed's tools/download.py)")
    p.add_argument("-a", "--architecture", required=True)
    p.add_argument("-p", "--path", default="./pretrained")
    p.add_argument("-d", "--decompress", nargs="?", const=True, default=False, type=_bool, help="extract a v1 .tar")
    p.add_argument("--format", default="auto", choices=["auto", "pdparams", "tar"])
    p.add_argument("--url-base", default=None, help="a zoo mirror (http(s)://, file://, s3://); env CLASFLOW_ZOO_URL")
    p.add_argument("--trust", action="store_true", help="accept a file whose sha256 differs from the pin or lock file")
    p.set_defaults(func=_download)
    z = sub.add_parser("zoo", help="list the zoo or write a demo mirror")
    zs = z.add_subparsers(dest="zoo", required=True)
    zs.add_parser("list", help="every architecture with weights").set_defaults(func=_zoo_list)
    m = zs.add_parser("mirror", help="write a zoo mirror folder")
    m.add_argument("dir")
    m.add_argument("--demo", action="store_true", help="the demo zoo: weights pretrained here on a generated task, clearly marked (offline runs)")
    m.set_defaults(func=_zoo_mirror)


# ------------------------------------------------------------------ train / eval

_REQUIRE_GPU_HELP = ("refuse to start without a GPU, naming what Paddle sees (the same as CLASFLOW_REQUIRE_GPU=1, "
                     "which the cluster pipeline sets on its GPU tasks)")


def _require_gpu(args: argparse.Namespace) -> None:
    """--require-gpu: checked before any work (the stage checks again, for callers of the library)."""
    if getattr(args, "require_gpu", False):
        os.environ["CLASFLOW_REQUIRE_GPU"] = "1"
    if os.environ.get("CLASFLOW_REQUIRE_GPU"):
        from clasflow.engine.runtime import check_gpu_requirement

        check_gpu_requirement(args.command)


_TRUST_HELP = ("load weight files whose sha256 differs from their zoo.lock.json entry or the zoo pin "
               "(weight files are pickles: only for files you trust)")


def _train(args: argparse.Namespace) -> int:
    from pathlib import Path

    _require_gpu(args)
    from clasflow.config import load_config

    cfg = load_config(args.config, args.override, check_paths=True)  # before Paddle is imported: fail fast
    from clasflow.engine.trainer import TrainingInterrupted, train

    on_checkpoint = None
    if args.checkpoint_store:
        from clasflow.engine.stored import CheckpointStore

        on_checkpoint = CheckpointStore(args.checkpoint_store).put
    try:
        result = train(cfg, run_name=args.run_name or Path(args.config).stem, track=not args.no_track, trust=args.trust,
                       on_checkpoint=on_checkpoint)
    except TrainingInterrupted as exc:
        print(f"clasflow: {exc}", file=sys.stderr)
        return 143
    print(f"best valid top1 {result.best_top1:.4f} at epoch {result.best_epoch}; best model {result.best_model}")
    return 0


def _eval(args: argparse.Namespace) -> int:
    from pathlib import Path

    _require_gpu(args)
    if args.model_dir:
        return _eval_export(args)
    if not args.config:
        raise ClasflowError("give -c CONFIG (dygraph weights) or --model_dir DIR --image_list LIST (an export)")
    for given, option in ((args.image_list, "--image_list"), (args.data_dir, "--data_dir"), (args.backend, "--backend"),
                          (args.precision, "--precision")):
        if given:
            raise ClasflowError(f"{option} scores an exported model: it needs --model_dir")
    from clasflow.config import load_config

    cfg = load_config(args.config, args.override)
    from clasflow.engine.trainer import evaluate

    metrics = evaluate(cfg, run_name=args.run_name or f"eval-{Path(args.config).stem}", track=not args.no_track,
                       trust=args.trust)
    print(json.dumps(metrics) if args.json else " ".join(f"{k}:{v:.4f}" for k, v in metrics.items()))
    return 0


def _eval_export(args: argparse.Namespace) -> int:
    from clasflow.benchmark import BACKENDS, PRECISIONS, parse_choices
    from clasflow.parity import print_table, score_export

    if args.config or args.override:
        raise ClasflowError("--model_dir scores an export; -c/-o are for dygraph weights: give one or the other")
    if not args.image_list:
        raise ClasflowError("--model_dir needs --image_list LIST (a labeled PaddleClas list: 'path label' lines)")
    report = score_export(args.model_dir, args.image_list, args.data_dir,
                          backends=parse_choices(args.backend or "paddle,onnxruntime", BACKENDS, "backend"),
                          precisions=parse_choices(args.precision or "fp32", PRECISIONS, "precision"),
                          topk=args.topk, batch_size=args.batch_size)
    if args.json:
        print(json.dumps(report["results"], indent=2))
    else:
        print_table(report)
    if not any(r["status"] == "ok" for r in report["results"]):
        raise ClasflowError("no backend could score the model:\n  " + "\n  ".join(
            f"{r['backend']}/{r['device']}/{r['precision']}: {r['reason']}" for r in report["results"]))
    return 0


def _add_train(sub: argparse._SubParsersAction) -> None:
    for name, func, text in (("train", _train, "train or distill (the seed's tools/train.py)"),
                             ("eval", _eval, "evaluate weights on VALID (the seed's tools/eval.py), or an export "
                                             "(--model_dir) on a labeled list through each backend and precision")):
        p = sub.add_parser(name, help=text)
        p.add_argument("-c", "--config", required=name == "train", default=None, help="a PaddleClas YAML config")
        p.add_argument("-o", "--override", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config key, e.g. -o epochs=2 -o TRAIN.batch_size=8 (repeatable)")
        p.add_argument("--run-name", default=None, help="MLflow run name (default: the config's name)")
        p.add_argument("--no-track", action="store_true", help="do not log to MLflow")
        p.add_argument("--trust", action="store_true", help=_TRUST_HELP)
        p.add_argument("--require-gpu", action="store_true", help=_REQUIRE_GPU_HELP)
        if name == "eval":
            p.add_argument("--json", action="store_true")
            x = p.add_argument_group("an exported model (instead of -c)")
            x.add_argument("--model_dir", "--model-dir", dest="model_dir", default=None, help="a folder written by `clasflow export`")
            x.add_argument("--image_list", "--image-list", dest="image_list", default=None, help="a labeled PaddleClas list")
            x.add_argument("--data_dir", "--data-dir", dest="data_dir", default=None,
                           help="folder the list's paths are relative to (default: the list's folder)")
            x.add_argument("--backend", default=None, help="comma list of paddle, paddle-trt, onnxruntime, onnxruntime-trt, "
                                                            "tensorrt (default paddle,onnxruntime)")
            x.add_argument("--precision", default=None, help="comma list of fp32, fp16, int8 (default fp32)")
            x.add_argument("--topk", type=int, default=5, help="k of the top-k accuracy (default 5)")
            x.add_argument("-b", "--batch_size", "--batch-size", dest="batch_size", type=int, default=16)
        else:
            p.add_argument("--checkpoint-store", default="", metavar="URI",
                           help="also keep every checkpoint under this s3:// (or local) prefix (what the pipeline's train step uses)")
        p.set_defaults(func=func)


# ------------------------------------------------------------------ export / predict / benchmark


def _image_size_arg(text: str):
    parts = [p for p in text.replace("x", ",").split(",") if p]
    try:
        sizes = [int(p) for p in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected SIZE or H,W (e.g. 224), got {text!r}") from None
    if len(sizes) == 1:
        return sizes[0]
    if len(sizes) == 2:
        return tuple(sizes)
    raise argparse.ArgumentTypeError(f"expected SIZE or H,W, got {text!r}")


def _export(args: argparse.Namespace) -> int:
    from clasflow.models.pretrained import trusted_weights

    with trusted_weights(args.trust):
        return _export_trusted(args)


def _export_trusted(args: argparse.Namespace) -> int:
    from clasflow.export import export_from_config, export_model, read_label_names, split_pretrained_override

    if args.config and args.model:
        raise ClasflowError("give either -c CONFIG or --model ARCH, not both")
    for given, option in ((args.int8_data_dir, "--int8_data_dir"), (args.int8_images is not None, "--int8_images")):
        if given and not args.int8_calib:
            raise ClasflowError(f"{option} needs --int8_calib (the list of calibration images)")
    int8 = {"int8_calib": args.int8_calib, "int8_data_dir": args.int8_data_dir}
    if args.int8_images is not None:
        int8["int8_images"] = args.int8_images
    if args.config:
        overrides, pretrained = split_pretrained_override(args.override)
        result = export_from_config(args.config, overrides, args.output_path,
                                    pretrained_model=args.pretrained_model or pretrained,
                                    label_names_file=args.label_names, onnx=args.onnx, tolerance=args.tolerance,
                                    opset=args.opset, **int8)
    else:
        if not args.model:
            raise ClasflowError("give -c CONFIG -o pretrained_model=PATH, or --model ARCH --pretrained_model PATH")
        if args.override:
            raise ClasflowError("-o overrides need -c CONFIG")
        if not args.pretrained_model:
            raise ClasflowError("--pretrained_model is required with --model (the weights to export)")
        names, source = None, "ids"
        if args.label_names:
            if args.class_num is None:
                raise ClasflowError("--label_names needs --class_num")
            names = read_label_names(args.label_names, args.class_num)
            source = "flowers102" if args.label_names == "flowers102" else f"file:{args.label_names}"
        result = export_model(arch=args.model, output_path=args.output_path, pretrained_model=args.pretrained_model,
                              class_num=args.class_num, image_size=args.image_size, label_names=names,
                              label_source=source, onnx=args.onnx, tolerance=args.tolerance, opset=args.opset, **int8)
    int8 = result.meta.get("int8") or {}
    print(json.dumps({"output_path": result.output_path, "architecture": result.architecture,
                      "class_num": result.class_num, "files": result.files, "max_abs_diff": result.max_abs_diff,
                      **({"int8": int8.get("self_check") or int8} if int8 else {})})
          if args.json else result.summary())
    return 0


def _predict(args: argparse.Namespace) -> int:
    from clasflow.predict import predict

    preds = predict(args.model_dir, args.image_file, topk=args.topk, backend=args.backend, device=args.device,
                    batch_size=args.batch_size, threads=args.threads)
    if args.json:
        print(json.dumps([p.as_dict() for p in preds], indent=2))
    else:
        for p in preds:
            print(p.line())
    return 0


def _benchmark(args: argparse.Namespace) -> int:
    from clasflow.benchmark import (BACKENDS, DEVICES, PRECISIONS, BenchSettings, log_to_mlflow, parse_batch_sizes,
                                    parse_choices, print_table, run_benchmark, translate_seed_flags, write_report)

    _require_gpu(args)
    seed, note = translate_seed_flags(use_gpu=args.use_gpu, use_tensorrt=args.use_tensorrt, use_fp16=args.use_fp16,
                                      enable_benchmark=args.enable_benchmark)
    if note:
        print(note, file=sys.stderr)
    model_dir = args.model_dir or args.model_dir_seed
    if not model_dir:
        raise ClasflowError("--model_dir is required (a folder written by `clasflow export`)")
    settings = BenchSettings(
        model_dir=model_dir,
        backends=parse_choices(args.backend or seed.get("backend", "paddle"), BACKENDS, "backend"),
        precisions=parse_choices(args.precision or seed.get("precision", "fp32"), PRECISIONS, "precision"),
        devices=parse_choices(args.device or seed.get("device", "cpu"), DEVICES, "device"),
        batch_sizes=parse_batch_sizes(args.batch_size), threads=args.threads, warmup=args.warmup,
        repeats=args.repeats, image_list=args.image_list, data_dir=args.data_dir, engine_cache=args.engine_cache,
        gpu_id=args.gpu_id)
    report = run_benchmark(settings, progress=lambda text: log.info("%s", text))
    if args.json:
        write_report(report, args.json)
    print_table(report)
    log_to_mlflow(report, args.json)
    if report["summary"]["ok"] == 0:
        reasons = sorted({f"{r['backend']}/{r['device']}/{r['precision']}: {r.get('reason')}" for r in report["results"]})
        raise ClasflowError("nothing could run:\n  " + "\n  ".join(reasons))
    return 0


def _add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export an inference model (+ ONNX) that checks itself (the seed's export_model.py)")
    p.add_argument("-c", "--config", default=None, help="a PaddleClas YAML config (architecture, classes, VALID preprocessing)")
    p.add_argument("-o", "--override", action="append", default=[], metavar="KEY=VALUE",
                   help="config override; -o pretrained_model=PATH names the weights to export")
    p.add_argument("-m", "--model", default=None, metavar="ARCH", help="architecture, when no config is given")
    p.add_argument("-p", "--pretrained_model", "--pretrained-model", dest="pretrained_model", default=None,
                   help="checkpoint (PaddleClas prefix DIR/ppcls, a .pdparams file, or a v1 archive)")
    p.add_argument("--class_num", "--class-num", "--class_dim", dest="class_num", type=int, default=None,
                   help="expected class count (checked against the checkpoint; default: the checkpoint's)")
    p.add_argument("-s", "--image_size", "--image-size", "--img_size", dest="image_size", type=_image_size_arg,
                   default=224, help="input size with --model: SIZE or H,W (default 224)")
    p.add_argument("--label_names", "--label-names", dest="label_names", default=None,
                   help="label names file (one per line, or 'ID NAME' lines), or 'flowers102'")
    p.add_argument("--output_path", "--output-path", dest="output_path", default="./inference",
                   help="output folder (default ./inference); replaced atomically")
    p.add_argument("--onnx", action="store_true", help="also write model.onnx (paddle2onnx, offline) and check it with onnxruntime")
    p.add_argument("--tolerance", type=float, default=1e-4,
                   help="self-check: max abs logit diff allowed, times max(1, max |logit|) (default 1e-4)")
    p.add_argument("--opset", type=int, default=13, help="ONNX opset (default 13)")
    p.add_argument("--int8_calib", "--int8-calib", dest="int8_calib", default=None, metavar="LIST_OR_DIR",
                   help="also write int8/: the model quantized by calibration on these real images (a PaddleClas list "
                        "or a folder), for `clasflow benchmark --backend paddle-trt --precision int8`")
    p.add_argument("--int8_data_dir", "--int8-data-dir", dest="int8_data_dir", default=None,
                   help="the folder the --int8_calib list's paths are relative to (default: the list's folder)")
    p.add_argument("--int8_images", "--int8-images", dest="int8_images", type=int, default=None,
                   help="calibration images, spread over the list (default 32); up to as many again, taken "
                        "between them, check the result")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--trust", action="store_true", help=_TRUST_HELP)
    p.set_defaults(func=_export)

    q = sub.add_parser("predict", help="classify images with an exported model (the seed's predict.py)")
    q.add_argument("--model_dir", "--model-dir", dest="model_dir", required=True, help="a folder written by `clasflow export`")
    q.add_argument("-i", "--image_file", "--image-file", dest="image_file", required=True, help="an image or a folder of images")
    q.add_argument("--topk", type=int, default=5, help="classes per image; 0 means all (default 5)")
    q.add_argument("--backend", choices=["paddle", "onnxruntime"], default="paddle")
    q.add_argument("--device", choices=["cpu", "gpu"], default="cpu")
    q.add_argument("-b", "--batch_size", "--batch-size", dest="batch_size", type=int, default=8)
    q.add_argument("--threads", type=int, default=None, help="CPU threads (default: all available)")
    q.add_argument("--json", action="store_true", help="print machine-readable JSON")
    q.set_defaults(func=_predict)

    b = sub.add_parser("benchmark", help="latency/throughput per backend, precision and batch size")
    b.add_argument("--model_dir", "--model-dir", dest="model_dir", default=None, help="a folder written by `clasflow export`")
    b.add_argument("-m", dest="model_dir_seed", default=None, help=argparse.SUPPRESS)
    b.add_argument("--backend", default=None,
                   help="comma list of paddle, paddle-trt, onnxruntime, onnxruntime-trt, tensorrt (default paddle)")
    b.add_argument("--device", default=None, help="cpu or gpu (comma list allowed; default cpu)")
    b.add_argument("--precision", default=None, help="comma list of fp32, fp16, int8 (default fp32)")
    b.add_argument("-b", "--batch_size", "--batch-size", dest="batch_size", default="1", help="comma list, e.g. 1,4")
    b.add_argument("--threads", type=int, default=None, help="CPU math threads (default: all available)")
    b.add_argument("--image_list", "--image-list", dest="image_list", default=None,
                   help="a PaddleClas list (or a folder) of real images: inputs, int8 calibration, top-1 agreement")
    b.add_argument("--data_dir", "--data-dir", dest="data_dir", default=None, help="folder the list's paths are relative to")
    b.add_argument("--warmup", type=int, default=10)
    b.add_argument("--repeats", type=int, default=100)
    b.add_argument("--json", default=None, metavar="OUT", help="write the report as JSON to OUT")
    b.add_argument("--engine_cache", "--engine-cache", dest="engine_cache", default=None,
                   help="TensorRT engine cache folder (default ~/.cache/clasflow/engines)")
    b.add_argument("--gpu_id", "--gpu-id", dest="gpu_id", type=int, default=0)
    b.add_argument("--require-gpu", action="store_true", help=_REQUIRE_GPU_HELP)
    seed = b.add_argument_group("the seed's predict.py flags (translated to --backend/--device/--precision)")
    for flag in ("--use_gpu", "--use_tensorrt", "--use_fp16", "--enable_benchmark"):
        seed.add_argument(flag, nargs="?", const=True, default=None, type=_bool, metavar="BOOL")
    b.set_defaults(func=_benchmark)


# ------------------------------------------------------------------ report, tracking, loaders


def _compare(args: argparse.Namespace) -> int:
    from clasflow.lessons import check_lessons
    from clasflow.report import compare

    rep = compare(args.out, experiment=args.experiment, pipeline_run=args.pipeline_run, profile=args.profile,
                  tolerance=args.tolerance, attach_to_parent=args.attach)
    for r in rep.rows:
        print(f"{r.config:45s} best {r.best_top1:.4f}  published {r.published if r.published is not None else '-'}  {r.verdict}")
    lessons = check_lessons({r.config: r.best_top1 for r in rep.rows})
    for x in lessons:
        print(f"lesson: {x.claim}: {x.verdict}")
    for w in rep.warnings:
        print(f"warning: {w}", file=sys.stderr)
    print(f"report: {args.out}/report.html, {args.out}/report.md, {args.out}/top1_curves.png")
    if (rep.parity or {}).get("gate", {}).get("passed") is False:
        return 1
    if rep.profile == "full":
        return 1 if any(r.verdict == "fail" for r in rep.rows) else 0
    return 1 if any(x.verdict == "FAIL" for x in lessons) else 0


def _tracking_sync(args: argparse.Namespace) -> int:
    from clasflow.tracking import sync_journal

    print(f"sent {sync_journal(args.journal)} records from {args.journal}")
    return 0


def _bench_loader(args: argparse.Namespace) -> int:
    from clasflow.config import load_config
    from clasflow.data.bench import bench_loaders, figure_lines

    cfg = load_config(args.config, args.override, check_paths=True)
    section = cfg.TRAIN if args.section == "TRAIN" else cfg.VALID
    result = bench_loaders(section, loaders=tuple(args.loader.split(",")), batches=args.batches,
                           warmup=args.warmup, rounds=args.rounds, mode="train" if args.section == "TRAIN" else "eval")
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print("\n".join(figure_lines(result)))
    return 1 if any("error" in f for f in result.values()) else 0


def _add_misc(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compare", help="the run's report: Top1 against the published figures, export parity, warnings")
    p.add_argument("--experiment", default=None, help="default: $MLFLOW_EXPERIMENT_NAME or flowers102-quickstart")
    p.add_argument("--out", default="report")
    p.add_argument("--pipeline-run", default=None, help="only the runs of this pipeline run (tag clasflow.pipeline_run)")
    p.add_argument("--profile", default=None,
                   help="default: the runs' own (their clasflow.profile tag). full: judge pass/fail against the "
                        "published Top1; anything else (demo): judge the lessons only")
    p.add_argument("--tolerance", type=float, default=0.01, help="allowed Top1 shortfall (0.01 = 1 point)")
    p.add_argument("--attach", action="store_true", help="also log the report to the pipeline run's parent MLflow run")
    p.set_defaults(func=_compare)
    t = sub.add_parser("tracking", help="MLflow helpers")
    ts = t.add_subparsers(dest="tracking", required=True)
    s = ts.add_parser("sync", help="send a journal left by a run whose tracking server was down")
    s.add_argument("journal", help="an mlflow-journal.jsonl: a path, or the s3:// URI of the copy a pipeline step published")
    s.set_defaults(func=_tracking_sync)
    b = sub.add_parser("bench-loader", help="images/s and CPU-ms/image of the DALI and OpenCV loaders side by side")
    b.add_argument("-c", "--config", required=True)
    b.add_argument("-o", "--override", action="append", default=[])
    b.add_argument("--loader", default="dali,opencv", help="comma-separated: dali, dali-cpu, dali-mixed, opencv")
    b.add_argument("--section", default="TRAIN", choices=["TRAIN", "VALID"])
    b.add_argument("--batches", type=int, default=20, help="timed batches, after the first and --warmup more")
    b.add_argument("--warmup", type=int, default=2)
    b.add_argument("--rounds", type=int, default=1, help="alternate the loaders this many times; medians and ranges")
    b.add_argument("--json", action="store_true")
    b.set_defaults(func=_bench_loader)
    d = sub.add_parser("doctor", help="check this machine's stack for real (GPU, DALI, onnxruntime, TensorRT, NCCL, services)")
    d.add_argument("--require", choices=["gpu"], default=None, help="gpu: the GPU checks must pass (exit 1 without a GPU)")
    d.add_argument("--json", action="store_true", help="print the result as JSON")
    d.add_argument("--out", default=None, help="also write the JSON to this file")
    d.add_argument("--check", action="append", default=None, help="run only this check (repeatable)")
    d.set_defaults(func=_doctor)


def _doctor(args: argparse.Namespace) -> int:
    from clasflow.doctor import CHECKS, run

    unknown = [c for c in args.check or [] if c not in CHECKS]
    if unknown:
        raise ClasflowError(f"--check: {', '.join(unknown)} is not one of {', '.join(CHECKS)}")
    return run(require_gpu=args.require == "gpu", as_json=args.json, checks=args.check, out=args.out)


# ------------------------------------------------------------------ main


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="clasflow", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_dataset(sub)
    _add_zoo(sub)
    _add_train(sub)
    _add_misc(sub)
    _add_export(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    _cpu_threads()
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        return args.func(args)
    except ClasflowError as exc:
        print(f"clasflow: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # output piped into `head`
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())

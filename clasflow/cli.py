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
        size=args.size, seed=args.seed, archive=args.archive,
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
    print(f"demo zoo mirror (random weights, not trained) at {out}")
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
    m.add_argument("--demo", action="store_true", help="randomly initialised weights, clearly marked (offline runs)")
    m.set_defaults(func=_zoo_mirror)


# ------------------------------------------------------------------ main


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="clasflow", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_dataset(sub)
    _add_zoo(sub)
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

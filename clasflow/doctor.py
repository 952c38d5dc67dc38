"""`clasflow doctor [--require gpu] [--json]`: this machine's stack checked for real, each check in
its own subprocess with a timeout (a hung driver or a crashing library fails one row, not the
doctor), printed as a table (check, status, detail, seconds) or JSON.

Statuses: ``ok``, ``warn`` (works, with a caveat), ``failed``, ``n/a`` (a GPU check on a machine
without a GPU), ``skipped`` (a service that is not configured). With ``--require gpu`` the GPU
checks are requirements: ``n/a`` becomes ``failed``. Exit 1 when any check failed.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable
from urllib.parse import urlsplit

import numpy as np

SHM_MIN = 1 << 30  # below this, DALI and data-loader workers run short of shared memory
STATUSES = ("ok", "warn", "failed", "n/a", "skipped")


class NotApplicable(Exception):
    """This check needs a GPU and there is none."""


class Warn(Exception):
    """It works, with a caveat."""


@dataclass
class Row:
    check: str
    status: str
    detail: str
    seconds: float


def gpu_count() -> int:
    from clasflow.benchmark.cuda import CudaRuntime

    cuda = CudaRuntime.load()
    return cuda.device_count() if cuda is not None else 0


def _need_gpu(proven: str = "") -> int:
    """The GPU count; none: not applicable (`proven`: what the check showed before it needed one)."""
    n = gpu_count()
    if n == 0:
        raise NotApplicable(f"{proven}{'; ' if proven else ''}no GPU: the CUDA driver reports no device")
    return n


def _import_expected(package: str, absent: str, module: str | None = None):
    """Import `module` (default: `package`) where it is expected (`package` installed, or a GPU is
    here), before any GPU is needed: a failed import fails the row, also in the GPU image's build
    (no GPU). `package` absent on a machine without a GPU: not applicable."""
    try:
        installed = importlib.util.find_spec(package) is not None  # finds it without running it
    except ModuleNotFoundError:  # its parent package is absent
        installed = False
    if not installed and gpu_count() == 0:
        raise NotApplicable(f"no GPU, and {absent}")
    return importlib.import_module(module or package)


# ------------------------------------------------------------------ the checks (each runs in a subprocess)


def check_paddle() -> str:
    import paddle

    if gpu_count():
        if not paddle.is_compiled_with_cuda():
            raise RuntimeError("a GPU is here but PaddlePaddle is a CPU build: install paddlepaddle-gpu")
        paddle.utils.run_check()
        return (f"paddle {paddle.__version__}, {paddle.device.cuda.device_count()} GPU(s) "
                f"({paddle.device.cuda.get_device_name(0)}), CUDA {paddle.version.cuda()}, cuDNN {paddle.version.cudnn()}")
    x = paddle.to_tensor(np.arange(6, dtype=np.float32).reshape(2, 3))
    total = float((x @ x.T).sum())
    if total != 83.0:  # [[0,1,2],[3,4,5]] @ its transpose = [[5,14],[14,50]]
        raise RuntimeError(f"paddle computed {total} for a 2x3 matmul, expected 83")
    build = "CUDA build" if paddle.is_compiled_with_cuda() else "CPU build"
    return f"paddle {paddle.__version__} ({build}) on the CPU, {os.cpu_count()} cores"


def check_amp_step() -> str:
    import paddle

    gpu = gpu_count() > 0
    paddle.set_device("gpu" if gpu else "cpu")
    paddle.seed(0)
    net = paddle.nn.Sequential(paddle.nn.Conv2D(3, 8, 3), paddle.nn.Flatten(), paddle.nn.Linear(8 * 14 * 14, 10))
    opt = paddle.optimizer.Momentum(learning_rate=0.01, parameters=net.parameters())
    scaler = paddle.amp.GradScaler(enable=gpu, init_loss_scaling=1024)
    x = paddle.randn([4, 3, 16, 16])
    y = paddle.randint(0, 10, [4])
    before = net[2].weight.numpy().copy()
    with paddle.amp.auto_cast(enable=gpu, level="O1", dtype="float16"):
        loss = paddle.nn.functional.cross_entropy(net(x), y)
    scaler.scale(loss).backward()
    scaler.step(opt)
    scaler.update()
    value = float(loss)
    if not np.isfinite(value) or np.array_equal(before, net[2].weight.numpy()):
        raise RuntimeError(f"the training step did not update the weights (loss {value})")
    if gpu:
        return f"conv + matmul step under auto_cast O1 float16 with GradScaler (scale {float(scaler._scale):g}), loss {value:.3f}"
    raise Warn(f"conv + matmul step in fp32 (auto_cast and GradScaler are off without a GPU), loss {value:.3f}")


def _jpeg(folder: Path) -> tuple[Path, tuple[int, int, int]]:
    import cv2

    img = np.zeros((48, 64, 3), np.uint8)
    img[:, :32] = (255, 0, 0)
    ok, data = cv2.imencode(".jpg", img)
    path = folder / "check.jpg"
    path.write_bytes(data.tobytes())
    return path, img.shape


def check_dali() -> str:
    import nvidia.dali.fn as fn
    from nvidia.dali import pipeline_def

    from clasflow.data import dali_pipeline

    gpu = gpu_count() > 0
    with tempfile.TemporaryDirectory() as tmp:
        path, shape = _jpeg(Path(tmp))

        @pipeline_def(batch_size=1, num_threads=1, device_id=0 if gpu else None)
        def pipe():
            jpegs, _ = fn.readers.file(files=[str(path)])
            return fn.decoders.image(jpegs, device="mixed" if gpu else "cpu")

        p = pipe()
        p.build()
        (out,) = p.run()
        tensor = dali_pipeline._to_paddle(out)[0]  # as training hands batches over: DLPack, no host copy
    if tuple(tensor.shape) != shape:
        raise RuntimeError(f"DALI decoded a {shape} JPEG as {tuple(tensor.shape)}")
    if gpu and not tensor.place.is_gpu_place():
        raise RuntimeError(f"DALI's GPU batch reached Paddle on {tensor.place}, not on the GPU")
    import nvidia.dali

    where = 'device="mixed" (nvJPEG on the GPU)' if gpu else "the CPU pipeline"
    return (f"DALI {nvidia.dali.__version__} decoded a {shape[1]}x{shape[0]} JPEG with {where}, "
            f"handed to Paddle through DLPack ({tensor.place})")


def _tiny_onnx(path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.arange(12, dtype=np.float32).reshape(4, 3) / 10, "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"]), helper.make_node("Relu", ["y"], ["z"])],
                              "doctor", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
                              [helper.make_tensor_value_info("z", TensorProto.FLOAT, ["n", 3])], [w])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8), str(path))


def check_onnxruntime() -> str:
    import onnxruntime as ort

    gpu = gpu_count() > 0
    wanted = ["TensorrtExecutionProvider", "CUDAExecutionProvider"] if gpu else []
    with tempfile.TemporaryDirectory() as tmp:
        model = Path(tmp) / "tiny.onnx"
        _tiny_onnx(model)
        providers = [*wanted, "CPUExecutionProvider"]
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        session = ort.InferenceSession(str(model), opts, providers=providers)
        got = session.get_providers()  # what the session really loaded, not what the build lists
        x = np.ones((2, 4), np.float32)
        z = session.run(None, {"x": x})[0]
    expected = np.maximum(x @ (np.arange(12, dtype=np.float32).reshape(4, 3) / 10), 0)
    if not np.allclose(z, expected, atol=1e-3):
        raise RuntimeError(f"onnxruntime computed {z.tolist()}, expected {expected.tolist()}")
    missing = [p for p in wanted if p not in got]
    if missing:
        raise RuntimeError(f"onnxruntime {ort.__version__} session fell back: asked {providers}, loaded {got} "
                           f"({', '.join(missing)} could not load: check CUDA/cuDNN/TensorRT libraries)")
    return f"onnxruntime {ort.__version__}, session providers {got}"


def check_tensorrt() -> str:
    trt = _import_expected("tensorrt", "TensorRT is not installed")
    _need_gpu(f"TensorRT {trt.__version__} imports (libnvinfer loads)")
    from clasflow.benchmark.backend_tensorrt import major

    logger = trt.Logger(trt.Logger.WARNING)
    built = []
    with tempfile.TemporaryDirectory() as tmp:
        model = Path(tmp) / "tiny.onnx"
        _tiny_onnx(model)
        precisions = ["fp32", "fp16"] if major(trt.__version__) < 11 else ["fp32"]
        for precision in precisions:
            builder = trt.Builder(logger)
            network = builder.create_network(0)
            parser = trt.OnnxParser(network, logger)
            if not parser.parse(model.read_bytes()):
                raise RuntimeError(f"TensorRT's ONNX parser: {parser.get_error(0)}")
            config = builder.create_builder_config()
            if precision == "fp16":
                config.set_flag(trt.BuilderFlag.FP16)
            profile = builder.create_optimization_profile()
            profile.set_shape("x", (1, 4), (2, 4), (4, 4))
            config.add_optimization_profile(profile)
            blob = builder.build_serialized_network(network, config)
            if blob is None or trt.Runtime(logger).deserialize_cuda_engine(bytes(blob)) is None:
                raise RuntimeError(f"TensorRT {trt.__version__} could not build a {precision} engine")
            built.append(f"{precision} ({len(bytes(blob))} bytes)")
    note = "" if "fp16" in precisions[-1:] or len(precisions) == 2 else "; fp16 not built: TensorRT 11 is strongly typed"
    return f"TensorRT {trt.__version__} built engines: {', '.join(built)}{note}"


def trt_versions(compiled: tuple[int, ...], runtime: tuple[int, ...]) -> str:
    """Paddle's compiled-in TensorRT version against the one it loads: a different major (or none
    loaded) is an error naming both."""
    built, runs = ".".join(map(str, compiled)), ".".join(map(str, runtime))
    if not any(runtime):
        raise RuntimeError(f"Paddle (built with TensorRT {built}) cannot open libnvinfer.so")
    if compiled[0] != runtime[0]:
        raise RuntimeError(f"Paddle was built with TensorRT {built} but loads TensorRT {runs}: install TensorRT "
                           f"{compiled[0]} (the major Paddle was built with)")
    return f"Paddle built with TensorRT {built}, runs {runs}"


def check_paddle_trt() -> str:
    # paddle.tensorrt is in Paddle's CUDA builds only; importing it opens libnvinfer_plugin.so (ctypes.CDLL).
    _import_expected("paddle.tensorrt", "Paddle is a build without paddle.tensorrt", "paddle.tensorrt.export")
    import paddle.inference as pi

    versions = trt_versions(tuple(pi.get_trt_compile_version()), tuple(pi.get_trt_runtime_version()))
    _need_gpu(f"paddle.tensorrt loads; {versions}")
    return f"paddle.tensorrt loads; {versions}"


NCCL_SCRIPT = """
import paddle, paddle.distributed as dist
dist.init_parallel_env()
x = paddle.to_tensor([float(dist.get_rank() + 1)])
dist.all_reduce(x)
n = dist.get_world_size()
assert float(x) == n * (n + 1) / 2, float(x)
if dist.get_rank() == 0:
    print("ALLREDUCE_OK", n, float(x))
"""


def check_nccl() -> str:
    n = _need_gpu()
    if n < 2:
        raise NotApplicable(f"{n} GPU: an all-reduce needs two or more")
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "allreduce.py"
        script.write_text(NCCL_SCRIPT)
        proc = subprocess.run([sys.executable, "-m", "paddle.distributed.launch", "--log_dir", str(Path(tmp) / "log"),
                               "--gpus", ",".join(map(str, range(n))), str(script)],
                              capture_output=True, text=True, timeout=240)
        logs = "".join(p.read_text(errors="replace") for p in (Path(tmp) / "log").glob("*") if p.is_file())
    if proc.returncode != 0 or "ALLREDUCE_OK" not in proc.stdout + logs:
        raise RuntimeError(f"NCCL all-reduce over {n} GPUs failed: {(proc.stderr or logs).strip()[-400:]}")
    return f"NCCL all-reduce over {n} GPUs agrees"


def memory_limit(cgroup: Path = Path("/sys/fs/cgroup")) -> int | None:
    """This container's memory limit in bytes (cgroup v2 memory.max or v1 memory.limit_in_bytes); None: no limit."""
    for name in ("memory.max", "memory/memory.limit_in_bytes"):
        try:
            text = (cgroup / name).read_text().strip()
        except OSError:
            continue
        return None if text == "max" or int(text) >= 1 << 62 else int(text)  # v1 says "no limit" with ~2**63
    return None


def check_shm(path: str = "/dev/shm", cgroup: Path = Path("/sys/fs/cgroup")) -> str:
    """The tmpfs size, and the memory limit that bounds it: a memory-backed emptyDir's pages count
    against the container's memory limit (the pipeline's gpu_task_memory_limit), whatever df says."""
    st = os.statvfs(path)
    size = st.f_frsize * st.f_blocks
    text = f"{path} {size / (1 << 30):.1f} GiB ({st.f_frsize * st.f_bavail / (1 << 30):.1f} GiB free)"
    limit = memory_limit(cgroup)
    if limit is not None and limit < size:
        text += f", bounded by the container's memory limit {limit / (1 << 30):.1f} GiB (shared with the processes)"
    if min(size, limit or size) < SHM_MIN:
        raise Warn(f"{text}: below 1 GiB, DALI and loader workers may fail (mount a memory emptyDir on /dev/shm"
                   " and give the task a larger memory limit)")
    return text


def check_object_store() -> str:
    from clasflow import storage
    from clasflow.steps import ARTIFACT_ROOT_ENV

    root = os.environ.get(ARTIFACT_ROOT_ENV, "")
    if not root.startswith("s3://"):
        raise NotConfigured(f"{ARTIFACT_ROOT_ENV} names no s3:// location (artifacts stay local)")
    endpoint = storage.S3Config.from_env().endpoint  # no credentials in it
    keys = storage.list(storage.join(root, ".clasflow-doctor/"))  # bucket, credentials and network, for real
    return f"object store {endpoint} answers for {root} ({len(keys)} doctor keys)"


def check_mlflow() -> str:
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        raise NotConfigured("MLFLOW_TRACKING_URI is not set (runs go to a local sqlite store)")
    parts = urlsplit(uri)
    if parts.scheme not in ("http", "https"):
        return f"MLflow tracking store {parts.scheme}: (local)"
    import requests

    base = f"{parts.scheme}://{parts.hostname}{f':{parts.port}' if parts.port else ''}{parts.path.rstrip('/')}"  # no credentials
    try:
        answer = requests.get(f"{base}/health", timeout=10)
    except requests.RequestException as exc:
        raise RuntimeError(f"MLflow at {base} does not answer ({type(exc).__name__}): is the tracking server up "
                           "and MLFLOW_TRACKING_URI right?") from None
    if answer.status_code >= 400:
        raise RuntimeError(f"MLflow at {base} answered HTTP {answer.status_code} on /health")
    return f"MLflow at {base} answers /health ({answer.status_code})"


class NotConfigured(Exception):
    """A service this machine is not configured to use."""


# name -> (needs a GPU, check, timeout seconds)
CHECKS: dict[str, tuple[bool, Callable[[], str], int]] = {
    "paddle": (False, check_paddle, 300),
    "amp-step": (False, check_amp_step, 300),
    "dali": (False, check_dali, 180),
    "onnxruntime": (False, check_onnxruntime, 180),
    "tensorrt": (True, check_tensorrt, 600),
    "paddle-trt": (True, check_paddle_trt, 180),
    "nccl": (True, check_nccl, 300),
    "shm": (False, check_shm, 30),
    "object-store": (False, check_object_store, 60),
    "mlflow": (False, check_mlflow, 60),
}


def run_one(name: str) -> dict[str, str]:
    """Run one check in this process: {"status", "detail"}."""
    try:
        return {"status": "ok", "detail": CHECKS[name][1]()}
    except NotApplicable as exc:
        return {"status": "n/a", "detail": str(exc)}
    except NotConfigured as exc:
        return {"status": "skipped", "detail": str(exc)}
    except Warn as exc:
        return {"status": "warn", "detail": str(exc)}
    except Exception as exc:
        return {"status": "failed", "detail": f"{type(exc).__name__}: {exc}".strip()[:600]}


def run_check(name: str, timeout: float | None = None) -> Row:
    """One check in its own subprocess (``python -m clasflow.doctor --one NAME``)."""
    timeout = timeout or CHECKS[name][2]
    started = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, "-m", "clasflow.doctor", "--one", name], capture_output=True,
                              text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return Row(name, "failed", f"timed out after {timeout:g} s", time.perf_counter() - started)
    seconds = time.perf_counter() - started
    last = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
    try:
        result = json.loads(last)
    except json.JSONDecodeError:
        tail = (proc.stderr or proc.stdout).strip()[-400:]
        return Row(name, "failed", f"the check process exited {proc.returncode}: {tail}", seconds)
    return Row(name, result["status"], result["detail"], seconds)


def doctor(require_gpu: bool = False, checks: list[str] | None = None) -> list[Row]:
    rows = []
    for name in checks or list(CHECKS):
        row = run_check(name)
        if require_gpu and row.status == "n/a" and CHECKS[name][0]:
            if not (name == "nccl" and "needs two or more" in row.detail):
                row.status, row.detail = "failed", f"--require gpu: {row.detail}"
        rows.append(row)
    return rows


def print_rows(rows: list[Row]) -> None:
    from rich.console import Console
    from rich.table import Table

    colours = {"ok": "green", "warn": "yellow", "failed": "red", "n/a": "dim", "skipped": "dim"}
    table = Table(title="clasflow doctor")
    for col in ("check", "status", "detail", "seconds"):
        table.add_column(col, justify="right" if col == "seconds" else "left", overflow="fold")
    for r in rows:
        table.add_row(r.check, f"[{colours[r.status]}]{r.status}[/]", r.detail, f"{r.seconds:.1f}")
    Console(width=max(120, os.get_terminal_size().columns if sys.stdout.isatty() else 140)).print(table)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="clasflow doctor", description=__doc__.splitlines()[0])
    parser.add_argument("--require", choices=["gpu"], default=None, help="gpu: the GPU checks must pass")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    parser.add_argument("--check", action="append", choices=list(CHECKS), help="run only these checks")
    parser.add_argument("--out", default=None, help="also write the JSON here")
    parser.add_argument("--one", choices=list(CHECKS), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(run_one(args.one)))
        return 0
    return run(require_gpu=args.require == "gpu", as_json=args.json, checks=args.check, out=args.out)


def run(*, require_gpu: bool = False, as_json: bool = False, checks: list[str] | None = None,
        out: str | None = None) -> int:
    rows = doctor(require_gpu, checks)
    failed = [r.check for r in rows if r.status == "failed"]
    report = {"schema": "clasflow.doctor/1", "require_gpu": require_gpu, "ok": not failed,
              "rows": [asdict(r) for r in rows]}
    if out:
        from clasflow.fsutil import write_text_atomic

        write_text_atomic(out, json.dumps(report, indent=2) + "\n")
    if as_json:
        print(json.dumps(report, indent=2))
    else:
        print_rows(rows)
    if failed:
        print(f"clasflow doctor: failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

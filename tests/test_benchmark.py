"""The benchmark stage on the CPU (paddle + onnxruntime) and its GPU/TensorRT skip paths."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from clasflow.cli import main
from tests.test_export import make_checkpoint, write_images

SIZE = 32
FAST = ["--warmup", "1", "--repeats", "3"]


def _gpu_here() -> bool:
    import paddle

    return paddle.is_compiled_with_cuda() and paddle.device.cuda.device_count() > 0


def _tensorrt_here() -> bool:
    try:
        import tensorrt  # noqa: F401
    except Exception:
        return False
    return True


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    from clasflow.export import export_model

    root = tmp_path_factory.mktemp("bench")
    ckpt = make_checkpoint("MobileNetV3_large_x1_0", root / "ckpt", kaiming=True)
    export_model(arch="MobileNetV3_large_x1_0", output_path=root / "model", pretrained_model=ckpt,
                 image_size=SIZE, onnx=True)
    return root / "model"


@pytest.fixture(scope="module")
def image_list(tmp_path_factory) -> tuple[Path, Path]:
    data = tmp_path_factory.mktemp("bench_data")
    paths = write_images(data / "jpg", n=5, seed=3)
    lst = data / "val_list.txt"
    lst.write_text("".join(f"jpg/{p.name} {i}\n" for i, p in enumerate(paths)))
    return lst, data


def run_cli(capsys, argv):
    capsys.readouterr()
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cpu_paddle_and_onnxruntime_report(model_dir, image_list, tmp_path, capsys):
    lst, data = image_list
    out = tmp_path / "bench.json"
    code, stdout, err = run_cli(capsys, ["benchmark", "--model_dir", str(model_dir), "--backend", "paddle,onnxruntime",
                                         "--device", "cpu", "--precision", "fp32", "--batch_size", "1,2", "--threads", "2",
                                         "--image_list", str(lst), "--data_dir", str(data), "--json", str(out), *FAST])
    assert code == 0, err
    report = json.loads(out.read_text())
    assert report["schema"] == "clasflow.benchmark/1"
    assert report["model"]["architecture"] == "MobileNetV3_large_x1_0"
    assert report["model"]["input_shape"] == [-1, 3, SIZE, SIZE]
    # 2 of the 5 images are TensorRT's int8 calibration set, the other 3 are held out for the agreement
    assert report["inputs"] == {"kind": "images", "count": 5, "list": str(lst), "calibration_images": 2,
                                "held_out_images": 3, "export_calibration_excluded": None}
    assert report["versions"]["paddlepaddle"] and report["versions"]["onnxruntime"]
    assert "tensorrt" in report["versions"] and "nvidia_driver" in report["versions"]
    assert report["device"]["cpu"] and report["device"]["threads"] == 2
    assert report["summary"] == {"ok": 4, "skipped": 0, "failed": 0}
    seen = set()
    for r in report["results"]:
        assert r["status"] == "ok" and r["device"] == "cpu" and r["precision"] == "fp32"
        lat = r["latency_ms"]
        assert 0 < lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]
        assert lat["mean"] > 0 and r["throughput_ips"] == pytest.approx(r["batch_size"] * 1000 / lat["mean"])
        assert r["build_s"] > 0 and r["warmup_s"] > 0 and r["first_run_ms"] > 0
        seen.add((r["backend"], r["batch_size"]))
    assert seen == {("paddle", 1), ("paddle", 2), ("onnxruntime", 1), ("onnxruntime", 2)}
    paddle_bs1 = next(r for r in report["results"] if r["backend"] == "paddle" and r["batch_size"] == 1)
    assert paddle_bs1["options"]["onednn"] is True
    ort = next(r for r in report["results"] if r["backend"] == "onnxruntime")
    assert ort["agreement_reference"] == "paddle/cpu/fp32" and ort["agreement_images"] == 3
    assert ort["top1_agreement_vs_fp32"] == 1.0  # same fp32 graph, O(1) logits
    assert "mean ms" in stdout and "onnxruntime" in stdout  # the printed table


def test_gpu_and_tensorrt_skip_with_reasons_but_command_succeeds(model_dir, tmp_path, capsys):
    if _gpu_here():
        pytest.skip("a GPU is present: the skip paths are not what runs here")
    out = tmp_path / "bench.json"
    code, stdout, err = run_cli(capsys, [
        "benchmark", "--model_dir", str(model_dir), "--backend", "paddle,paddle-trt,onnxruntime-trt,tensorrt",
        "--device", "cpu,gpu", "--precision", "fp32,fp16,int8", "--batch_size", "1", "--json", str(out), *FAST])
    assert code == 0, err
    report = json.loads(out.read_text())
    ok = [r for r in report["results"] if r["status"] == "ok"]
    assert [(r["backend"], r["device"], r["precision"]) for r in ok] == [("paddle", "cpu", "fp32")]
    skipped = [r for r in report["results"] if r["status"] == "skipped"]
    assert len(skipped) == 4 * 2 * 3 - 1 and all(r["reason"] for r in skipped)
    reason = {(r["backend"], r["device"], r["precision"]): r["reason"] for r in skipped}
    assert "CPU build" in reason[("paddle", "gpu", "fp32")]
    assert "--device gpu" in reason[("tensorrt", "cpu", "fp16")]
    if not _tensorrt_here():
        assert "tensorrt" in reason[("tensorrt", "gpu", "fp16")]
    assert "calibrat" in reason[("tensorrt", "gpu", "int8")]
    assert "--int8_calib" in reason[("paddle-trt", "gpu", "int8")]  # this export has no int8/ model
    assert "paddle-trt" in reason[("paddle", "cpu", "int8")] and "paddle-trt" in reason[("paddle", "gpu", "int8")]
    assert "skipped" in stdout


def test_exit_nonzero_when_nothing_ran(model_dir, tmp_path, capsys):
    if _gpu_here() and _tensorrt_here():
        pytest.skip("TensorRT and a GPU are present")
    out = tmp_path / "bench.json"
    code, _, err = run_cli(capsys, ["benchmark", "--model_dir", str(model_dir), "--backend", "tensorrt",
                                    "--device", "gpu", "--precision", "fp16", "--json", str(out), *FAST])
    assert code == 2 and "nothing could run" in err and "tensorrt/gpu/fp16" in err
    report = json.loads(out.read_text())  # the report is still written
    assert report["summary"]["ok"] == 0 and report["results"][0]["status"] == "skipped"


def test_seed_flags_are_translated(model_dir, capsys):
    code, _, err = run_cli(capsys, ["benchmark", "--enable_benchmark", "--use_tensorrt", "--use_fp16",
                                    "--batch_size", "4", "-m", str(model_dir), *FAST])
    assert "--backend paddle-trt --device gpu --precision fp16" in err
    if not _gpu_here():
        assert code == 2
    code, stdout, err = run_cli(capsys, ["benchmark", "-m", str(model_dir), "--use_gpu", "False", "--enable_benchmark",
                                         "True", "--batch_size", "1", *FAST])
    assert code == 0, err
    assert "--device cpu" in err and "paddle" in stdout


def test_bad_arguments(model_dir, capsys):
    code, _, err = run_cli(capsys, ["benchmark", "--model_dir", str(model_dir), "--backend", "tensorflow"])
    assert code == 2 and "tensorflow" in err
    code, _, err = run_cli(capsys, ["benchmark", "--model_dir", str(model_dir), "--batch_size", "1,x"])
    assert code == 2 and "batch_size" in err
    code, _, err = run_cli(capsys, ["benchmark", "--model_dir", str(model_dir.parent / "missing")])
    assert code == 2 and "missing" in err


def test_mlflow_metrics_go_to_the_active_run(monkeypatch, tmp_path):
    from clasflow import benchmark

    report = {
        "results": [
            {"backend": "paddle", "device": "cpu", "precision": "fp32", "batch_size": 1, "status": "ok",
             "latency_ms": {"mean": 2.0, "p50": 1.9, "p90": 2.5, "p99": 3.0}, "throughput_ips": 500.0,
             "build_s": 1.0, "warmup_s": 0.1, "top1_agreement_vs_fp32": None},
            {"backend": "paddle-trt", "device": "gpu", "precision": "fp16", "batch_size": 4, "status": "ok",
             "latency_ms": {"mean": 1.0, "p50": 1.0, "p90": 1.0, "p99": 1.0}, "throughput_ips": 4000.0,
             "build_s": 20.0, "warmup_s": 0.5, "top1_agreement_vs_fp32": 0.99},
            {"backend": "tensorrt", "device": "gpu", "precision": "fp16", "batch_size": 1, "status": "skipped",
             "reason": "no GPU"},
        ],
        "device": {"cpu": "x", "gpu": None}, "versions": {},
    }
    logged: dict = {}
    fake = types.SimpleNamespace(active_run=lambda: None, log_metrics=lambda m: logged.update(m),
                                 log_artifact=lambda p: logged.setdefault("artifact", p), set_tags=lambda t: None)
    monkeypatch.setitem(__import__("sys").modules, "mlflow", fake)
    assert benchmark.log_to_mlflow(report) is False and not logged  # no active run: nothing logged
    fake.active_run = lambda: object()
    assert benchmark.log_to_mlflow(report, tmp_path / "b.json") is True
    assert logged["benchmark/latency_ms_p50.paddle.fp32.bs1"] == 1.9
    assert logged["benchmark/throughput_ips.paddle.fp32.bs1"] == 500.0
    assert logged["benchmark/latency_ms_p99.paddle-trt.gpu.fp16.bs4"] == 1.0
    assert logged["benchmark/top1_agreement.paddle-trt.gpu.fp16.bs4"] == 0.99
    assert not any("tensorrt." in k for k in logged)
    assert logged["artifact"] == str(tmp_path / "b.json")


def test_engine_key_and_seed_translation_units():
    from clasflow.benchmark import engine_key, translate_seed_flags
    from clasflow.errors import ClasflowError

    key = engine_key("ab" * 32, "fp16", (1, 4, 4), (224, 224), "10.3.0", "NVIDIA H100 80GB HBM3")
    assert key.startswith("abababababababab_fp16_bs1-4-4_224x224_trt10.3.0_NVIDIA-H100-80GB-HBM3")
    assert key != engine_key("ab" * 32, "fp32", (1, 4, 4), (224, 224), "10.3.0", "NVIDIA H100 80GB HBM3")
    assert key != engine_key("ab" * 32, "fp16", (1, 8, 8), (224, 224), "10.3.0", "NVIDIA H100 80GB HBM3")
    assert key != engine_key("ab" * 32, "fp16", (1, 4, 4), (224, 224), "8.6.1", "NVIDIA H100 80GB HBM3")
    assert translate_seed_flags(use_gpu=None, use_tensorrt=None, use_fp16=None, enable_benchmark=None) == ({}, None)
    values, note = translate_seed_flags(use_gpu=True, use_tensorrt=False, use_fp16=True, enable_benchmark=True)
    assert values == {"device": "gpu", "precision": "fp16"} and "--use_fp16 True" in note
    with pytest.raises(ClasflowError):
        translate_seed_flags(use_gpu=False, use_tensorrt=True, use_fp16=None, enable_benchmark=None)


def test_bench_cpu_side_by_side(tmp_path):
    from clasflow.benchmark import bench_cpu

    out = tmp_path / "cpu.json"
    figures = bench_cpu(out, archs=["MobileNetV3_large_x1_0"], image_size=SIZE, batch_sizes=(1, 2), warmup=1,
                        repeats=2, threads=2, work_dir=tmp_path, print_results=False)
    assert json.loads(out.read_text())["schema"] == "clasflow.bench-cpu/1"
    rows = figures["table"]
    assert [(r["architecture"], r["batch_size"]) for r in rows] == [("MobileNetV3_large_x1_0", 1), ("MobileNetV3_large_x1_0", 2)]
    assert all(r["paddle_ms_p50"] > 0 and r["onnxruntime_ms_p50"] > 0 for r in rows)
    assert set(figures["models"]["MobileNetV3_large_x1_0"]["export_max_abs_diff"]) == {"paddle_inference", "onnxruntime"}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("clasflow-bench-")]  # its exports are cleaned up


def test_cuda_runtime_through_cuda_python_without_a_gpu(caplog):
    """cuda-bindings imports here; with no driver every call reports it instead of crashing."""
    from clasflow.benchmark.cuda import CudaError, CudaRuntime, gpu_tag, version_text

    if _gpu_here():
        pytest.skip("a GPU is present")
    cuda = CudaRuntime.load()
    assert cuda is not None  # cuda-bindings is in the lock
    assert cuda.device_count() == 0
    assert cuda.device_name(0) is None and cuda.compute_capability(0) is None
    assert cuda.runtime_version() == "12.9"  # the runtime cuda-bindings 12.9 carries
    with pytest.raises(CudaError, match="cudaMalloc"):
        cuda.malloc(16)
    with caplog.at_level("WARNING", logger="clasflow.benchmark.cuda"):
        assert gpu_tag(0) == "gpu0"
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [(
        "WARNING", "GPU 0: its name cannot be read (the CUDA runtime reports no device name): engine caches are keyed "
        "'gpu0', not by GPU model and compute capability; clear the engine cache when the GPU model changes")]
    assert version_text(12060) == "12.6" and version_text(13000) == "13.0"


def test_open_backend_gives_logits(model_dir):
    from clasflow.benchmark import Skip, make_context, open_backend

    ctx = make_context(model_dir, max_batch=2, threads=2)
    batch = np.random.default_rng(0).standard_normal((2, 3, SIZE, SIZE)).astype(np.float32)
    logits = {}
    for backend in ("paddle", "onnxruntime"):
        runner, _ = open_backend(ctx, backend)
        logits[backend] = runner.run(batch)
        runner.close()
    assert logits["paddle"].shape == (2, ctx.meta["class_num"])
    np.testing.assert_allclose(logits["paddle"], logits["onnxruntime"], rtol=1e-3, atol=1e-3)
    with pytest.raises(Skip, match="--device gpu"):
        open_backend(ctx, "tensorrt", "cpu")


def test_benchmark_step_fails_when_it_measured_nothing_useful(model_dir, tmp_path, monkeypatch):
    """The pipeline's step: no `ok` result fails it, after its counts and reasons are recorded
    (step metrics, its MLflow run, the report's warnings)."""
    from mlflow.tracking import MlflowClient

    from clasflow import steps
    from clasflow.errors import ClasflowError
    from clasflow.report import gather

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    for name in ("MLFLOW_RUN_ID", "CLASFLOW_PROFILE", "CLASFLOW_PIPELINE_RUN", "MLFLOW_EXPERIMENT_NAME"):
        monkeypatch.setenv(name, "")  # what the step's Profile.env() sets is undone after the test
        monkeypatch.delenv(name)
    profile = steps.Profile("demo", experiment="bench-gate", pipeline_run="gate-1")
    with pytest.raises(ClasflowError, match=r"(?s)benchmark measured nothing useful \(no result is ok.*paddle-trt/cpu/fp32: skipped"):
        steps.benchmark_step(str(model_dir), str(tmp_path / "bench.json"), "", "paddle-trt", "fp32", "1", repeats=2,
                             profile=profile, journal_dir=str(tmp_path / "journal"))
    assert json.loads((tmp_path / "bench.json").read_text())["summary"] == {"ok": 0, "skipped": 1, "failed": 0}
    client = MlflowClient(uri)
    run = client.search_runs([client.get_experiment_by_name("bench-gate").experiment_id], "tags.`clasflow.stage` = 'benchmark'")[0]
    assert {k: run.data.metrics[k] for k in ("benchmark/ok", "benchmark/skipped", "benchmark/failed")} == {
        "benchmark/ok": 0, "benchmark/skipped": 1, "benchmark/failed": 0}
    assert run.data.tags["clasflow.benchmark.skipped.paddle-trt.fp32.bs1"] not in ("", "None")  # the reason
    warnings = gather("bench-gate", "gate-1", "demo", 0.01).warnings  # what the report lists
    assert "benchmark on cpu: 0 ok, 1 skipped, 0 failed" in warnings, warnings
    assert any(w.startswith("benchmark: paddle-trt/cpu/fp32 skipped: ") for w in warnings), warnings

    metrics = steps.benchmark_step(str(model_dir), str(tmp_path / "ok.json"), "", "paddle,paddle-trt", "fp32", "1", repeats=2,
                                   profile=profile, journal_dir=str(tmp_path / "journal2"))
    assert metrics == {"ok": 1.0, "skipped": 1.0, "failed": 0.0, "gpu_ok": 0.0, "mlflow_pending": 0.0}  # one ok on the CPU: passes


def test_held_out_images_never_calibrated():
    from clasflow.benchmark.runner import split_images

    hashes = [f"h{i}" for i in range(10)]
    calib, held = split_images(hashes, None, 32)
    assert calib == [0, 2, 4, 6, 9] and held == [1, 3, 5, 7, 8]  # half, spread over the list
    calib, held = split_images(hashes, ["h0", "h1", "h2", "h3"], 2)  # the export calibrated on h0..h3
    assert calib == [4, 9] and held == [5, 6, 7, 8]
    assert not set(calib) & set(held)
    assert split_images(["a"], None, 32) == ([], [0])
    assert split_images(["a", "b"], ["a", "b"], 32) == ([], [])


def test_paddle_trt_converts_in_its_final_folder(tmp_path):
    """The converted program records its engines' paths: conversion happens in the cache folder
    itself, is reused by a new process, and a half-converted folder is converted again."""
    from clasflow.benchmark.backend_paddle_trt import COMPLETE, converted_folder

    calls = []

    def convert(into):
        calls.append(into)
        (into / "inference.json").write_text(json.dumps({"engine": str(into / "engine_0.trt")}))
        (into / "inference.pdiparams").write_bytes(b"p")
        (into / "engine_0.trt").write_bytes(b"e")

    folder = tmp_path / "engines" / "paddle_key_fp16"
    assert converted_folder(folder, convert) == "miss" and calls == [folder]
    assert json.loads((folder / "inference.json").read_text())["engine"] == str(folder / "engine_0.trt")
    assert (folder / COMPLETE).is_file()
    code = ("import sys; from pathlib import Path; from clasflow.benchmark.backend_paddle_trt import converted_folder; "
            "print(converted_folder(Path(sys.argv[1]), lambda into: sys.exit('converted again')))")
    proc = subprocess.run([sys.executable, "-c", code, str(folder)], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.strip() == "hit", proc.stderr
    (folder / COMPLETE).unlink()  # a conversion that died half-way
    assert converted_folder(folder, convert) == "miss" and len(calls) == 2

    def broken(into):
        (into / "inference.json").write_text("{}")
        raise RuntimeError("TensorRT failed")

    other = tmp_path / "engines" / "paddle_key_fp32"
    with pytest.raises(RuntimeError, match="TensorRT failed"):
        converted_folder(other, broken)
    assert not other.exists()
    with pytest.raises(RuntimeError, match="expected"):
        converted_folder(other, lambda into: None)


def test_onnxruntime_trt_cache_key_holds_versions_and_gpu(model_dir, tmp_path):
    from clasflow.benchmark import make_context
    from clasflow.benchmark.backend_onnxruntime import ort_trt_cache_name

    ctx = make_context(model_dir, max_batch=4, engine_cache=tmp_path)
    base = ort_trt_cache_name(ctx, "fp16", "1.26.0", "10.13.3.9", "NVIDIA A100-SXM4-40GB sm8.0")
    assert base.startswith("ort_" + ctx.model_hash()[:16] + "_fp16_bs1-4-4_32x32_trtort1.26.0-trt10.13.3.9")
    assert base.endswith("NVIDIA-A100-SXM4-40GB-sm8.0")
    others = {ort_trt_cache_name(ctx, "fp32", "1.26.0", "10.13.3.9", "NVIDIA A100-SXM4-40GB sm8.0"),
              ort_trt_cache_name(ctx, "fp16", "1.27.0", "10.13.3.9", "NVIDIA A100-SXM4-40GB sm8.0"),
              ort_trt_cache_name(ctx, "fp16", "1.26.0", "10.16.1.11", "NVIDIA A100-SXM4-40GB sm8.0"),
              ort_trt_cache_name(ctx, "fp16", "1.26.0", "10.13.3.9", "NVIDIA H100 80GB HBM3 sm9.0"),
              ort_trt_cache_name(ctx, "fp16", "1.26.0", "10.13.3.9", "NVIDIA A100-SXM4-40GB sm8.6")}
    assert base not in others and len(others) == 5


def test_paddle_trt_cache_key_holds_versions_and_gpu(model_dir, tmp_path):
    from clasflow.benchmark import make_context
    from clasflow.benchmark.backend_paddle_trt import paddle_trt_cache_name

    ctx = make_context(model_dir, max_batch=4, engine_cache=tmp_path)
    a100 = "NVIDIA A100-SXM4-40GB sm8.0"
    base = paddle_trt_cache_name(ctx, "ab" * 32, "fp16", "3.3.1", "10.13.3.9", a100)
    assert base == "paddle_" + "ab" * 8 + "_fp16_bs1-4-4_32x32_trtpaddle3.3.1-trt10.13.3.9_NVIDIA-A100-SXM4-40GB-sm8.0"
    others = {paddle_trt_cache_name(ctx, "cd" * 32, "fp16", "3.3.1", "10.13.3.9", a100),
              paddle_trt_cache_name(ctx, "ab" * 32, "fp32", "3.3.1", "10.13.3.9", a100),
              paddle_trt_cache_name(ctx, "ab" * 32, "fp16", "3.2.2", "10.13.3.9", a100),  # another Paddle
              paddle_trt_cache_name(ctx, "ab" * 32, "fp16", "3.3.1", "10.16.1.11", a100),
              paddle_trt_cache_name(ctx, "ab" * 32, "fp16", "3.3.1", "10.13.3.9", "NVIDIA H100 80GB HBM3 sm9.0")}
    assert base not in others and len(others) == 5


FAKE_TRT11 = """
__version__ = "11.0.0.114"
calls = []
class Logger:
    WARNING = 2
    def __init__(self, level): pass
class NetworkDefinitionCreationFlag:  # TensorRT 11: EXPLICIT_BATCH is gone
    STRONGLY_TYPED = 1
class BuilderFlag:  # TensorRT 11: no FP16, no INT8
    DEBUG = 0
class MemoryPoolType:
    WORKSPACE = 0
class _Input:
    name = "x"
class _Network:
    def get_input(self, i): return _Input()
class _Profile:
    def set_shape(self, *a): calls.append(("set_shape",) + a)
class _Config:
    def set_memory_pool_limit(self, *a): pass
    def set_flag(self, flag): calls.append(("set_flag", flag))
    def add_optimization_profile(self, p): pass
class Builder:
    def __init__(self, logger): pass
    def create_network(self, flags): calls.append(("create_network", flags)); return _Network()
    def create_builder_config(self): return _Config()
    def create_optimization_profile(self): return _Profile()
    def build_serialized_network(self, network, config): calls.append(("build",)); return b"engine"
class OnnxParser:
    num_errors = 0
    def __init__(self, network, logger): pass
    def parse(self, data): calls.append(("parse", len(data))); return True
"""


def test_tensorrt_11_skips_fp16_and_int8_and_builds_fp32(model_dir, tmp_path):
    """Only the GPU library is replaced: a `tensorrt` 11.0 with TensorRT 11's builder surface
    (no FP16/INT8 flags, no EXPLICIT_BATCH), imported by the real backend in a subprocess."""
    fake = tmp_path / "fake"
    fake.mkdir()
    (fake / "tensorrt.py").write_text(FAKE_TRT11)
    code = f"""
import json, sys
import numpy as np
import tensorrt
from clasflow.benchmark import Skip, make_context, open_backend
from clasflow.benchmark.backend_tensorrt import TensorRTRunner
ctx = make_context({str(model_dir)!r}, max_batch=2, engine_cache={str(tmp_path / "cache")!r},
                   calib=np.zeros((2, 3, 32, 32), np.float32))
out = {{}}
for precision in ("fp16", "int8", "fp32"):
    try:
        open_backend(ctx, "tensorrt", "gpu", precision)
    except Skip as exc:
        out[precision] = str(exc)
runner = TensorRTRunner.__new__(TensorRTRunner)  # the fp32 build itself, without a GPU
runner.trt, runner.logger = tensorrt, tensorrt.Logger(2)
out["blob"] = runner._build(ctx.onnx_file(), "fp32", ctx.profile, ctx.hw).decode()
out["calls"] = [list(map(str, c)) for c in tensorrt.calls]
print(json.dumps(out))
"""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(fake), str(Path(__file__).resolve().parents[1])])}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    for precision in ("fp16", "int8"):
        assert "TensorRT 11.0.0.114 builds strongly typed networks only" in out[precision]
        assert "fp32 runs" in out[precision]
    assert "strongly typed" not in out["fp32"] and "no CUDA device 0 visible" in out["fp32"]  # fp32 went on
    assert out["blob"] == "engine"
    names = [c[0] for c in out["calls"]]
    assert names == ["create_network", "parse", "set_shape", "build"] and out["calls"][0] == ["create_network", "0"]

"""The benchmark stage: latency and throughput of an exported model per backend, precision and
batch size, with the versions and device they were measured on.

One module per backend (``--backend``, comma list), each with ``make(ctx, device, precision) ->
(runner, options)``; a runner takes a preprocessed float32 batch and returns the logits:

* ``paddle`` -- `backend_paddle`: Paddle Inference, CPU (oneDNN) or GPU (fp32, fp16);
* ``paddle-trt`` -- `backend_paddle_trt`: Paddle Inference with TensorRT engines from
  ``paddle.tensorrt.convert`` (fp32, fp16, int8 from the export's calibrated ``int8/`` model);
* ``onnxruntime`` / ``onnxruntime-trt`` -- `backend_onnxruntime`: ``model.onnx`` on the CPU, CUDA
  or TensorRT execution provider;
* ``tensorrt`` -- `backend_tensorrt`: a native TensorRT engine built from ``model.onnx``.

Shared parts: `common` (settings, context, runner interface, engine-cache key), `cuda` (CUDA
runtime calls through cuda-python), `environment` (versions and device), `runner` (the timed
runs and the report), `report` (JSON, MLflow, table), `cli` and `bench_cpu` (`make bench`).
``open_backend(make_context(model_dir), "onnxruntime")`` gives one backend's runner alone.
"""

from clasflow.benchmark.bench_cpu import BENCH_ARCHS, bench_cpu
from clasflow.benchmark.cli import main, parse_batch_sizes, parse_choices, translate_seed_flags
from clasflow.benchmark.common import (BACKENDS, DEVICES, PRECISIONS, BenchSettings, Context, Runner, Skip,
                                       default_engine_cache, engine_key, file_sha256)
from clasflow.benchmark.environment import environment
from clasflow.benchmark.report import log_to_mlflow, metric_tag, mlflow_metrics, print_table, write_report
from clasflow.benchmark.runner import MAKERS, SCHEMA, make_context, measure, open_backend, run_benchmark

__all__ = [
    "BACKENDS", "BENCH_ARCHS", "DEVICES", "MAKERS", "PRECISIONS", "SCHEMA", "BenchSettings", "Context", "Runner", "Skip",
    "bench_cpu", "default_engine_cache", "engine_key", "environment", "file_sha256", "log_to_mlflow", "main",
    "make_context", "measure", "metric_tag", "mlflow_metrics", "open_backend", "parse_batch_sizes", "parse_choices",
    "print_table", "run_benchmark", "translate_seed_flags", "write_report",
]

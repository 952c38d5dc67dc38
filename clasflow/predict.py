"""The predict stage: classify images with an exported model, preprocessing exactly as
``inference.yml`` says (the same operators as evaluation: decode, resize short side, center
crop, normalize, CHW).

`PaddleRunner` (Paddle Inference: CPU with oneDNN, GPU) and
`OrtRunner` (onnxruntime) are shared with the benchmark stage.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import yaml

from clasflow.errors import ClasflowError, DataError

log = logging.getLogger(__name__)

META_FILE = "inference.yml"
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
BACKENDS = ("paddle", "onnxruntime")


def default_threads() -> int:
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


# ------------------------------------------------------------------ the exported model


def load_meta(model_dir: str | os.PathLike, *, need: Sequence[str] = ("model", "params")) -> dict[str, Any]:
    """Read and check ``MODEL_DIR/inference.yml`` and that the files it names exist."""
    d = Path(model_dir)
    if not d.is_dir():
        raise ClasflowError(f"model dir {str(d)!r} not found (write one with `clasflow export ... --output_path {d}`)")
    meta_file = d / META_FILE
    if not meta_file.is_file():
        raise ClasflowError(f"{meta_file} not found: {d} is not a clasflow export (run `clasflow export` first)")
    try:
        meta = yaml.safe_load(meta_file.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ClasflowError(f"{meta_file}: cannot read it: {exc}") from None
    if not isinstance(meta, dict) or "PreProcess" not in meta or "class_num" not in meta:
        raise ClasflowError(f"{meta_file}: not a clasflow inference.yml (no PreProcess/class_num)")
    files = meta.get("files") or {}
    for key in need:
        name = files.get(key)
        if not name:
            hint = " (export with --onnx)" if key == "onnx" else ""
            raise ClasflowError(f"{meta_file}: this export has no {key} file{hint}")
        if not (d / name).is_file():
            hint = " (export with --onnx)" if key == "onnx" else ""
            raise ClasflowError(f"{d / name} not found{hint}")
    return meta


def model_file(model_dir: str | os.PathLike, meta: dict[str, Any], key: str) -> Path:
    return Path(model_dir) / meta["files"][key]


# ------------------------------------------------------------------ preprocessing


def build_preprocess(meta: dict[str, Any]) -> Callable[[bytes], np.ndarray]:
    """encoded image bytes -> float32 CHW array, as the export's eval transforms do."""
    from clasflow.data import transforms as T

    pre = meta["PreProcess"]
    ops: list[Any] = [T.DecodeImage(to_rgb=str(pre.get("channel_order", "RGB")).upper() == "RGB")]
    interp = pre.get("interpolation") or None
    if pre.get("resize_short"):
        ops.append(T.ResizeImage(resize_short=int(pre["resize_short"]), interpolation=interp))
    elif pre.get("resize_size"):
        ops.append(T.ResizeImage(size=list(pre["resize_size"]), interpolation=interp))
    if pre.get("crop_size"):
        ops.append(T.CropImage(size=list(pre["crop_size"])))
    ops.append(T.NormalizeImage(scale=float(pre.get("scale", 1 / 255)), mean=list(pre["mean"]), std=list(pre["std"])))
    ops.append(T.ToCHWImage())

    def run(data: bytes) -> np.ndarray:
        return np.ascontiguousarray(T.apply_ops(ops, data), dtype=np.float32)

    return run


def load_image(path: str | os.PathLike, preprocess: Callable[[bytes], np.ndarray]) -> np.ndarray:
    from clasflow.fsutil import read_bytes

    p = Path(path)
    data = read_bytes(p, DataError, "image")
    try:
        return preprocess(data)
    except ValueError as exc:
        raise DataError(f"image {p}: {exc} (is it a valid image file?)") from None


def list_images(path: str | os.PathLike) -> list[Path]:
    """A file, or every image file under a folder (sorted)."""
    p = Path(path)
    if p.is_file():
        return [p]
    if p.is_dir():
        found = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS)
        if not found:
            raise DataError(f"no image files ({', '.join(IMAGE_EXTENSIONS)}) under {p}")
        return found
    raise DataError(f"image or folder {str(p)!r} not found")


def load_image_list(image_list: str | os.PathLike, data_dir: str | os.PathLike | None, meta: dict[str, Any],
                    limit: int, *, option: str = "--image_list", data_option: str = "--data_dir") -> tuple[np.ndarray, list[str]]:
    """Up to ``limit`` preprocessed images (N, 3, H, W), spread evenly over a PaddleClas list
    (``path [label]`` lines, paths relative to ``data_dir``, default the list's folder) or over
    the images of a folder: a list sorted by class gives every class its share."""
    from clasflow.data.lists import read_list

    p = Path(image_list)
    if p.is_dir():
        paths = list_images(p)
    else:
        if not p.is_file():
            raise DataError(f"{option}: file {str(p)!r} not found")
        base = Path(data_dir) if data_dir else p.parent
        if data_dir and not base.is_dir():
            raise DataError(f"{data_option}: folder {str(base)!r} (the root of the {option} paths) not found")
        paths = [base / e.path for e in read_list(str(p), labeled=False)]
    if not paths:
        raise DataError(f"{option} {p}: no images listed")
    if len(paths) > limit:
        paths = [paths[i * len(paths) // limit] for i in range(limit)]
    pre = build_preprocess(meta)
    return np.stack([load_image(x, pre) for x in paths]), [str(x) for x in paths]


# ------------------------------------------------------------------ runtimes


class PaddleRunner:
    """Paddle Inference predictor over ``inference.json``/``inference.pdiparams``.

    device ``cpu``: oneDNN on, ``threads`` math threads. device ``gpu``: CUDA kernels, ``fp16``
    through Paddle's mixed precision (``enable_use_gpu(..., precision_mode=Half)``). A model
    already converted by PIR-TRT (``paddle.tensorrt.convert``) runs its TensorRT engines on
    ``gpu`` the same way.
    """

    def __init__(self, model_dir: str | os.PathLike, *, device: str = "cpu", precision: str = "fp32",
                 threads: int | None = None, gpu_id: int = 0, onednn: bool = True, meta: dict[str, Any] | None = None):
        import paddle.inference as pi

        meta = meta if meta is not None else load_meta(model_dir)
        self.meta = meta
        started = time.perf_counter()
        config = pi.Config(str(model_file(model_dir, meta, "model")), str(model_file(model_dir, meta, "params")))
        precisions = {"fp32": pi.PrecisionType.Float32, "fp16": pi.PrecisionType.Half}
        if precision not in precisions:
            raise ClasflowError(f"Paddle Inference runs fp32 or fp16 here, not {precision}")
        if device == "gpu":
            config.enable_use_gpu(256, gpu_id, precisions[precision])
        else:
            config.disable_gpu()
            if onednn:  # on by default in Paddle 3.x CPU builds; stated anyway (17.6 vs 90 ms, MobileNetV3 bs1)
                (getattr(config, "enable_onednn", None) or config.enable_mkldnn)()
            else:
                (getattr(config, "disable_onednn", None) or config.disable_mkldnn)()
            config.set_cpu_math_library_num_threads(int(threads or default_threads()))
        config.switch_ir_optim(True)
        config.disable_glog_info()
        self.config = config
        self.predictor = pi.create_predictor(config)
        self.input_name = self.predictor.get_input_names()[0]
        self.output_name = self.predictor.get_output_names()[0]
        self._input = self.predictor.get_input_handle(self.input_name)
        self._output = self.predictor.get_output_handle(self.output_name)
        self.build_s = time.perf_counter() - started
        self.device, self.precision = device, precision

    def run(self, batch: np.ndarray) -> np.ndarray:
        self._input.reshape(list(batch.shape))
        self._input.copy_from_cpu(np.ascontiguousarray(batch, dtype=np.float32))
        self.predictor.run()
        return self._output.copy_to_cpu()

    def close(self) -> None:
        self._input = self._output = None
        self.predictor = None


class OrtRunner:
    """onnxruntime session over ``model.onnx`` with the given execution providers."""

    def __init__(self, onnx_file: str | os.PathLike, *, providers: Sequence[Any] = ("CPUExecutionProvider",),
                 threads: int | None = None):
        import onnxruntime as ort

        started = time.perf_counter()
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = int(threads or default_threads())
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3
        self.session = ort.InferenceSession(str(onnx_file), sess_options=opts, providers=list(providers))
        self.input_name = self.session.get_inputs()[0].name
        self.providers = self.session.get_providers()
        self.build_s = time.perf_counter() - started

    def run(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: np.ascontiguousarray(batch, dtype=np.float32)})[0]

    def close(self) -> None:
        self.session = None


def create_runner(model_dir: str | os.PathLike, backend: str = "paddle", *, device: str = "cpu",
                  threads: int | None = None):
    """A runner for predict: ``paddle`` (Paddle Inference) or ``onnxruntime`` (model.onnx)."""
    if backend == "paddle":
        if device == "gpu":
            _require_paddle_gpu()
        return PaddleRunner(model_dir, device=device, threads=threads)
    if backend == "onnxruntime":
        meta = load_meta(model_dir, need=("onnx",))
        import onnxruntime as ort

        providers: list[str] = ["CPUExecutionProvider"]
        if device == "gpu":
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise ClasflowError("onnxruntime has no CUDAExecutionProvider here (install onnxruntime-gpu), use --device cpu")
            providers.insert(0, "CUDAExecutionProvider")
        return OrtRunner(model_file(model_dir, meta, "onnx"), providers=providers, threads=threads)
    raise ClasflowError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")


def _require_paddle_gpu() -> None:
    import paddle

    if not paddle.is_compiled_with_cuda():
        raise ClasflowError("this PaddlePaddle is a CPU build; use --device cpu (or install paddlepaddle-gpu)")
    if paddle.device.cuda.device_count() < 1:
        raise ClasflowError("no CUDA device is visible; use --device cpu")


# ------------------------------------------------------------------ predict


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64) - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


@dataclass
class Prediction:
    image: str
    class_ids: list[int]
    scores: list[float]
    label_names: list[str]

    def as_dict(self) -> dict[str, Any]:
        return {"image": self.image, "class_ids": self.class_ids, "scores": self.scores, "label_names": self.label_names}

    def line(self) -> str:
        scores = ", ".join(f"{s:.5f}" for s in self.scores)
        return (f"{self.image}: class id(s): {self.class_ids}, score(s): [{scores}], "
                f"label_name(s): {self.label_names}")


def top_k(probs: np.ndarray, k: int) -> list[int]:
    """Indices of the k largest, best first; ties keep the lower id first."""
    order = np.argsort(-probs, kind="stable")
    return [int(i) for i in order[:k]]


def predict(model_dir: str | os.PathLike, inputs: str | os.PathLike | Iterable[str | os.PathLike], *, topk: int = 5,
            backend: str = "paddle", device: str = "cpu", batch_size: int = 8, threads: int | None = None) -> list[Prediction]:
    """Classify an image, a folder of images or a list of paths. ``topk <= 0`` means every class."""
    meta = load_meta(model_dir, need=("model", "params", "onnx") if backend == "onnxruntime" else ("model", "params"))
    paths = list_images(inputs) if isinstance(inputs, (str, os.PathLike)) else [Path(p) for p in inputs]
    preprocess = build_preprocess(meta)
    images = [load_image(p, preprocess) for p in paths]  # fail on a bad image before any inference
    class_num = int(meta["class_num"])
    names = [str(n) for n in meta.get("label_names") or range(class_num)]
    k = class_num if topk <= 0 else min(int(topk), class_num)
    runner = create_runner(model_dir, backend, device=device, threads=threads)
    out: list[Prediction] = []
    try:
        for start in range(0, len(images), max(1, batch_size)):
            chunk = images[start:start + max(1, batch_size)]
            logits = runner.run(np.stack(chunk))
            if logits.ndim != 2 or logits.shape[1] != class_num:
                raise ClasflowError(f"{model_dir}: the model returned shape {list(logits.shape)}, "
                                    f"inference.yml says {class_num} classes")
            for path, probs in zip(paths[start:start + len(chunk)], softmax(logits)):
                ids = top_k(probs, k)
                out.append(Prediction(str(path), ids, [float(probs[i]) for i in ids], [names[i] for i in ids]))
    finally:
        runner.close()
    return out

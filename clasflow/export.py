"""The export stage: a checkpoint -> a Paddle inference model (+ ONNX) that checks itself.

`export_model` builds the architecture, loads the checkpoint strictly (the class count is read
from the checkpoint's classifier and must match what was asked for), and writes into
``output_path``:

* ``inference.json`` + ``inference.pdiparams`` -- ``paddle.jit.save`` with input ``[None, 3, H, W]``;
* ``model.onnx`` (with ``onnx=True``) -- paddle2onnx, fully offline (its default polygraphy
  optimizer installs packages while converting; here the raw export is optimized with
  onnxoptimizer instead);
* ``int8/inference.pdmodel`` + ``.pdiparams`` (with ``int8_calib``) -- the model quantized by
  post-training calibration on real images (`clasflow.quantize`), for TensorRT int8 through
  Paddle (``benchmark --backend paddle-trt --precision int8``); checked against the quantized
  dygraph model, with its top-1 agreement with fp32 on held-out images recorded;
* ``inference.yml`` -- class count, label names, the eval preprocessing, the self-check and
  the versions used.

The self-check runs a fixed batch through the dygraph model and through the exported files
(Paddle Inference, and onnxruntime for ONNX) and fails when the max abs difference of the
logits exceeds ``tolerance * max(1, max |logit|)``. Everything is written into a temporary
folder next to ``output_path`` and renamed into place, so a failed export leaves nothing behind.

For the distillation model (``ResNet50_vd_distill_MobileNetV3_large_x1_0``) the student is
exported: a checkpoint with ``teacher.*``/``student.*`` keys, or the student's own weights.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import logging
import os
import platform
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import yaml

from clasflow import quantize
from clasflow.errors import ClasflowError, ConfigError
from clasflow.fsutil import replace_dir

log = logging.getLogger(__name__)

# paddle2onnx's polygraphy path would `pip install` its missing dependencies; never allow that.
os.environ["POLYGRAPHY_AUTOINSTALL_DEPS"] = "0"

MODEL_FILE = "inference.json"
PARAMS_FILE = "inference.pdiparams"
ONNX_FILE = "model.onnx"
META_FILE = "inference.yml"
MODEL_PREFIX = "inference"
INPUT_NAME = "x"
DEFAULT_TOLERANCE = 1e-4
DEFAULT_OPSET = 13
CHECK_BATCH = 2
CHECK_SEED = 0
DISTILL_STUDENT = "student"
INT8_DIR = "int8"
INT8_CALIB_IMAGES = 32  # calibration images (as many again, interleaved, check the result)
INT8_WARN_AGREEMENT = 0.9
FLOWERS102_NAMES_FILE = Path(__file__).resolve().parent / "data" / "flowers102_names.txt"
# onnxoptimizer passes that only remove or fold things; the result is checked afterwards.
ONNX_PASSES = (
    "eliminate_deadend",
    "eliminate_nop_dropout",
    "eliminate_nop_transpose",
    "eliminate_unused_initializer",
    "eliminate_duplicate_initializer",
    "extract_constant_to_initializer",
)


@dataclass
class ExportResult:
    output_path: str
    architecture: str  # the exported network (the student's name for distillation)
    class_num: int
    image_size: tuple[int, int]  # (h, w)
    max_abs_diff: dict[str, float]  # runtime -> max |exported - dygraph| on the check batch
    files: list[str] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> str:
        diffs = ", ".join(f"{k} {v:.3g}" for k, v in self.max_abs_diff.items())
        text = (f"exported {self.architecture} ({self.class_num} classes, {self.image_size[0]}x{self.image_size[1]}) "
                f"to {self.output_path}: {', '.join(self.files)}; self-check max abs diff: {diffs}")
        int8 = self.meta.get("int8") or {}
        if "self_check" in int8:
            check = int8["self_check"]
            text += f"; int8 top-1 agreement with fp32 {check['top1_agreement_vs_fp32']:.3f} on {check['images']} images"
        elif "error" in int8:
            text += f"; no int8 model: {int8['error']}"
        return text


# ------------------------------------------------------------------ labels


def flowers102_names() -> list[str]:
    """The 102 Oxford flower category names, label order 0..101."""
    names = [line.strip() for line in FLOWERS102_NAMES_FILE.read_text(encoding="utf-8").splitlines() if line.strip()]
    if len(names) != 102:
        raise ClasflowError(f"{FLOWERS102_NAMES_FILE}: expected 102 names, found {len(names)}")
    return names


def read_label_names(path: str | os.PathLike, class_num: int) -> list[str]:
    """Names from a file: one name per line in label order, or PaddleClas ``ID NAME`` lines.

    ``flowers102`` (the word, not a file) means the built-in flowers102 names.
    """
    if str(path) == "flowers102" and not Path(path).exists():
        names = flowers102_names()
    else:
        p = Path(path)
        if not p.is_file():
            raise ClasflowError(f"--label_names: file {str(p)!r} not found")
        try:
            lines = [ln.strip() for ln in p.read_text(encoding="utf-8-sig").splitlines() if ln.strip()]
        except (OSError, UnicodeDecodeError) as exc:
            raise ClasflowError(f"--label_names: cannot read {p}: {exc}") from None
        heads = [ln.split(maxsplit=1) for ln in lines]
        if heads and all(len(h) == 2 and h[0].isdigit() for h in heads):
            by_id = {int(i): name.strip() for i, name in heads}
            missing = [i for i in range(class_num) if i not in by_id]
            if missing:
                raise ClasflowError(f"--label_names {p}: no name for label ids {missing[:10]}")
            names = [by_id[i] for i in range(class_num)]
        else:
            names = lines
    if len(names) != class_num:
        raise ClasflowError(f"--label_names {path}: {len(names)} names for {class_num} classes")
    return names


def _mentions_flowers102(cfg) -> bool:
    for section in (cfg.VALID, cfg.TRAIN):
        if section is not None and any("flowers102" in str(v).lower() for v in (section.file_list, section.data_dir)):
            return True
    return False


# ------------------------------------------------------------------ preprocessing


def default_preprocess(image_size: tuple[int, int]) -> dict[str, Any]:
    """PaddleClas's eval pipeline scaled to ``image_size`` (256/224 resize, center crop)."""
    h, w = image_size
    return {
        "channel_order": "RGB",
        "resize_short": int(round(min(h, w) * 256 / 224)),
        "resize_size": None,
        "interpolation": "bilinear",
        "crop_size": [w, h],
        "scale": 1.0 / 255.0,
        "mean": [0.485, 0.456, 0.406],
        "std": [0.229, 0.224, 0.225],
        "layout": "CHW",
    }


def preprocess_from_config(cfg) -> dict[str, Any]:
    """The VALID transforms as the flat description inference.yml stores."""
    from clasflow.data import transforms as ops

    h, w = cfg.image_shape[1], cfg.image_shape[2]
    pre = default_preprocess((h, w))
    pre["crop_size"] = None
    pre["resize_short"] = None
    if cfg.VALID is None:
        raise ConfigError("VALID: export takes its preprocessing from the VALID transforms; the config has none")
    codes = {v: k for k, v in ops.CV2_INTERPOLATION.items()}
    for spec in cfg.VALID.transforms:
        op = ops.OPS[spec.name](**spec.args)
        if spec.name == "DecodeImage":
            pre["channel_order"] = "RGB" if op.to_rgb else "BGR"
        elif spec.name == "ResizeImage":
            pre["interpolation"] = codes.get(op.interpolation, "bilinear")
            if op.resize_short is not None:
                pre["resize_short"], pre["resize_size"] = op.resize_short, None
            else:
                pre["resize_short"], pre["resize_size"] = None, [op.w, op.h]
        elif spec.name == "CropImage":
            pre["crop_size"] = list(op.size)
        elif spec.name == "NormalizeImage":
            pre["scale"], pre["mean"], pre["std"] = float(op.scale), [float(v) for v in op.mean], [float(v) for v in op.std]
        elif spec.name == "ToCHWImage":
            pre["layout"] = "CHW"
        else:
            raise ConfigError(f"VALID.transforms: {spec.name} is a training-time transform; "
                              "export supports DecodeImage, ResizeImage, CropImage, NormalizeImage, ToCHWImage")
    if pre["crop_size"] is None:
        pre["crop_size"] = [w, h]
    return pre


# ------------------------------------------------------------------ checkpoints


def _load_state(path: str | os.PathLike) -> tuple[dict[str, np.ndarray] | None, str, str]:
    """(state or None for v1 archives, resolved path, format)."""
    from clasflow.models.pretrained import _read_pdparams, resolve_weights

    resolved, fmt = resolve_weights(path)
    if fmt != "pdparams":
        return None, str(resolved), fmt
    return _read_pdparams(resolved), str(resolved), fmt


def checkpoint_class_num(state: dict[str, np.ndarray], source: str) -> int:
    """The class count of a checkpoint: ``fc.weight`` ([in, classes]) or ``student.fc.weight``."""
    for key in ("fc.weight", f"{DISTILL_STUDENT}.fc.weight"):
        if key in state:
            shape = state[key].shape
            if len(shape) != 2:
                raise ClasflowError(f"{source}: {key} has shape {list(shape)}, expected [features, classes]")
            return int(shape[1])
    heads = [k for k in state if k.endswith("fc.weight")]
    raise ClasflowError(f"{source}: no classifier weight (fc.weight or student.fc.weight) in the checkpoint"
                        + (f"; found {heads}" if heads else ""))


def _student_state(state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    prefix = DISTILL_STUDENT + "."
    if any(k.startswith(prefix) for k in state):
        return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    return state


def _is_distill(arch: str) -> bool:
    from clasflow.models import distill

    return arch == distill.NAME


def build_network(arch: str, class_num: int, params: dict[str, Any] | None,
                  pretrained_model: str | os.PathLike | None, expected_class_num: int | None,
                  where: str = "--class_num"):
    """(network to export, its name, class count, checkpoint path or None)."""
    from clasflow.models import build_model, load_pretrained
    from clasflow.models.pretrained import apply_state

    params = dict(params or {})
    state = source = fmt = None
    if pretrained_model:
        state, source, fmt = _load_state(pretrained_model)
        if state is not None:
            found = checkpoint_class_num(state, source)
            if expected_class_num is not None and found != expected_class_num:
                raise ClasflowError(
                    f"{source}: the checkpoint has {found} classes (its classifier fc.weight) but {where} asks for "
                    f"{expected_class_num}; set the class count to {found} or pass the checkpoint trained for "
                    f"{expected_class_num} classes")
            class_num = found
    if not class_num:
        raise ClasflowError(f"{source or 'no checkpoint'}: cannot read the class count from it; give --class_num")
    if _is_distill(arch):
        from clasflow.models.mobilenet_v3 import MobileNetV3

        dropout = params.get("dropout_prob", 0.2)
        net = MobileNetV3("large", 1.0, class_num=class_num, dropout_prob=dropout)
        name = "MobileNetV3_large_x1_0"
        if state is not None:
            apply_state(net, _student_state(state), source, fmt, strict_head=True)
        elif source is not None:
            load_pretrained(net, source, strict_head=True)
    else:
        net = build_model(arch, class_num=class_num, **params)
        name = arch
        if state is not None:
            apply_state(net, state, source, fmt, strict_head=True)
        elif source is not None:
            report = load_pretrained(net, source, strict_head=True)
            log.info("%s", report.summary())
    net.eval()
    return net, name, class_num, source


# ------------------------------------------------------------------ runtimes used by the self-check


def paddle_inference_outputs(model_dir: str | os.PathLike, batch: np.ndarray) -> np.ndarray:
    """Run ``batch`` through the exported files with Paddle Inference on the CPU (oneDNN on)."""
    from clasflow.predict import PaddleRunner

    meta = {"files": {"model": MODEL_FILE, "params": PARAMS_FILE}}
    runner = PaddleRunner(model_dir, device="cpu", meta=meta)
    try:
        return runner.run(batch)
    finally:
        runner.close()


def onnxruntime_outputs(onnx_file: str | os.PathLike, batch: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(str(onnx_file), sess_options=opts, providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: batch})[0]


def convert_onnx(model_dir: Path, out_file: Path, opset: int = DEFAULT_OPSET) -> dict[str, Any]:
    """paddle2onnx without its network-using optimizer, then onnxoptimizer, then the checker."""
    import onnx

    import paddle2onnx

    with _quiet_fd_stdout():
        try:
            raw = paddle2onnx.export(str(model_dir / MODEL_FILE), str(model_dir / PARAMS_FILE), save_file=None,
                                     opset_version=opset, auto_upgrade_opset=True, enable_onnx_checker=True,
                                     enable_optimize=True, optimize_tool="None")
        except Exception as exc:  # paddle2onnx logs the cause and then fails on an unbound name
            raise ClasflowError(f"paddle2onnx could not convert {model_dir / MODEL_FILE}: {type(exc).__name__}: {exc}") from None
    if not isinstance(raw, (bytes, bytearray)) or not raw:
        raise ClasflowError(f"paddle2onnx returned no model for {model_dir / MODEL_FILE}")
    model = onnx.load_from_string(bytes(raw))
    info: dict[str, Any] = {"opset": max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=opset),
                            "optimizer": "none"}
    try:
        import onnxoptimizer

        available = set(onnxoptimizer.get_available_passes())
        passes = [p for p in ONNX_PASSES if p in available]
        optimized = onnxoptimizer.optimize(model, passes)
        onnx.checker.check_model(optimized, full_check=True)
        model = optimized
        info["optimizer"] = f"onnxoptimizer {getattr(onnxoptimizer, '__version__', '?')}: {', '.join(passes)}"
    except Exception as exc:  # keep the unoptimized (already checked) model
        log.warning("onnxoptimizer failed (%s: %s); keeping the unoptimized ONNX model", type(exc).__name__, exc)
    onnx.save(model, str(out_file))
    return info


@contextlib.contextmanager
def _quiet_fd_stdout():
    """paddle2onnx's C++ side prints progress to fd 1; send it to stderr so --json stays clean."""
    try:
        sys.stdout.flush()
        saved = os.dup(1)
    except (OSError, ValueError):
        yield
        return
    try:
        os.dup2(2, 1)
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


# ------------------------------------------------------------------ versions


def versions() -> dict[str, str]:
    """Versions of everything that touches the exported model (importable ones only)."""
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for dist, key in (("clasflow", "clasflow"), ("paddlepaddle", "paddlepaddle"), ("paddlepaddle-gpu", "paddlepaddle"),
                      ("paddle2onnx", "paddle2onnx"), ("onnx", "onnx"), ("onnxruntime", "onnxruntime"),
                      ("onnxruntime-gpu", "onnxruntime"), ("onnxoptimizer", "onnxoptimizer"), ("numpy", "numpy"),
                      ("opencv-python-headless", "opencv"), ("opencv-python", "opencv")):
        if key in out:
            continue
        with contextlib.suppress(md.PackageNotFoundError):
            out[key] = md.version(dist)
    return out


# ------------------------------------------------------------------ export


def _image_size(value: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(value, int) and not isinstance(value, bool):
        h = w = value
    elif isinstance(value, (list, tuple)) and len(value) == 2:
        h, w = int(value[0]), int(value[1])
    else:
        raise ClasflowError(f"image size must be an int or (h, w), got {value!r}")
    if h < 8 or w < 8:
        raise ClasflowError(f"image size must be at least 8x8, got {h}x{w}")
    return h, w


def _prepare_target(output_path: Path) -> None:
    if output_path.exists():
        if not output_path.is_dir():
            raise ClasflowError(f"--output_path {output_path} exists and is not a folder")
        if any(output_path.iterdir()) and not (output_path / META_FILE).is_file():
            raise ClasflowError(f"--output_path {output_path} is a non-empty folder that is not a clasflow export "
                                f"(no {META_FILE}); refusing to replace it, pick another folder")
    output_path.parent.mkdir(parents=True, exist_ok=True)


@contextlib.contextmanager
def _on_cpu():
    import paddle

    before = paddle.get_device()
    paddle.set_device("cpu")
    try:
        yield
    finally:
        paddle.set_device(before)


def export_model(
    *,
    arch: str,
    output_path: str | os.PathLike,
    pretrained_model: str | os.PathLike | None,
    class_num: int | None = None,
    image_size: int | Sequence[int] = 224,
    arch_params: dict[str, Any] | None = None,
    preprocess: dict[str, Any] | None = None,
    label_names: Sequence[str] | None = None,
    label_source: str = "ids",
    onnx: bool = False,
    tolerance: float = DEFAULT_TOLERANCE,
    opset: int = DEFAULT_OPSET,
    class_num_origin: str = "--class_num",
    extra_meta: dict[str, Any] | None = None,
    int8_calib: str | os.PathLike | None = None,
    int8_data_dir: str | os.PathLike | None = None,
    int8_images: int = INT8_CALIB_IMAGES,
    int8_required: bool = True,
) -> ExportResult:
    """Export ``arch`` with the weights at ``pretrained_model`` (see the module docstring).

    ``pretrained_model=None`` exports randomly initialised weights (benchmarks only; recorded
    as such in inference.yml). ``class_num=None`` takes the checkpoint's class count.
    ``int8_calib`` (a PaddleClas list or a folder of real images) also writes ``int8/``: the
    model quantized by post-training calibration on ``int8_images`` of them (`clasflow.quantize`);
    with ``int8_required=False`` an int8 failure is recorded in inference.yml (``int8.error``)
    and the fp32 export still lands.
    """
    import paddle

    output_path = Path(output_path)
    h, w = _image_size(image_size)
    if class_num is None and not pretrained_model:
        raise ClasflowError("give --class_num or a checkpoint to read the class count from")
    if tolerance <= 0:
        raise ClasflowError(f"tolerance must be positive, got {tolerance}")
    _prepare_target(output_path)
    with _on_cpu():
        net, name, class_num, source = build_network(arch, class_num or 0, arch_params, pretrained_model,
                                                      class_num, where=class_num_origin)
        if label_names is None:
            label_names, label_source = [str(i) for i in range(class_num)], "ids"
        elif len(label_names) != class_num:
            raise ClasflowError(f"{len(label_names)} label names for {class_num} classes")
        pre = dict(preprocess or default_preprocess((h, w)))
        if list(pre["crop_size"]) != [w, h]:
            raise ClasflowError(f"the preprocessing crops to {pre['crop_size'][0]}x{pre['crop_size'][1]} (w x h) "
                                f"but the model input is {w}x{h}")
        int8_sets = _int8_image_sets(int8_calib, int8_data_dir, int8_images, pre) if int8_calib else None
        batch = np.random.default_rng(CHECK_SEED).standard_normal((CHECK_BATCH, 3, h, w)).astype("float32")
        with paddle.no_grad():
            reference = net(paddle.to_tensor(batch)).numpy()
        if reference.shape != (CHECK_BATCH, class_num):
            raise ClasflowError(f"{name} produced logits of shape {list(reference.shape)}, expected [{CHECK_BATCH}, {class_num}]")
        allowed = float(tolerance * max(1.0, float(np.abs(reference).max())))

        tmp = Path(tempfile.mkdtemp(prefix=f".{output_path.name}.tmp-", dir=output_path.parent))
        try:
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it 0700; the export is an ordinary folder
            spec = [paddle.static.InputSpec(shape=[None, 3, h, w], dtype="float32", name=INPUT_NAME)]
            paddle.jit.save(net, str(tmp / MODEL_PREFIX), input_spec=spec)
            if not (tmp / MODEL_FILE).is_file() or not (tmp / PARAMS_FILE).is_file():
                written = sorted(p.name for p in tmp.iterdir())
                raise ClasflowError(f"paddle.jit.save wrote {written}, expected {MODEL_FILE} and {PARAMS_FILE} "
                                    "(PaddlePaddle 3.x with PIR is required)")
            diffs = {"paddle_inference": float(np.abs(paddle_inference_outputs(tmp, batch) - reference).max())}
            files = [MODEL_FILE, PARAMS_FILE]
            onnx_info = None
            if onnx:
                onnx_info = convert_onnx(tmp, tmp / ONNX_FILE, opset)
                diffs["onnxruntime"] = float(np.abs(onnxruntime_outputs(tmp / ONNX_FILE, batch) - reference).max())
                files.append(ONNX_FILE)
            bad = {k: v for k, v in diffs.items() if not v <= allowed}
            if bad:
                raise ClasflowError(
                    f"self-check failed: exported {name} differs from the dygraph model by "
                    + ", ".join(f"{k} {v:.3g}" for k, v in bad.items())
                    + f" (max abs logit diff; allowed {allowed:.3g} = {tolerance:g} * max(1, max |logit| {np.abs(reference).max():.3g}))")
            int8_meta = None
            if int8_sets is not None:
                try:
                    int8_meta = _export_int8(net, *int8_sets, tmp, h, w, tolerance)
                    files += list(int8_meta["files"].values())
                except Exception as exc:
                    if int8_required:
                        raise
                    shutil.rmtree(tmp / INT8_DIR, ignore_errors=True)
                    int8_meta = {"error": f"{type(exc).__name__}: {exc}"}
                    log.warning("no int8 model (the fp32 export goes on): %s", int8_meta["error"])
            meta = _meta(arch=arch, name=name, class_num=class_num, h=h, w=w, label_names=list(label_names),
                         label_source=label_source, pre=pre, source=source, diffs=diffs, allowed=allowed,
                         tolerance=tolerance, reference=reference, onnx_info=onnx_info, extra=extra_meta)
            if int8_meta:
                meta["int8"] = int8_meta
            (tmp / META_FILE).write_text(yaml.safe_dump(meta, sort_keys=False, allow_unicode=True), encoding="utf-8")
            files.append(META_FILE)
            replace_dir(tmp, output_path)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    result = ExportResult(str(output_path), name, class_num, (h, w), diffs, files, meta)
    log.info("%s", result.summary())
    return result


def _int8_image_sets(image_list, data_dir, count: int, pre: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, str, bool, list[str]]:
    """(calibration images, check images, source, check held out, the calibration files' sha256):
    ``2 * count`` images spread over the list, alternately calibrating and checking."""
    from clasflow.fsutil import file_digest
    from clasflow.predict import load_image_list

    if count < 1:
        raise ClasflowError(f"--int8_images must be at least 1, got {count}")
    images, paths = load_image_list(image_list, data_dir, {"PreProcess": pre}, limit=2 * count, option="--int8_calib",
                                    data_option="--int8_data_dir")
    source = str(Path(image_list).resolve())
    if len(images) < 2:
        return images, images, source, False, [file_digest(p) for p in paths]
    return images[0::2], images[1::2], source, True, [file_digest(p) for p in paths[0::2]]


def _export_int8(net, calib: np.ndarray, check: np.ndarray, source: str, held_out: bool, calib_files: list[str],
                 tmp: Path, h: int, w: int, tolerance: float) -> dict[str, Any]:
    """Calibrate, write ``tmp/int8/`` and check it: Paddle Inference (CPU; the quantize ops run as
    simulated int8 there) against the quantized dygraph model, and its top-1 against fp32.
    oneDNN stays off for this check: its fused quantize kernels round differently (measured up to
    0.14 logit on a 3.4 logit scale), plain CPU kernels reproduce the dygraph model exactly."""
    import paddle

    from clasflow.predict import PaddleRunner

    quantized = quantize.calibrate(net, calib)
    folder = tmp / INT8_DIR
    folder.mkdir()
    quantize.save_quantized(quantized, folder, INPUT_NAME, h, w)
    ops = quantize.quantized_op_counts(folder / quantize.MODEL_FILE)
    if not ops["quantize_linear"]:
        raise ClasflowError(f"the int8 export of {type(net).__name__} holds no quantize_linear ops: nothing was quantized")
    with paddle.no_grad():
        fp32 = net(paddle.to_tensor(check)).numpy()
        simulated = quantized(paddle.to_tensor(check)).numpy()
    runner = PaddleRunner(folder, device="cpu", onednn=False,
                          meta={"files": {"model": quantize.MODEL_FILE, "params": quantize.PARAMS_FILE}})
    try:
        exported = np.concatenate([runner.run(check[s:s + CHECK_BATCH]) for s in range(0, len(check), CHECK_BATCH)])
    finally:
        runner.close()
    diff = float(np.abs(exported - simulated).max())
    allowed = float(tolerance * max(1.0, float(np.abs(simulated).max())))
    if not diff <= allowed:
        raise ClasflowError(f"self-check failed: the exported int8 model differs from the quantized dygraph model by "
                            f"{diff:.3g} (max abs logit diff; allowed {allowed:.3g})")
    agreement = quantize.top1_agreement(exported, fp32)
    if agreement < INT8_WARN_AGREEMENT:
        log.warning("int8 calibration: top-1 agrees with fp32 on only %.0f%% of %d images; calibrate on more or "
                    "more varied images (--int8_calib, --int8_images)", 100 * agreement, len(check))
    return {
        "files": {"model": f"{INT8_DIR}/{quantize.MODEL_FILE}", "params": f"{INT8_DIR}/{quantize.PARAMS_FILE}"},
        "format": "Paddle quantized program (quantize_linear/dequantize_linear), pre-PIR .pdmodel",
        "runs_on": "paddle-trt --precision int8 (paddle.tensorrt.convert with PrecisionMode.INT8)",
        "quantized_ops": ops,
        "calibration": quantize.describe(calib, source, calib_files),
        "self_check": {
            "images": int(len(check)),
            "held_out": held_out,
            "max_abs_diff_vs_quantized_dygraph": diff,
            "allowed_abs_diff": allowed,
            "top1_agreement_vs_fp32": agreement,
        },
    }


def _meta(*, arch, name, class_num, h, w, label_names, label_source, pre, source, diffs, allowed, tolerance,
          reference, onnx_info, extra) -> dict[str, Any]:
    from clasflow.fsutil import file_digest

    meta: dict[str, Any] = {
        "format": "clasflow-inference/1",
        "architecture": name,
        "source_architecture": arch,
        "class_num": class_num,
        "label_source": label_source,
        "label_names": label_names,
        "input": {"name": INPUT_NAME, "shape": [-1, 3, h, w], "dtype": "float32"},
        "files": {"model": MODEL_FILE, "params": PARAMS_FILE, **({"onnx": ONNX_FILE} if onnx_info else {})},
        "PreProcess": pre,
        "PostProcess": {"type": "softmax_topk"},
        "self_check": {
            "batch_shape": [CHECK_BATCH, 3, h, w],
            "input": f"standard normal, numpy default_rng({CHECK_SEED})",
            "reference": "dygraph model on CPU",
            "max_abs_diff": {k: float(v) for k, v in diffs.items()},
            "max_abs_logit": float(np.abs(reference).max()),
            "tolerance": float(tolerance),
            "allowed_abs_diff": allowed,
            "passed": True,
        },
        "checkpoint": ({"path": str(Path(source).resolve()), "sha256": file_digest(source) if Path(source).is_file() else None}
                       if source else {"path": None, "note": "randomly initialised weights (benchmark only)"}),
        "onnx": onnx_info,
        "versions": versions(),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    if extra:
        meta.update(extra)
    return meta


def export_from_config(config: str | os.PathLike, overrides: Sequence[str], output_path: str | os.PathLike, *,
                       pretrained_model: str | None = None, label_names_file: str | None = None,
                       onnx: bool = False, tolerance: float = DEFAULT_TOLERANCE, opset: int = DEFAULT_OPSET,
                       int8_calib: str | None = None, int8_data_dir: str | None = None,
                       int8_images: int = INT8_CALIB_IMAGES, int8_required: bool = True) -> ExportResult:
    """``clasflow export -c CFG -o pretrained_model=PATH``: architecture, classes, image size and
    preprocessing from the config (VALID transforms)."""
    from clasflow.config import load_config

    cfg = load_config(config, list(overrides))
    if not pretrained_model:
        pm = cfg.pretrained_model
        pretrained_model = (pm[1] if isinstance(pm, list) else pm) or None
    if not pretrained_model:
        raise ConfigError(f"{config}: pretrained_model is empty: pass the weights to export, e.g. "
                          f"-o pretrained_model=output/{cfg.ARCHITECTURE.name}/best_model/ppcls")
    pre = preprocess_from_config(cfg)
    w, h = pre["crop_size"]
    if [h, w] != list(cfg.image_shape[1:]):
        log.warning("image_shape %s differs from the VALID crop %sx%s; exporting at the crop size", cfg.image_shape, w, h)
    if label_names_file:
        names, source = read_label_names(label_names_file, cfg.classes_num), f"file:{label_names_file}"
    elif cfg.classes_num == 102 and _mentions_flowers102(cfg):
        names, source = flowers102_names(), "flowers102"
    else:
        names, source = None, "ids"
    params = dict(cfg.ARCHITECTURE.params)
    return export_model(arch=cfg.ARCHITECTURE.name, output_path=output_path, pretrained_model=pretrained_model,
                        class_num=cfg.classes_num, image_size=(h, w), arch_params=params, preprocess=pre,
                        label_names=names, label_source=source, onnx=onnx, tolerance=tolerance, opset=opset,
                        class_num_origin=f"the config's classes_num={cfg.classes_num} ({config})",
                        extra_meta={"config": str(Path(config).resolve()), "config_hash": cfg.hash()},
                        int8_calib=int8_calib, int8_data_dir=int8_data_dir, int8_images=int8_images,
                        int8_required=int8_required)


def split_pretrained_override(overrides: Sequence[str]) -> tuple[list[str], str | None]:
    """Take ``pretrained_model=PATH`` (or PaddleClas 2.x's ``Global.pretrained_model=PATH``) out
    of ``-o`` overrides: a distillation config insists on a [teacher, student] list there, while
    export wants one checkpoint."""
    rest, path = [], None
    for text in overrides:
        key, sep, value = text.partition("=")
        if sep and key.strip() in ("pretrained_model", "Global.pretrained_model"):
            path = value.strip().strip("'\"") or None
        else:
            rest.append(text)
    return rest, path

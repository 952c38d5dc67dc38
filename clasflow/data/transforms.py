"""PaddleClas image operators in numpy/cv2, with PaddleClas's semantics.

Each class mirrors the operator of the same name in PaddleClas 2.x
(``ppcls/data/preprocess/ops``): same arguments, same defaults, same sampling
formulas, same rounding.  Differences are deliberate and limited to input
checking: constructors validate their arguments and raise ``ValueError`` with a
message that names the operator and the argument, instead of failing later
inside a worker.

Randomness comes from this module's own generators (``reseed`` sets them), so a
data loader can make every sample's augmentation reproducible regardless of
which worker process handles it.

``OPS`` maps operator names to classes (the config module calls
``OPS[name](**args)``); ``DALI_SUPPORTED`` lists the names that the DALI
pipeline (``clasflow.data.dali_pipeline``) can express.
"""

from __future__ import annotations

import math
import numbers
import random
from typing import Any, Sequence

import cv2
import numpy as np

__all__ = [
    "OPS",
    "DALI_SUPPORTED",
    "DecodeImage",
    "RandCropImage",
    "RandFlipImage",
    "ResizeImage",
    "CropImage",
    "NormalizeImage",
    "ToCHWImage",
    "RandomErasing",
    "parse_number",
    "build_ops",
    "apply_ops",
    "reseed",
    "CV2_INTERPOLATION",
]

# Module-level generators used by the random operators.  ``reseed`` makes the
# next draws reproducible (the OpenCV loader reseeds per sample).
_rng = random.Random()
_np_rng = np.random.default_rng()


def reseed(seed: int) -> None:
    """Seed the generators that the random operators draw from."""
    global _np_rng
    _rng.seed(seed)
    _np_rng = np.random.default_rng(abs(int(seed)))


CV2_INTERPOLATION: dict[str, int] = {
    "nearest": cv2.INTER_NEAREST,
    "bilinear": cv2.INTER_LINEAR,
    "area": cv2.INTER_AREA,
    "bicubic": cv2.INTER_CUBIC,
    "lanczos": cv2.INTER_LANCZOS4,
}
_CV2_CODES = {v: k for k, v in CV2_INTERPOLATION.items()}


# --------------------------------------------------------------------------- helpers


def _err(op: str, msg: str) -> ValueError:
    return ValueError(f"{op}: {msg}")


def parse_number(value: Any, *, op: str = "", arg: str = "") -> float:
    """A number, or a string such as ``"1./255."`` / ``"0.5"``, as a float.

    PaddleClas ``eval``s string arguments; this accepts only a plain number or a
    single ``a/b`` division, which covers what its configs write, and never
    evaluates code.
    """
    where = f"{op}: {arg}" if op else (arg or "value")
    if isinstance(value, bool):
        raise ValueError(f"{where} must be a number, got {value!r}")
    if isinstance(value, numbers.Real):
        out = float(value)
    elif isinstance(value, str):
        parts = value.replace(" ", "").split("/")
        if len(parts) > 2 or not all(parts):
            raise ValueError(f"{where} must be a number or 'a/b' (e.g. '1./255.'), got {value!r}")
        try:
            nums = [float(p) for p in parts]
        except ValueError:
            raise ValueError(
                f"{where} must be a number or 'a/b' (e.g. '1./255.'), got {value!r}"
            ) from None
        if len(nums) == 2:
            if nums[1] == 0:
                raise ValueError(f"{where} divides by zero: {value!r}")
            out = nums[0] / nums[1]
        else:
            out = nums[0]
    else:
        raise ValueError(f"{where} must be a number, got {value!r}")
    if not math.isfinite(out):
        raise ValueError(f"{where} must be finite, got {value!r}")
    return out


def _size_wh(op: str, size: Any, arg: str = "size") -> tuple[int, int]:
    """PaddleClas size: an int (square) or a 2-list passed to cv2 as (w, h)."""
    if isinstance(size, bool):
        raise _err(op, f"{arg} must be an int or [w, h], got {size!r}")
    if isinstance(size, numbers.Integral):
        w = h = int(size)
    elif isinstance(size, (list, tuple)) and len(size) == 2 and all(
        isinstance(s, numbers.Integral) and not isinstance(s, bool) for s in size
    ):
        w, h = int(size[0]), int(size[1])
    else:
        raise _err(op, f"{arg} must be an int or a list of two ints, got {size!r}")
    if w <= 0 or h <= 0:
        raise _err(op, f"{arg} must be positive, got {size!r}")
    return w, h


def _range(op: str, value: Any, arg: str, *, lo_min: float, hi_max: float | None) -> tuple[float, float]:
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise _err(op, f"{arg} must be a list of two numbers, got {value!r}")
    lo = parse_number(value[0], op=op, arg=arg)
    hi = parse_number(value[1], op=op, arg=arg)
    if not (lo > lo_min and lo <= hi and (hi_max is None or hi <= hi_max)):
        bound = f"{lo_min} < lo <= hi" + (f" <= {hi_max}" if hi_max is not None else "")
        raise _err(op, f"{arg} must satisfy {bound}, got {value!r}")
    return lo, hi


def _interpolation(op: str, interpolation: Any) -> int:
    if interpolation is None:
        return cv2.INTER_LINEAR
    if isinstance(interpolation, str) and interpolation.lower() in CV2_INTERPOLATION:
        return CV2_INTERPOLATION[interpolation.lower()]
    if (
        isinstance(interpolation, numbers.Integral)
        and not isinstance(interpolation, bool)
        and int(interpolation) in _CV2_CODES
    ):
        return int(interpolation)
    raise _err(
        op,
        f"interpolation must be one of {sorted(CV2_INTERPOLATION)} or null, got {interpolation!r}",
    )


def _backend(op: str, backend: Any) -> None:
    if not isinstance(backend, str) or backend.lower() != "cv2":
        raise _err(op, f"backend {backend!r} is not supported; only 'cv2' is")


def _bool(op: str, arg: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise _err(op, f"{arg} must be true or false, got {value!r}")
    return value


def _triple(op: str, arg: str, value: Any) -> list[float]:
    if not isinstance(value, (list, tuple)) or len(value) != 3:
        raise _err(op, f"{arg} must be a list of 3 numbers, got {value!r}")
    return [parse_number(v, op=op, arg=arg) for v in value]


# --------------------------------------------------------------------------- operators


class DecodeImage:
    """Encoded bytes -> uint8 HWC array (RGB when ``to_rgb``), as cv2.imdecode does."""

    name = "DecodeImage"

    def __init__(self, to_rgb: bool = True, to_np: bool = False, channel_first: bool = False):
        self.to_rgb = _bool(self.name, "to_rgb", to_rgb)
        self.to_np = _bool(self.name, "to_np", to_np)  # accepted, no effect (as in PaddleClas)
        self.channel_first = _bool(self.name, "channel_first", channel_first)

    def __call__(self, data: bytes) -> np.ndarray:
        if not isinstance(data, (bytes, bytearray, memoryview, np.ndarray)) or len(data) == 0:
            raise ValueError("DecodeImage: input must be non-empty encoded image bytes")
        buf = np.frombuffer(data, dtype=np.uint8) if not isinstance(data, np.ndarray) else data
        img = cv2.imdecode(buf, cv2.IMREAD_COLOR)
        if img is None:
            raise ValueError("DecodeImage: cannot decode image data")
        if self.to_rgb:
            img = img[:, :, ::-1]
        if self.channel_first:
            img = img.transpose((2, 0, 1))
        return img


class RandCropImage:
    """Random area/aspect crop, then resize to ``size`` (PaddleClas formula, no retries)."""

    name = "RandCropImage"

    def __init__(
        self,
        size: Any,
        scale: Sequence[float] | None = None,
        ratio: Sequence[float] | None = None,
        interpolation: Any = None,
        backend: str = "cv2",
    ):
        self.size = _size_wh(self.name, size)
        self.scale = _range(self.name, [0.08, 1.0] if scale is None else scale, "scale", lo_min=0.0, hi_max=1.0)
        self.ratio = _range(self.name, [3.0 / 4.0, 4.0 / 3.0] if ratio is None else ratio, "ratio", lo_min=0.0, hi_max=None)
        self.interpolation = _interpolation(self.name, interpolation)
        _backend(self.name, backend)

    def sample_window(self, img_w: int, img_h: int) -> tuple[int, int, int, int]:
        """(x, y, w, h) of the crop window, drawn as PaddleClas draws it."""
        ar = math.sqrt(_rng.uniform(*self.ratio))
        fw, fh = ar, 1.0 / ar
        bound = min((img_w / img_h) / (fw * fw), (img_h / img_w) / (fh * fh))
        s_max = min(self.scale[1], bound)
        s_min = min(self.scale[0], bound)
        target = math.sqrt(img_w * img_h * _rng.uniform(s_min, s_max))
        w = max(1, int(target * fw))
        h = max(1, int(target * fh))
        x = _rng.randint(0, img_w - w)
        y = _rng.randint(0, img_h - h)
        return x, y, w, h

    def __call__(self, img: np.ndarray) -> np.ndarray:
        img_h, img_w = img.shape[:2]
        x, y, w, h = self.sample_window(img_w, img_h)
        return cv2.resize(img[y : y + h, x : x + w], self.size, interpolation=self.interpolation)


class RandFlipImage:
    """Flip with probability 0.5 (``flip_code`` as cv2.flip: 1 horizontal, 0 vertical, -1 both)."""

    name = "RandFlipImage"

    def __init__(self, flip_code: int = 1):
        if isinstance(flip_code, bool) or flip_code not in (-1, 0, 1):
            raise _err(self.name, f"flip_code must be -1, 0 or 1, got {flip_code!r}")
        self.flip_code = int(flip_code)

    def __call__(self, img: np.ndarray) -> np.ndarray:
        if _rng.randint(0, 1) == 1:
            return cv2.flip(img, self.flip_code)
        return img


class ResizeImage:
    """Resize so the short side is ``resize_short`` (sides rounded), or to a fixed ``size``."""

    name = "ResizeImage"

    def __init__(self, size: Any = None, resize_short: Any = None, interpolation: Any = None, backend: str = "cv2"):
        if resize_short is not None and (
            isinstance(resize_short, bool) or not isinstance(resize_short, numbers.Real)
        ):
            raise _err(self.name, f"resize_short must be a positive int, got {resize_short!r}")
        if resize_short is not None and resize_short > 0:
            if resize_short != int(resize_short):
                raise _err(self.name, f"resize_short must be an int, got {resize_short!r}")
            self.resize_short: int | None = int(resize_short)
            self.w = self.h = None
        elif size is not None:
            self.resize_short = None
            self.w, self.h = _size_wh(self.name, size)
        else:
            raise _err(self.name, "give resize_short (a positive int) or size")
        self.interpolation = _interpolation(self.name, interpolation)
        _backend(self.name, backend)

    def output_size(self, img_w: int, img_h: int) -> tuple[int, int]:
        if self.resize_short is not None:
            percent = float(self.resize_short) / min(img_w, img_h)
            return int(round(img_w * percent)), int(round(img_h * percent))
        return self.w, self.h  # type: ignore[return-value]

    def __call__(self, img: np.ndarray) -> np.ndarray:
        img_h, img_w = img.shape[:2]
        return cv2.resize(img, self.output_size(img_w, img_h), interpolation=self.interpolation)


class CropImage:
    """Center crop; the window starts at ((W - w) // 2, (H - h) // 2)."""

    name = "CropImage"

    def __init__(self, size: Any):
        self.size = _size_wh(self.name, size)  # (w, h), as PaddleClas unpacks it

    def __call__(self, img: np.ndarray) -> np.ndarray:
        w, h = self.size
        img_h, img_w = img.shape[:2]
        if img_h < h or img_w < w:
            raise ValueError(
                f"CropImage: image of {img_w}x{img_h} is smaller than the crop {w}x{h}"
            )
        x0 = (img_w - w) // 2
        y0 = (img_h - h) // 2
        return img[y0 : y0 + h, x0 : x0 + w]


class NormalizeImage:
    """``(img * scale - mean) / std`` in float32; ``order`` '' (HWC) or 'chw'."""

    name = "NormalizeImage"

    def __init__(
        self,
        scale: Any = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        order: str = "",
        output_fp16: bool = False,
        channel_num: int = 3,
    ):
        self.scale = 1.0 / 255.0 if scale is None else parse_number(scale, op=self.name, arg="scale")
        if self.scale <= 0:
            raise _err(self.name, f"scale must be positive, got {scale!r}")
        self.mean = _triple(self.name, "mean", [0.485, 0.456, 0.406] if mean is None else mean)
        self.std = _triple(self.name, "std", [0.229, 0.224, 0.225] if std is None else std)
        if any(s <= 0 for s in self.std):
            raise _err(self.name, f"std must be positive, got {std!r}")
        if not isinstance(order, str) or order.lower() not in ("", "hwc", "chw"):
            raise _err(self.name, f"order must be '' (HWC) or 'chw', got {order!r}")
        self.order = order.lower()
        if output_fp16 is not False:
            raise _err(self.name, "output_fp16 is not supported (images are float32)")
        if channel_num != 3:
            raise _err(self.name, f"channel_num must be 3, got {channel_num!r}")
        shape = (3, 1, 1) if self.order == "chw" else (1, 1, 3)
        self._scale = np.float32(self.scale)
        self._mean = np.array(self.mean, dtype=np.float32).reshape(shape)
        self._std = np.array(self.std, dtype=np.float32).reshape(shape)

    def __call__(self, img: np.ndarray) -> np.ndarray:
        return ((img.astype(np.float32) * self._scale - self._mean) / self._std).astype(np.float32)


class ToCHWImage:
    """HWC -> CHW."""

    name = "ToCHWImage"

    def __init__(self):
        pass

    def __call__(self, img: np.ndarray) -> np.ndarray:
        return img.transpose((2, 0, 1))


class RandomErasing:
    """Random erasing (Zhong et al.) as PaddleClas does it, on an HWC image.

    With probability ``EPSILON``: up to ``attempt`` tries of an area fraction in
    [sl, sh] and an aspect h/w in [r1, 1/r1]; the first window that fits
    (strictly smaller than the image) is filled with ``mean``.
    """

    name = "RandomErasing"

    def __init__(
        self,
        EPSILON: Any = 0.5,
        sl: Any = 0.02,
        sh: Any = 0.4,
        r1: Any = 0.3,
        mean: Sequence[float] = (0.0, 0.0, 0.0),
        attempt: int = 100,
        use_log_aspect: bool = False,
        mode: str = "const",
    ):
        n = self.name
        self.EPSILON = parse_number(EPSILON, op=n, arg="EPSILON")
        self.sl = parse_number(sl, op=n, arg="sl")
        self.sh = parse_number(sh, op=n, arg="sh")
        r1 = parse_number(r1, op=n, arg="r1")
        if not 0.0 <= self.EPSILON <= 1.0:
            raise _err(n, f"EPSILON must be in [0, 1], got {EPSILON!r}")
        if not 0.0 < self.sl <= self.sh <= 1.0:
            raise _err(n, f"need 0 < sl <= sh <= 1, got sl={sl!r}, sh={sh!r}")
        if r1 <= 0:
            raise _err(n, f"r1 must be positive, got {r1!r}")
        self.use_log_aspect = _bool(n, "use_log_aspect", use_log_aspect)
        self.r1_value = r1
        self.r1 = (math.log(r1), math.log(1 / r1)) if self.use_log_aspect else (r1, 1 / r1)
        if isinstance(attempt, bool) or not isinstance(attempt, numbers.Integral) or attempt < 1:
            raise _err(n, f"attempt must be a positive int, got {attempt!r}")
        self.attempt = int(attempt)
        self.mean = _triple(n, "mean", list(mean))
        if mode not in ("const", "rand", "pixel"):
            raise _err(n, f"mode must be 'const', 'rand' or 'pixel', got {mode!r}")
        self.mode = mode

    def _pixels(self, h: int, w: int, c: int):
        if self.mode == "rand":
            return _np_rng.normal(size=(1, 1, 3))
        if self.mode == "pixel":
            return _np_rng.normal(size=(h, w, c))
        return self.mean

    def sample_window(self, img_h: int, img_w: int) -> tuple[int, int, int, int] | None:
        """(y, x, h, w) of the erased window, or None when nothing is erased."""
        if _rng.random() > self.EPSILON:
            return None
        area = img_h * img_w
        for _ in range(self.attempt):
            target = _rng.uniform(self.sl, self.sh) * area
            aspect = _rng.uniform(*self.r1)
            if self.use_log_aspect:
                aspect = math.exp(aspect)
            h = int(round(math.sqrt(target * aspect)))
            w = int(round(math.sqrt(target / aspect)))
            if w < img_w and h < img_h:
                y = _rng.randint(0, img_h - h)
                x = _rng.randint(0, img_w - w)
                return y, x, h, w
        return None

    def __call__(self, img: np.ndarray) -> np.ndarray:
        win = self.sample_window(img.shape[0], img.shape[1])
        if win is None:
            return img
        y, x, h, w = win
        if not img.flags.writeable:
            img = img.copy()
        pixels = self._pixels(h, w, img.shape[2])
        if img.shape[2] == 3:
            img[y : y + h, x : x + w, :] = pixels
        else:
            img[y : y + h, x : x + w, 0] = np.asarray(pixels).reshape(-1)[0]
        return img


OPS: dict[str, type] = {
    cls.name: cls
    for cls in (
        DecodeImage,
        RandCropImage,
        RandFlipImage,
        ResizeImage,
        CropImage,
        NormalizeImage,
        ToCHWImage,
        RandomErasing,
    )
}

# Every operator above has a DALI lowering in clasflow.data.dali_pipeline (a few
# argument values do not -- e.g. RandomErasing mode 'pixel' -- and are reported
# there by name when the pipeline is built).
DALI_SUPPORTED: frozenset[str] = frozenset(OPS)


def _spec_args(spec: Any) -> dict:
    args = getattr(spec, "args", None)
    return dict(args) if args else {}


def build_ops(specs: Sequence[Any]) -> list:
    """Instantiate operators from TransformSpec-like objects (``.name``, ``.args``)."""
    ops = []
    for i, spec in enumerate(specs):
        name = spec.name
        if name not in OPS:
            raise ValueError(f"transform #{i + 1} {name!r} is not a supported operator (supported: {sorted(OPS)})")
        ops.append(OPS[name](**_spec_args(spec)))
    return ops


def apply_ops(ops: Sequence[Any], data: Any) -> Any:
    for op in ops:
        data = op(data)
    return data

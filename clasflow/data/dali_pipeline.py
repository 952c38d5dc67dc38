"""DALI loader: one pipeline definition for GPU (nvJPEG) and CPU-only runs.

The PaddleClas transform list is lowered to DALI operators:

===============================  ==========================================================
PaddleClas                        DALI
===============================  ==========================================================
DecodeImage (+ RandCropImage)     fn.decoders.image, or fn.decoders.image_slice with a window
                                  drawn by PaddleClas's own formula (below) -- only the crop
                                  is decoded
RandCropImage                     window + resize: on the GPU fn.resize(antialias=False); on the
                                  CPU cv2.resize in fn.python_function, a batch at a time on a
                                  thread pool (DALI's CPU resampling
                                  costs ~5x cv2's: 0.85 vs 0.16 ms per 224 px image here)
RandFlipImage                     a fed coin -> crop_mirror_normalize(mirror=)
                                  (fn.flip for vertical flips)
ResizeImage                       fn.resize with PaddleClas's rounded output size (GPU), the
                                  operator's own cv2.resize in fn.python_function (CPU)
CropImage + NormalizeImage +      one fn.crop_mirror_normalize (crop at (W-w)//2, mean/std
ToCHWImage                        divided by scale, i.e. x255, output_layout CHW)
RandomErasing                     fn.erase with a window drawn as PaddleClas draws it
===============================  ==========================================================

Random windows are computed inside the graph with DALI arithmetic, so their
distributions are PaddleClas's, not DALI's defaults: RandCropImage draws the
aspect ratio uniformly and the area uniformly in [scale_lo, min(scale_hi, bound)]
(no rejection loop); RandomErasing draws ``attempt`` candidate windows (area in
[sl, sh], aspect in [r1, 1/r1]) as one vector and keeps the first that fits.

The graph uses no DALI random operator: every uniform number it needs comes from
``fn.external_source``, drawn per sample from ``default_rng([seed, epoch, index])``.
So the pipeline is built once per loader (not per epoch or evaluation), a sample's
augmentation does not depend on batch size, thread count or what else is in its
batch, and a run resumed at epoch k replays the same augmentations.

Samples are fed by the same ``fn.external_source`` following the shared epoch plan
(clasflow.data.epoch_indices): exact shuffling from shuffle_seed + epoch, sharding
by rank, a short last batch, and -- because the loader knows which files are in
flight -- a decode failure is traced to the file that caused it.

GPU (device_id = this process's GPU): mixed decoding, the rest on the GPU.  CPU-only
(device_id=None): CPU operators.  Either way the outputs reach Paddle through DLPack
without a copy: with DALI's default (dynamic) executor an output buffer belongs to
its Python object, so the paddle Tensor keeps it alive after later iterations.
"""

from __future__ import annotations

import collections
import concurrent.futures
import functools
import logging
import os
import time
from typing import Any, Callable, Sequence

import cv2
import numpy as np

from clasflow.data import EpochLoader, SampleSet
from clasflow.data import transforms as T
from clasflow.errors import ConfigError, DataError

log = logging.getLogger("clasflow.data")

__all__ = ["DaliLoader", "DaliUnsupportedError", "define_graph", "build_pipeline", "dali_device"]


class DaliUnsupportedError(ConfigError):
    """A transform (or one of its argument values) has no DALI equivalent."""


def _unsupported(op: str, what: str) -> DaliUnsupportedError:
    return DaliUnsupportedError(
        f"transform {op}: {what} has no DALI mapping; use loader: opencv for this config"
    )


def dali_device(device: str = "auto") -> int | None:
    """The DALI device_id to use: this process's GPU, or None for CPU-only.

    ``device`` (or env CLASFLOW_DALI_DEVICE) is "auto", "cpu" or "gpu".
    """
    device = os.environ.get("CLASFLOW_DALI_DEVICE", device) or "auto"
    if device not in ("auto", "cpu", "gpu"):
        raise ConfigError(f"DALI device must be auto, cpu or gpu, got {device!r}")
    if device == "cpu":
        return None
    import paddle

    has_gpu = paddle.is_compiled_with_cuda() and paddle.device.cuda.device_count() > 0
    if not has_gpu:
        if device == "gpu":
            raise ConfigError("DALI on GPU was requested but Paddle sees no CUDA device")
        return None
    cur = paddle.device.get_device()  # "gpu:N" -- the device this process trains on
    if cur.startswith("gpu:"):
        return int(cur.split(":")[1])
    return int(os.environ.get("FLAGS_selected_gpus", "0").split(",")[0])


# ----------------------------------------------------------------------------- lowering


def _cv2_resize(img: np.ndarray, *, size: tuple[int, int], interpolation: int) -> np.ndarray:
    return cv2.resize(img, size, interpolation=interpolation)


_resize_pool: concurrent.futures.ThreadPoolExecutor | None = None


def _on_threads(resize: Callable[[np.ndarray], np.ndarray]) -> Callable[[list[np.ndarray]], list[np.ndarray]]:
    """A per-sample resize applied to a whole batch on a thread pool (cv2 releases the GIL).

    One python_function call per sample keeps the resizes serial under the GIL; a batch spread
    over one thread per core lets them run beside DALI's own threads.
    """
    global _resize_pool
    if _resize_pool is None:
        _resize_pool = concurrent.futures.ThreadPoolExecutor(max(1, len(os.sched_getaffinity(0))),
                                                             thread_name_prefix="clasflow-resize")
    pool = _resize_pool

    def batch(images: list[np.ndarray]) -> list[np.ndarray]:
        return list(pool.map(resize, images))

    return batch

# cv2 code -> DALI interp name.  Measured against cv2 on the same images (normalized
# units): bilinear mean |diff| 0.002 / max 0.018, bicubic 0.003 / 0.018.  Nearest is left
# out on purpose (cv2 samples floor(x * scale), DALI pixel centres: max diff 0.3), and
# so are 'area' and 'lanczos' (no same-kernel DALI filter).
_INTERP = {
    cv2.INTER_LINEAR: "INTERP_LINEAR",
    cv2.INTER_CUBIC: "INTERP_CUBIC",
}


def _interp(op_name: str, code: int):
    from nvidia.dali import types

    if code not in _INTERP:
        name = {v: k for k, v in T.CV2_INTERPOLATION.items()}.get(code, code)
        raise _unsupported(op_name, f"interpolation {name!r} (DALI matches cv2 for bilinear and bicubic only)")
    return getattr(types, _INTERP[code])


def check_dali_transforms(ops: Sequence[Any]) -> None:
    """Raise DaliUnsupportedError naming the first transform DALI cannot express."""
    _Lowering(ops, gpu=False, dry_run=True).run(None)


class _Lowering:
    """Walks the operator list and emits DALI nodes.

    Geometric ops work on uint8 HWC images with the image size tracked as python
    ints (when known) or DALI scalar nodes.  Crop / mirror / normalize / CHW are
    kept pending and emitted as one crop_mirror_normalize when something needs the
    materialised image (RandomErasing) or at the end.
    """

    def __init__(self, ops: Sequence[Any], *, gpu: bool, dry_run: bool = False):
        self.ops = list(ops)
        self.gpu = gpu
        self.dry = dry_run
        self.randoms = None  # per-sample vector of uniforms in [0, 1), fed from Python
        self.draws = 0  # how many of them the graph uses
        if not dry_run:
            from nvidia.dali import fn, types
            import nvidia.dali.math as dmath

            self.fn, self.types, self.dmath = fn, types, dmath

    # -- small arithmetic helpers that also work on python numbers --------------------------
    def _min(self, a, b):
        if isinstance(a, (int, float)) and isinstance(b, (int, float)):
            return min(a, b)
        return self.dmath.min(a, b)

    def _max(self, a, b):
        if isinstance(a, (int, float)) and isinstance(b, (int, float)):
            return max(a, b)
        return self.dmath.max(a, b)

    def _floor(self, a):
        if isinstance(a, (int, float)):
            return float(np.floor(a))
        return self.dmath.floor(a)

    def _sqrt(self, a):
        if isinstance(a, (int, float)):
            return float(np.sqrt(a))
        return self.dmath.sqrt(a)

    def _uniform(self, lo: float, hi: float, shape=None):
        """Uniform in [lo, hi): the next fed number(s) of the sample (a vector for ``shape=[K]``)."""
        k = self.draws
        if shape is None:
            u = self.randoms[k]
            self.draws += 1
        else:
            u = self.randoms[k : k + shape[0]]
            self.draws += shape[0]
        return float(lo) + float(hi - lo) * u

    def _coin(self, probability: float):
        """1 with the given probability, else 0 (int32)."""
        return self.fn.cast(self._uniform(0.0, 1.0) < float(probability), dtype=self.types.INT32)

    def _randint(self, hi):
        """Uniform integer in [0, hi] (hi a node or number), as random.randint(0, hi)."""
        u = self._uniform(0.0, 1.0)
        return self._min(self._floor(u * (hi + 1.0)), hi)

    # -- the walk -------------------------------------------------------------------------
    def run(self, encoded, randoms=None):
        ops = self.ops
        if not ops or not isinstance(ops[0], T.DecodeImage):
            raise ConfigError("transforms must start with DecodeImage")
        dec = ops[0]
        if dec.channel_first:
            raise _unsupported("DecodeImage", "channel_first: true")
        self.encoded = encoded
        self.randoms = randoms
        self.img = None  # decoded node, None until decoded
        self.W = self.H = None
        self.pending_crop = None  # (w, h)
        self.pending_mirror = None  # coin node (or True in dry run)
        self.pending_norm = None  # NormalizeImage
        self.pending_chw = False
        self.dtype_float = False
        self.chw = False
        self.rgb = dec.to_rgb
        if not self.dry:
            shp = self.fn.peek_image_shape(encoded, dtype=self.types.FLOAT)
            self.H, self.W = shp[0], shp[1]
        i = 1
        while i < len(ops):
            op = ops[i]
            name = type(op).__name__
            handler = getattr(self, f"_op_{name}", None)
            if handler is None:
                raise _unsupported(name, "this operator")
            handler(op)
            i += 1
        self._flush()
        if not self.chw:
            raise ConfigError("transforms must include ToCHWImage")
        if self.dry:
            return None
        self._ensure_decoded()
        if not self.dtype_float:
            self.img = self.fn.cast(self.img, dtype=self.types.FLOAT)
        return self.img

    # -- materialisation ----------------------------------------------------------------
    def _decode_kwargs(self):
        t = self.types
        return dict(
            device="mixed" if self.gpu else "cpu",
            output_type=t.RGB if self.rgb else t.BGR,
            jpeg_fancy_upsampling=True,  # what libjpeg (and so cv2.imdecode) does
        )

    def _ensure_decoded(self):
        if self.dry or self.img is not None:
            return
        self.img = self.fn.decoders.image(self.encoded, **self._decode_kwargs())

    def _geometric(self, name: str):
        """Checks before an op that changes geometry; materialises pending crop/mirror."""
        if self.pending_norm is not None or self.pending_chw or self.dtype_float or self.chw:
            raise _unsupported(name, "after NormalizeImage/ToCHWImage")
        if self.pending_crop is not None or self.pending_mirror is not None:
            self._flush()

    def _flush(self):
        if self.pending_crop is None and self.pending_mirror is None and self.pending_norm is None and not self.pending_chw:
            return
        crop, mirror, norm, chw = self.pending_crop, self.pending_mirror, self.pending_norm, self.pending_chw
        self.pending_crop = self.pending_mirror = self.pending_norm = None
        self.pending_chw = False
        if norm is not None:
            self.dtype_float = True
        if chw:
            self.chw = True
        if self.dry:
            return
        self._ensure_decoded()
        t = self.types
        kw: dict[str, Any] = {}
        if crop is not None:
            w, h = crop
            # anchor (W - w) // 2; +0.25 keeps it exact whether DALI rounds or floors pos * (W - w)
            dx, dy = self.W - w, self.H - h
            kw.update(
                crop_w=float(w),
                crop_h=float(h),
                crop_pos_x=(self._floor(dx / 2.0) + 0.25) / self._max(dx, 1.0),
                crop_pos_y=(self._floor(dy / 2.0) + 0.25) / self._max(dy, 1.0),
            )
            self.W, self.H = w, h
        if mirror is not None:
            kw["mirror"] = mirror
        if norm is not None:
            kw.update(
                mean=[m / norm.scale for m in norm.mean],
                std=[s / norm.scale for s in norm.std],
                dtype=t.FLOAT,
            )
        else:
            kw.update(mean=[0.0], std=[1.0], dtype=t.FLOAT if self.dtype_float else t.UINT8)
        kw["output_layout"] = "CHW" if self.chw else "HWC"
        self.img = self.fn.crop_mirror_normalize(self.img, **kw)

    def _cpu_resize(self, resize: Callable[[np.ndarray], np.ndarray]):
        """Resize on the CPU with cv2 inside the graph (fn.python_function, one call per batch,
        its samples spread over a thread pool).

        DALI's CPU resampling kernel costs about 5x cv2.resize per image (measured, see
        clasflow/data/bench.py); cv2.resize is also exactly what PaddleClas's operators run.
        """
        return self.fn.python_function(self.img, function=_on_threads(resize), batch_processing=True,
                                       output_layouts="HWC")

    # -- operators ------------------------------------------------------------------------
    def _op_DecodeImage(self, op):
        raise _unsupported("DecodeImage", "a second DecodeImage")

    def _op_RandCropImage(self, op):
        self._geometric("RandCropImage")
        interp = _interp("RandCropImage", op.interpolation)
        if self.dry:
            return
        W, H = self.W, self.H
        ar = self._sqrt(self._uniform(*op.ratio))
        fw, fh = ar, 1.0 / ar
        bound = self._min((W / H) / (fw * fw), (H / W) / (fh * fh))
        s_max = self._min(op.scale[1], bound)
        s_min = self._min(op.scale[0], bound)
        frac = s_min + self._uniform(0.0, 1.0) * (s_max - s_min)
        target = self._sqrt(W * H * frac)
        cw = self._max(self._floor(target * fw), 1.0)
        ch = self._max(self._floor(target * fh), 1.0)
        x = self._randint(W - cw)
        y = self._randint(H - ch)
        fn = self.fn
        anchor, shape = fn.stack(x, y), fn.stack(cw, ch)
        if self.img is None:  # decode only the window
            self.img = fn.decoders.image_slice(
                self.encoded,
                anchor,
                shape,
                normalized_anchor=False,
                normalized_shape=False,
                axis_names="WH",
                **self._decode_kwargs(),
            )
        else:
            self.img = fn.slice(
                self.img, anchor, shape, normalized_anchor=False, normalized_shape=False, axis_names="WH"
            )
        w_out, h_out = op.size
        if self.gpu:
            self.img = fn.resize(
                self.img, resize_x=float(w_out), resize_y=float(h_out), interp_type=interp, antialias=False
            )
        else:
            self.img = self._cpu_resize(functools.partial(_cv2_resize, size=op.size, interpolation=op.interpolation))
        self.W, self.H = w_out, h_out

    def _op_ResizeImage(self, op):
        self._geometric("ResizeImage")
        interp = _interp("ResizeImage", op.interpolation)
        if self.dry:
            return
        self._ensure_decoded()
        if not self.gpu:  # the operator itself (cv2.resize, PaddleClas's rounding); sizes read back
            self.img = self._cpu_resize(op)
            if op.resize_short is None:
                self.W, self.H = op.w, op.h
            else:
                shape = self.img.shape(dtype=self.types.FLOAT)
                self.H, self.W = shape[0], shape[1]
            return
        if op.resize_short is not None:
            if isinstance(self.W, int) and isinstance(self.H, int):
                w_out, h_out = op.output_size(self.W, self.H)
            else:
                pct = float(op.resize_short) / self._min(self.W, self.H)
                w_out = self._floor(self.W * pct + 0.5)
                h_out = self._floor(self.H * pct + 0.5)
        else:
            w_out, h_out = op.w, op.h
        rx = float(w_out) if isinstance(w_out, (int, float)) else w_out
        ry = float(h_out) if isinstance(h_out, (int, float)) else h_out
        self.img = self.fn.resize(self.img, resize_x=rx, resize_y=ry, interp_type=interp, antialias=False)
        self.W, self.H = w_out, h_out

    def _op_CropImage(self, op):
        self._geometric("CropImage")
        self.pending_crop = op.size

    def _op_RandFlipImage(self, op):
        if op.flip_code == 1:
            if self.pending_mirror is not None:  # two flips: materialise the first
                self._flush()
            self.pending_mirror = True if self.dry else self._coin(0.5)
            return
        if self.dry:
            return
        self._flush()
        self._ensure_decoded()
        coin = self._coin(0.5)
        horizontal = coin if op.flip_code == -1 else 0
        self.img = self.fn.flip(self.img, horizontal=horizontal, vertical=coin)

    def _op_NormalizeImage(self, op):
        if self.pending_norm is not None or self.dtype_float:
            raise _unsupported("NormalizeImage", "a second NormalizeImage")
        want_chw = op.order == "chw"
        if want_chw != (self.pending_chw or self.chw):
            raise _unsupported(
                "NormalizeImage", f"order {op.order!r} on a {'CHW' if (self.pending_chw or self.chw) else 'HWC'} image"
            )
        self.pending_norm = op

    def _op_ToCHWImage(self, op):
        if self.pending_chw or self.chw:
            raise _unsupported("ToCHWImage", "a second ToCHWImage")
        self.pending_chw = True

    def _op_RandomErasing(self, op):
        if op.mode != "const":
            raise _unsupported("RandomErasing", f"mode {op.mode!r} (only 'const')")
        if self.dry:
            return
        # The erased window is drawn on the current image; CHW conversion pending after it
        # does not change it (fn.erase addresses H and W by name), so emit CMN now.
        self._flush()
        self._ensure_decoded()
        fn, K = self.fn, op.attempt
        H, W = self.H, self.W
        area = H * W
        target = self._uniform(op.sl, op.sh, shape=[K]) * area
        aspect = self._uniform(op.r1[0], op.r1[1], shape=[K])
        if op.use_log_aspect:
            aspect = self.dmath.exp(aspect)
        h = self.dmath.floor(self.dmath.sqrt(target * aspect) + 0.5)
        w = self.dmath.floor(self.dmath.sqrt(target / aspect) + 0.5)
        fits = (w < W) & (h < H)
        # first fitting attempt: highest (K - index) among the fitting ones
        rank = fits * (K - self.types.Constant(np.arange(K, dtype=np.float32)))
        best = fn.reductions.max(rank)
        pick = (rank == best) & fits
        h_sel = fn.reductions.sum(pick * h)
        w_sel = fn.reductions.sum(pick * w)
        apply = self._coin(op.EPSILON) * (best > 0)
        y = self._randint(H - h_sel)
        x = self._randint(W - w_sel)
        self.img = fn.erase(
            self.img,
            anchor=fn.stack(y, x),
            shape=fn.stack(h_sel * apply, w_sel * apply),
            axis_names="HW",
            fill_value=[float(m) for m in op.mean],
        )


def define_graph(encoded, randoms, ops: Sequence[Any], *, gpu: bool):
    """DALI nodes for the PaddleClas operator list applied to ``encoded`` bytes.

    ``randoms`` is a per-sample float vector of uniforms in [0, 1); returns
    ``(image, draws)``, draws being how many of them each sample needs.
    """
    lowering = _Lowering(ops, gpu=gpu)
    image = lowering.run(encoded, randoms)
    return image, lowering.draws


def build_pipeline(
    source: Callable[[], Any],
    ops: Sequence[Any],
    *,
    batch_size: int,
    num_threads: int,
    device_id: int | None,
    prefetch: int = 2,
):
    """The pipeline: external_source (bytes, label[, uniforms]) -> lowered transforms -> (image, label).

    Returns ``(pipeline, draws)``, not built yet: ``source`` feeds (bytes, labels) and, when
    ``draws`` > 0, a ``[batch, draws]`` array of uniforms.  The default (dynamic) executor is
    asked for explicitly: it gives every output its own buffer, which the zero-copy hand-over
    relies on.
    """
    from nvidia.dali import fn, pipeline_def, types

    def define(fed_randoms: bool):
        draws = []

        @pipeline_def(
            batch_size=batch_size,
            num_threads=max(1, num_threads),
            device_id=device_id,
            seed=0,  # no DALI random operator is used: the randomness is fed
            prefetch_queue_depth=prefetch,
            exec_dynamic=True,
        )
        def _pipe():
            outs = fn.external_source(source=source, num_outputs=3 if fed_randoms else 2, batch=True,
                                      dtype=[types.UINT8, types.INT64, types.FLOAT][: 3 if fed_randoms else 2])
            image, n = define_graph(outs[0], outs[2] if fed_randoms else None, ops, gpu=device_id is not None)
            draws.append(n)
            return image, outs[1]

        return _pipe(), draws[0]

    pipe, draws = define(True)
    if draws == 0:  # nothing random (eval transforms): no uniforms output at all
        pipe, draws = define(False)
    return pipe, draws


# ------------------------------------------------------------------------------ feeding


class _Feeder:
    """external_source callback following an epoch plan; remembers the batches in flight."""

    def __init__(self, loader: "DaliLoader"):
        self.loader = loader
        self.plan: list[np.ndarray] = []
        self.pos = 0
        self.epoch = 0
        self.draws = 0  # uniforms per sample (set from the built graph)
        self.in_flight: collections.deque[np.ndarray] = collections.deque()
        self.stopped = True

    def start(self, plan: list[np.ndarray], epoch: int) -> None:
        self.plan, self.pos, self.stopped, self.epoch = list(plan), 0, False, int(epoch)
        self.in_flight.clear()

    def uniforms(self, index: int) -> np.ndarray:
        """The sample's uniforms in [0, 1) for this epoch: a function of (seed, epoch, index) only."""
        key = [int(self.loader.seed) % 2**64, self.epoch, index]
        return np.random.default_rng(key).random(self.draws, dtype=np.float32)

    def stop(self) -> None:
        self.stopped = True

    def consumed(self) -> np.ndarray:
        return self.in_flight.popleft()

    def rewind(self, bad: set[int]) -> None:
        """Re-feed the batches that were in flight (minus bad samples) after a rebuild."""
        rest = list(self.in_flight) + self.plan[self.pos :]
        self.plan = [b[~np.isin(b, list(bad))] for b in rest]
        self.plan = [b for b in self.plan if len(b)]
        self.pos = 0
        self.in_flight.clear()

    def __call__(self):
        ld = self.loader
        while True:
            if self.stopped or self.pos >= len(self.plan):
                raise StopIteration
            batch = self.plan[self.pos]
            self.pos += 1
            data, kept = [], []
            for i in batch:
                i = int(i)
                path = ld.samples.paths[i]
                try:
                    buf = np.fromfile(path, dtype=np.uint8)
                    if buf.size == 0:
                        raise OSError("empty file")
                except OSError as e:
                    reason = f"cannot read ({getattr(e, 'strerror', None) or e})"
                    if not ld.skip_bad:
                        raise DataError(
                            f"bad image {path}: {reason}. Fix or remove it from "
                            f"{ld.samples.file_list}, or set skip_bad_images: true"
                        ) from None
                    ld._mark_bad(i, reason)
                    continue
                data.append(buf)
                kept.append(i)
            if kept:
                idx = np.asarray(kept, dtype=np.int64)
                self.in_flight.append(idx)
                labels = ld.samples.labels[idx].reshape(-1, 1)
                if not self.draws:
                    return data, labels
                return data, labels, np.stack([self.uniforms(i) for i in kept])


def _probe_dali_decode(buf: np.ndarray, rgb: bool) -> str | None:
    """Decode one buffer with a throwaway DALI CPU pipeline; the error text, or None."""
    from nvidia.dali import fn, pipeline_def, types

    @pipeline_def(batch_size=1, num_threads=1, device_id=None, seed=0, prefetch_queue_depth=1)
    def _p():
        enc = fn.external_source(source=lambda: [buf], batch=True, dtype=types.UINT8)
        return fn.decoders.image(enc, output_type=types.RGB if rgb else types.BGR)

    try:
        p = _p()
        p.build()
        p.run()
    except Exception as e:  # noqa: BLE001
        return str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
    return None


# ------------------------------------------------------------------------------ loader


def _to_paddle(batch):
    """A dense DALI batch as a paddle Tensor sharing its memory (DLPack; no copy), on the
    device Paddle computes on (one host-to-device copy when DALI ran on the CPU for a GPU run)."""
    import paddle

    out = paddle.utils.dlpack.from_dlpack(batch.as_tensor())
    device = paddle.device.get_device()
    if device != "cpu" and out.place.is_cpu_place():
        out = out.to(device)
    return out


class DaliLoader(EpochLoader):
    name = "dali"

    def __init__(
        self,
        *,
        samples: SampleSet,
        transforms: Sequence[Any],
        batch_size: int,
        num_workers: int,
        mode: str,
        shuffle_seed: int,
        seed: int,
        rank: int = 0,
        world: int = 1,
        skip_bad: bool = False,
        device: str = "auto",
        prefetch: int = 2,
    ):
        super().__init__(samples=samples, transforms=transforms, batch_size=batch_size, mode=mode,
                         shuffle_seed=shuffle_seed, seed=seed, rank=rank, world=world, skip_bad=skip_bad)
        ops = self._ops
        check_dali_transforms(ops)
        self.num_threads = max(1, num_workers)
        self.prefetch = max(1, int(prefetch))
        self.device_id = dali_device(device)
        self._feeder = _Feeder(self)
        self._pipe = None
        self._dirty = False  # an epoch was abandoned: drain before the next one
        self._rgb = ops[0].to_rgb
        self.builds = 0  # pipelines built so far: 1 unless a bad image or close() forced a rebuild
        self.build_seconds = 0.0  # wall time of the last build

    # -- pipeline lifecycle ------------------------------------------------------------------
    def _build(self) -> None:
        tic = time.perf_counter()
        self._pipe, self._feeder.draws = build_pipeline(
            self._feeder,
            self._ops,
            batch_size=self.batch_size,
            num_threads=self.num_threads,
            device_id=self.device_id,
            prefetch=self.prefetch,
        )
        self._pipe.build()
        self.builds += 1
        self.build_seconds = time.perf_counter() - tic

    def close(self) -> None:
        """Stop and free the pipeline (its threads and buffers); the next epoch rebuilds it.

        Call this before forking worker processes (e.g. an OpenCV loader) in the same
        process: forking while DALI threads are busy can deadlock the children.
        """
        if self._pipe is not None and self._dirty:
            self._drain()
        self._feeder.stop()
        self._teardown()
        self._dirty = False
        import gc

        gc.collect()

    def _teardown(self) -> None:
        self._pipe = None  # DALI frees its buffers when the pipeline is collected

    def _next(self):
        """One batch as paddle tensors; StopIteration at the end of the epoch."""
        img_tl, lab_tl = self._pipe.run()
        if not img_tl.is_dense_tensor():
            raise ConfigError(
                "transforms produce images of different sizes; end with a fixed-size "
                "crop (RandCropImage or CropImage)"
            )
        return _to_paddle(img_tl), _to_paddle(lab_tl)

    def _reset_epoch_end(self) -> None:
        if self._pipe is not None:
            self._pipe.reset()

    def _drain(self) -> None:
        """Finish an abandoned epoch: the feeder is stopped, so only in-flight batches remain."""
        self._feeder.stop()
        try:
            while True:
                self._next()
        except StopIteration:
            self._reset_epoch_end()
        except Exception:  # noqa: BLE001 - a broken pipeline is rebuilt anyway
            self._teardown()
        self._feeder.in_flight.clear()
        self._dirty = False

    def _diagnose(self, error: Exception) -> list[tuple[int, str]]:
        """Which in-flight files make DALI fail: cv2 first (cheap), then DALI itself."""
        cand = [int(i) for b in self._feeder.in_flight for i in b]
        found: list[tuple[int, str]] = []
        bufs = {}
        for i in cand:
            path = self.samples.paths[i]
            try:
                buf = np.fromfile(path, dtype=np.uint8)
            except OSError as e:
                found.append((i, f"cannot read ({e.strerror or e})"))
                continue
            bufs[i] = buf
            if buf.size == 0 or cv2.imdecode(buf, cv2.IMREAD_COLOR) is None:
                found.append((i, "cannot be decoded (corrupt or unsupported image)"))
        if not found:
            for i, buf in bufs.items():
                msg = _probe_dali_decode(buf, self._rgb)
                if msg is not None:
                    found.append((i, f"DALI cannot decode it ({msg})"))
        return found

    def __iter__(self):
        if self._dirty:
            self._drain()
        epoch = self._epoch
        self._epoch = epoch + 1
        self._feeder.start(self._plan(epoch), epoch)
        if self._pipe is None:
            self._build()
        self._dirty = True
        finished = False
        try:
            while True:
                try:
                    batch = self._next()
                except StopIteration:
                    self._reset_epoch_end()
                    finished = True
                    return
                except DataError:
                    self._teardown()
                    finished = True
                    raise
                except ConfigError:
                    self._teardown()
                    finished = True
                    raise
                except Exception as e:  # DALI failed: find the file, then raise or skip it
                    bad = self._diagnose(e)
                    self._teardown()
                    if not bad:
                        finished = True
                        files = [self.samples.paths[int(i)] for b in self._feeder.in_flight for i in b]
                        raise DataError(
                            f"DALI failed on a batch containing {len(files)} files "
                            f"(first: {files[:3]}): {str(e).strip().splitlines()[-1] if str(e).strip() else e}"
                        ) from e
                    if not self.skip_bad:
                        finished = True
                        i, reason = bad[0]
                        others = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
                        raise DataError(
                            f"bad image {self.samples.paths[i]}: {reason}{others}. Fix or remove it from "
                            f"{self.samples.file_list}, or set skip_bad_images: true"
                        ) from None
                    for i, reason in bad:
                        self._mark_bad(i, reason)
                    self._feeder.rewind(self._bad)
                    self._build()
                    continue
                self._feeder.consumed()
                yield batch
        finally:
            if finished:
                self._dirty = False

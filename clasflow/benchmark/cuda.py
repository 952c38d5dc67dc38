"""The few CUDA runtime calls the benchmark needs (devices, buffers, a stream, copies), through
NVIDIA's cuda-python (``cuda-bindings``; its runtime module carries its own CUDA runtime and
opens the driver, libcuda.so.1, at the first call, so it imports on a machine without a GPU)."""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)


class CudaError(RuntimeError):
    pass


class CudaRuntime:
    """``cuda.bindings.runtime`` behind small methods that raise :class:`CudaError` on an error."""

    def __init__(self, rt: Any):
        self.rt = rt
        self.H2D = rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        self.D2H = rt.cudaMemcpyKind.cudaMemcpyDeviceToHost

    @classmethod
    def load(cls) -> "CudaRuntime | None":
        """The runtime, or None when cuda-bindings is not installed."""
        try:
            from cuda.bindings import runtime as rt
        except ImportError:
            return None
        return cls(rt)

    def _call(self, what: str, fn, *args) -> Any:
        err, *out = fn(*args)
        if err != self.rt.cudaError_t.cudaSuccess:
            raise CudaError(f"CUDA runtime error {getattr(err, 'name', err)} in {what}")
        return out[0] if out else None

    def device_count(self) -> int:
        """Visible devices; 0 when there is none or no usable driver."""
        try:
            return int(self._call("cudaGetDeviceCount", self.rt.cudaGetDeviceCount))
        except CudaError:
            return 0

    def set_device(self, i: int) -> None:
        self._call("cudaSetDevice", self.rt.cudaSetDevice, int(i))

    def device_name(self, i: int) -> str | None:
        try:
            prop = self._call("cudaGetDeviceProperties", self.rt.cudaGetDeviceProperties, int(i))
        except CudaError:
            return None
        name = prop.name
        name = name.split(b"\0", 1)[0].decode(errors="replace") if isinstance(name, bytes) else str(name)
        return name or None

    def compute_capability(self, i: int) -> str | None:
        attr = self.rt.cudaDeviceAttr
        try:
            major = self._call("cudaDeviceGetAttribute", self.rt.cudaDeviceGetAttribute,
                               attr.cudaDevAttrComputeCapabilityMajor, int(i))
            minor = self._call("cudaDeviceGetAttribute", self.rt.cudaDeviceGetAttribute,
                               attr.cudaDevAttrComputeCapabilityMinor, int(i))
        except CudaError:
            return None
        return f"{major}.{minor}"

    def runtime_version(self) -> str | None:
        try:
            return version_text(self._call("cudaRuntimeGetVersion", self.rt.cudaRuntimeGetVersion))
        except CudaError:
            return None

    def driver_version(self) -> str | None:
        try:
            v = self._call("cudaDriverGetVersion", self.rt.cudaDriverGetVersion)
        except CudaError:
            return None
        return version_text(v) if v else None

    def malloc(self, nbytes: int) -> int:
        return int(self._call("cudaMalloc", self.rt.cudaMalloc, max(1, int(nbytes))))

    def free(self, ptr: int) -> None:
        self.rt.cudaFree(ptr)

    def stream(self) -> Any:
        return self._call("cudaStreamCreate", self.rt.cudaStreamCreate)

    def sync(self, stream: Any) -> None:
        self._call("cudaStreamSynchronize", self.rt.cudaStreamSynchronize, stream)

    def destroy_stream(self, stream: Any) -> None:
        self.rt.cudaStreamDestroy(stream)

    def copy(self, dst: int, src: int, nbytes: int, kind: Any, stream: Any) -> None:
        self._call("cudaMemcpyAsync", self.rt.cudaMemcpyAsync, dst, src, int(nbytes), kind, stream)


def version_text(n: int) -> str:
    """CUDA's integer version (12060) as text (12.6)."""
    return f"{n // 1000}.{(n % 1000) // 10}"


def gpu_tag(gpu_id: int) -> str:
    """The device's name and compute capability for cache keys ("NVIDIA A100-SXM4-40GB sm8.0"),
    or ``gpu<N>`` (said at WARNING: engines cached under it are not tied to one GPU model) when
    they cannot be read."""
    cuda = CudaRuntime.load()
    name = cuda.device_name(gpu_id) if cuda is not None else None
    if not name:
        why = "cuda-python is not installed" if cuda is None else "the CUDA runtime reports no device name"
        log.warning("GPU %d: its name cannot be read (%s): engine caches are keyed 'gpu%d', not by GPU model "
                    "and compute capability; clear the engine cache when the GPU model changes", gpu_id, why, gpu_id)
        return f"gpu{gpu_id}"
    cc = cuda.compute_capability(gpu_id)
    return f"{name} sm{cc}" if cc else name

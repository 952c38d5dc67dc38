"""Shared fixtures: a local HTTP server with injectable faults, and a small flowers102 fixture."""

from __future__ import annotations

import http.server
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.fault_table import fault_record  # noqa: F401  (the fixture of the fault suites, defined once)

os.environ.setdefault("OMP_NUM_THREADS", "2")


# Set by the pipeline steps (Profile.env) and by Kubeflow: a step test run in-process must not leave
# them to the tests after it (an experiment name or a pipeline run would redirect their MLflow runs).
RUN_CONTEXT_ENV = ("MLFLOW_EXPERIMENT_NAME", "MLFLOW_RUN_ID", "MLFLOW_PARENT_RUN_ID", "CLASFLOW_PIPELINE_RUN",
                   "CLASFLOW_PROFILE", "CLASFLOW_REQUIRE_GPU")


@pytest.fixture(autouse=True)
def _no_run_context_across_tests(monkeypatch):
    for name in RUN_CONTEXT_ENV:
        monkeypatch.delenv(name, raising=False)  # and put back as it was after the test


@dataclass
class Faults:
    """What the server does wrong, per path. Counters say how many requests remain affected."""

    truncate_after: dict[str, int] = field(default_factory=dict)  # path -> bytes sent, once
    fail_500: dict[str, int] = field(default_factory=dict)  # path -> remaining 500 answers
    html: set[str] = field(default_factory=set)
    slow: dict[str, float] = field(default_factory=dict)  # path -> seconds before the body
    ignore_range: set[str] = field(default_factory=set)
    requests: list[tuple[str, str | None]] = field(default_factory=list)  # (path, Range header)


class FaultyServer:
    def __init__(self, root: Path):
        self.root = root
        self.faults = Faults()
        faults, serve_root = self.faults, root

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def do_GET(self):  # noqa: N802 (http.server API)
                try:
                    self._get()
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeouts under test)

            def _get(self):
                path = self.path.lstrip("/")
                faults.requests.append((path, self.headers.get("Range")))
                if path in faults.slow:
                    time.sleep(faults.slow[path])
                if faults.fail_500.get(path, 0) > 0:
                    faults.fail_500[path] -= 1
                    self.send_error(500, "injected failure")
                    return
                if path in faults.html:
                    body = b"<html><body>Moved</body></html>"
                    self.send_response(200)
                    self.send_header("Content-Type", "text/html; charset=utf-8")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                file = serve_root / path
                if not file.is_file():
                    self.send_error(404, "not found")
                    return
                data = file.read_bytes()
                start = 0
                rng = self.headers.get("Range")
                if rng and path not in faults.ignore_range:
                    start = int(rng.split("=")[1].split("-")[0])
                    if start >= len(data):
                        self.send_response(416)
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                body = data[start:]
                cut = faults.truncate_after.pop(path, None)
                if cut is not None:
                    self.wfile.write(body[:cut])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> "FaultyServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def http_server(tmp_path):
    """A loopback HTTP server over tmp_path/'served' with injectable faults."""
    served = tmp_path / "served"
    served.mkdir()
    with FaultyServer(served) as server:
        yield server


@pytest.fixture(scope="session")
def digits_mirror(tmp_path_factory) -> Path:
    """A digits fixture in the flowers102 layout, with 102flowers.tgz and MD5SUMS (a mirror)."""
    from clasflow.data.fixture import build_fixture

    root = tmp_path_factory.mktemp("digits_mirror")
    build_fixture(root, source="digits", classes=4, per_class=10, size=32, archive=True)
    return root


CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "quick_start"


def tiny_overrides(root: Path, *, classes: int, size: int = 32, epochs: int = 2, batch: int = 8, loader: str = "opencv") -> list[str]:
    """Overrides that shrink a quick-start config to a fixture dataset at `root`."""
    return [
        f"epochs={epochs}", f"classes_num={classes}", "pretrained_model=", f"model_save_dir={root / 'output'}",
        f"image_shape=[3, {size}, {size}]", "print_interval=1",
        f"TRAIN.batch_size={batch}", f"VALID.batch_size={batch}", "TRAIN.num_workers=0", "VALID.num_workers=0",
        f"TRAIN.file_list={root / 'data' / 'train_list.txt'}", f"TRAIN.data_dir={root / 'data'}",
        f"VALID.file_list={root / 'data' / 'val_list.txt'}", f"VALID.data_dir={root / 'data'}",
        f"TRAIN.loader={loader}", f"VALID.loader={loader}",
        f"TRAIN.transforms.1.RandCropImage.size={size}",
        f"VALID.transforms.1.ResizeImage.resize_short={size + size // 8}", f"VALID.transforms.2.CropImage.size={size}",
    ]


@pytest.fixture(scope="session")
def digits_data(tmp_path_factory) -> Path:
    """A prepared digits dataset (lists written) under ROOT/data; returns ROOT."""
    from clasflow.data.fixture import build_fixture
    from clasflow.data.flowers102 import prepare_flowers102

    root = tmp_path_factory.mktemp("digits")
    build_fixture(root / "data", source="digits", classes=10, per_class=40, size=32, seed=0)
    prepare_flowers102(root / "data", download=False)
    return root


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    """A real `mlflow server` on loopback (sqlite backend), started and stopped here."""
    from tests.services import MlflowServer

    with MlflowServer(tmp_path_factory.mktemp("mlflow")) as server:
        yield server


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """moto's S3 server on loopback, started and stopped here; a test may stop and restart it (state is lost)."""
    from tests.services import MotoServer

    with MotoServer(tmp_path_factory.mktemp("moto")) as server:
        yield server


S3_ENV_VARS = (
    "CLASFLOW_S3_ENDPOINT", "MINIO_ENDPOINT", "AWS_ENDPOINT_URL", "CLASFLOW_S3_SECURE",
    "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "MINIO_ACCESS_KEY", "MINIO_SECRET_KEY",
    "CLASFLOW_S3_REGION", "AWS_REGION", "AWS_DEFAULT_REGION", "CLASFLOW_S3_ATTEMPTS", "CLASFLOW_S3_BACKOFF",
    "CLASFLOW_S3_PART_SIZE", "CLASFLOW_S3_PARALLEL", "CLASFLOW_S3_TIMEOUT",
)


@dataclass
class S3Env:
    server: object  # tests.services.MotoServer
    bucket: str

    def client(self):
        """A direct minio client on the server (no retries, short timeouts), for setup and inspection."""
        import urllib3
        from minio import Minio

        http = urllib3.PoolManager(retries=False, timeout=urllib3.Timeout(connect=2, read=10))
        return Minio(self.server.url.split("://", 1)[1], "testing", "testing", secure=False, region="us-east-1", http_client=http)

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"


@pytest.fixture
def s3_env(s3_server, monkeypatch) -> S3Env:
    """The environment pointing clasflow.storage at `s3_server` (fast retries) and a fresh bucket."""
    import uuid

    if s3_server.proc is None:  # a previous test stopped it
        s3_server.start()
    for name in S3_ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CLASFLOW_S3_ENDPOINT", s3_server.url)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setenv("CLASFLOW_S3_ATTEMPTS", "3")
    monkeypatch.setenv("CLASFLOW_S3_BACKOFF", "0.05")
    env = S3Env(server=s3_server, bucket=f"clasflow-{uuid.uuid4().hex[:12]}")
    env.client().make_bucket(env.bucket)
    return env

"""Shared fixtures: a local HTTP server with injectable faults, and a small flowers102 fixture."""

from __future__ import annotations

import http.server
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "2")


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

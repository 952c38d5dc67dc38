"""Secrets planted in the environment never come out.

``AWS_SECRET_ACCESS_KEY`` and ``MLFLOW_TRACKING_PASSWORD`` (with a username, so the MLflow client
uses them) hold planted values while a small training run is tracked to a real MLflow server and
artifacts go to S3 through clasflow.storage (with debug logging of every library), while the
pipeline is compiled and while the Helm chart is rendered. The values (plain, base64 and as a
basic-auth header) must appear in none of: the commands' stdout/stderr, the MLflow run's params
and tags, the MLflow server's database, artifacts and log, the files the run wrote, the compiled
pipeline, the rendered manifests. test_storage.py::test_credentials_never_leak checks storage's
own messages and reprs in-process; test_chart.py checks the chart's generated credentials.
"""

from __future__ import annotations

import base64
import os
import re
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest
import yaml

from tests.conftest import CONFIGS, tiny_overrides

REPO = Path(__file__).resolve().parents[1]
HELM = Path(sys.executable).parent / "helm"
TOKEN = uuid.uuid4().hex[:12]
SECRETS = {
    "AWS_SECRET_ACCESS_KEY": f"planted-s3cr3t-{TOKEN}-aws",
    "MLFLOW_TRACKING_PASSWORD": f"planted-mlfl0w-pw-{TOKEN}",
}
USERNAME = "planted-user"


def _forms(value: str) -> dict[str, bytes]:
    """The ways a secret could leak: as is, base64 (std and urlsafe), and inside a basic-auth header."""
    raw = value.encode()
    return {"plain": raw, "base64": base64.b64encode(raw).rstrip(b"="), "base64url": base64.urlsafe_b64encode(raw).rstrip(b"="),
            "basic-auth": base64.b64encode(f"{USERNAME}:{value}".encode()).rstrip(b"=")}


def leaks(blob: bytes | str, where: str) -> list[str]:
    data = blob.encode() if isinstance(blob, str) else blob
    return [f"{name} ({form}) in {where}" for name, value in SECRETS.items()
            for form, needle in _forms(value).items() if needle in data]


def _tree_leaks(root: Path, label: str) -> tuple[list[str], int]:
    found, files = [], 0
    for path in sorted(root.rglob("*")):
        if path.is_file():
            files += 1
            found += leaks(path.read_bytes(), f"{label}/{path.relative_to(root)}")
    return found, files


def _env(extra: dict[str, str]) -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "2", **SECRETS, "MLFLOW_TRACKING_USERNAME": USERNAME, **extra}


STORAGE_SCRIPT = textwrap.dedent("""
    import logging, os, sys
    from pathlib import Path

    logging.basicConfig(level=logging.DEBUG, stream=sys.stderr, format="%(name)s %(levelname)s %(message)s")
    from clasflow import steps, storage
    from clasflow.errors import StorageError

    tree, prefix, back = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
    print(storage.upload_dir(tree, prefix))
    print(storage.download_dir(prefix, back))
    os.environ["CLASFLOW_ARTIFACT_ROOT"] = prefix + "published"
    print(steps.publish(tree, "model", steps.Profile(pipeline_run="secrets-run")))
    print(storage.S3Config.from_env(), repr(storage.S3Config.from_env()))
    for action in (lambda: storage.download(prefix + "missing.bin", back / "m"),
                   lambda: storage.upload(next(tree.rglob("*.json")), "s3://no-such-bucket-here/x"),
                   lambda: (os.environ.__setitem__("CLASFLOW_S3_ENDPOINT", "http://127.0.0.1:9"),
                            storage.upload(next(tree.rglob("*.json")), prefix + "down"))):
        try:
            action()
        except StorageError as exc:
            print("StorageError:", exc, repr(exc), exc.__cause__, repr(exc.__cause__))
""")


@pytest.mark.timeout(600)
def test_planted_secrets_do_not_leak(digits_data, tmp_path, mlflow_server, s3_env, fault_record):
    from mlflow.tracking import MlflowClient

    fault_record.plan("secrets: planted S3 secret and MLflow password (logs, MLflow, S3, files, pipeline)", 8)
    assert leaks("x" + _forms(SECRETS["MLFLOW_TRACKING_PASSWORD"])["basic-auth"].decode(), "self-check")  # the detector works
    found: list[str] = []
    checked: list[str] = []

    # 1. training tracked to a real MLflow server, debug logging
    out = tmp_path / "out"
    over = tiny_overrides(digits_data, classes=10, epochs=1) + [
        "ARCHITECTURE.name=MobileNetV3_small_x0_35", f"model_save_dir={out}", "print_interval=100"]
    env = _env({"MLFLOW_TRACKING_URI": mlflow_server.url, "MLFLOW_EXPERIMENT_NAME": f"fault-secrets-{TOKEN}"})
    train = subprocess.run([sys.executable, "-m", "clasflow", "-v", "train", "-c", str(CONFIGS / "ResNet50_vd.yaml"),
                            "--run-name", "secrets", *sum((["-o", o] for o in over), [])],
                           capture_output=True, text=True, env=env, timeout=300)
    assert train.returncode == 0, train.stderr[-3000:]
    found += leaks(train.stdout + train.stderr, "clasflow train output")
    checked.append("train stdout/stderr")

    client = MlflowClient(mlflow_server.url)
    exp = client.get_experiment_by_name(f"fault-secrets-{TOKEN}")
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 1
    run = runs[0]
    assert run.data.params and run.data.tags
    found += leaks(repr(run.data.params) + repr(run.data.tags) + repr(run.data.metrics), "MLflow params/tags/metrics")
    checked.append(f"MLflow run ({len(run.data.params)} params, {len(run.data.tags)} tags)")

    # 2. artifacts to S3 through clasflow.storage (the planted key is the S3 secret; moto takes any)
    script = tmp_path / "storage_run.py"
    script.write_text(STORAGE_SCRIPT)
    s3_vars = {k: os.environ[k] for k in ("CLASFLOW_S3_ENDPOINT", "AWS_ACCESS_KEY_ID", "AWS_REGION", "CLASFLOW_S3_ATTEMPTS",
                                          "CLASFLOW_S3_BACKOFF")}
    prefix = s3_env.uri("artifacts/")
    stored = subprocess.run([sys.executable, str(script), str(out), prefix, str(tmp_path / "back")],
                            capture_output=True, text=True, env=_env(s3_vars), timeout=300, cwd=REPO)
    assert stored.returncode == 0 and "StorageError: upload of" in stored.stdout, stored.stderr[-3000:]
    assert "uploaded" in stored.stderr and "***" in stored.stdout  # it did log, and masked the config
    found += leaks(stored.stdout + stored.stderr, "storage output (DEBUG logging)")
    checked.append("storage stdout/stderr")
    for obj in s3_env.client().list_objects(s3_env.bucket, recursive=True):
        data = s3_env.client().get_object(s3_env.bucket, obj.object_name).read()
        stat = s3_env.client().stat_object(s3_env.bucket, obj.object_name)
        found += leaks(data + repr(stat.metadata).encode(), f"s3://{s3_env.bucket}/{obj.object_name}")
    checked.append("S3 objects and metadata")

    # 3. everything written to disk by the run and by the MLflow server
    for root, label in ((out, "model_save_dir"), (tmp_path / "back", "downloaded artifacts"), (mlflow_server.workdir, "MLflow server dir")):
        more, files = _tree_leaks(root, label)
        found += more
        checked.append(f"{label} ({files} files)")

    # 4. the pipeline compiled with the secrets in the environment is the one compiled without them:
    # the compile reads settings from the environment (image registry and tag), never a credential
    packages = {}
    for label, env in (("with secrets", _env({})), ("without", {k: v for k, v in os.environ.items() if k not in SECRETS})):
        package = tmp_path / f"flowers_quickstart-{label.replace(' ', '-')}.yaml"
        compiled = subprocess.run([sys.executable, "-c", "import sys; from pathlib import Path; "
                                   "from pipelines import flowers_quickstart as fq; fq.compile_package(Path(sys.argv[1]))",
                                   str(package)], capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
        assert compiled.returncode == 0, compiled.stderr[-3000:]
        found += leaks(compiled.stdout + compiled.stderr, f"compile output ({label})")
        packages[label] = package.read_bytes()
    found += leaks(packages["with secrets"], "compiled pipeline")
    if packages["with secrets"] != packages["without"]:
        found.append("the compiled pipeline depends on the credentials in the environment")
    assert b"AWS_SECRET_ACCESS_KEY" in packages["with secrets"]  # the package names the key, read from the Secret
    checked.append("compiled pipeline")

    fault_record("secrets: planted S3 secret and MLflow password (logs, MLflow, S3, files, pipeline)",
                 trials=len(checked), survived=len(checked) if not found else 0, data_lost=len(found),
                 note="checked: " + "; ".join(checked))
    assert not found, found


# ------------------------------------------------------------------ the Helm chart


def _helm(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    if not (HELM.is_file() and os.access(HELM, os.X_OK)):
        pytest.fail(f"{HELM} is missing: run `make setup` (it installs helm into the venv)")
    env = {**(env or os.environ), "HELM_CACHE_HOME": "/tmp/clasflow-helm/cache", "HELM_CONFIG_HOME": "/tmp/clasflow-helm/config",
           "HELM_DATA_HOME": "/tmp/clasflow-helm/data"}
    return subprocess.run([str(HELM), "template", "clasflow", str(REPO / "charts" / "clasflow"), "--namespace", "ml", *args],
                          capture_output=True, text=True, timeout=120, env=env)


CHART_RENDERS = {
    "defaults": [],
    "existing credentials Secret": ["--set", "credentials.existingSecret=team-clasflow-credentials"],
    "external S3 and MLflow": ["--set", "minio.enabled=false", "--set", "externalS3.endpoint=https://s3.example.com",
                               "--set", "externalS3.existingSecret=s3-credentials", "--set", "mlflow.enabled=false",
                               "--set", "externalMlflow.trackingUri=https://mlflow.example.com"],
    "postgres backend": ["--set", "mlflow.backendStore.type=postgresql",
                         "--set", "mlflow.backendStore.postgresql.existingSecret=mlflow-db"],
}


def _plain_text_places(manifests: list[dict]) -> list[str]:
    """Every ConfigMap value and every container env `value` (where credentials must never be)."""
    texts = []
    for m in manifests:
        if m.get("kind") == "ConfigMap":
            texts += [f"ConfigMap/{m['metadata']['name']} {k}={v}" for k, v in (m.get("data") or {}).items()]
        spec = m.get("spec", {})
        pod = spec.get("template", {}).get("spec") if m.get("kind") in ("Deployment", "StatefulSet", "Job") else spec
        for c in (pod or {}).get("containers", []) + (pod or {}).get("initContainers", []):
            texts += [f"{m['kind']}/{m['metadata']['name']} {e['name']}={e['value']}" for e in c.get("env", []) if "value" in e]
    return texts


# Where a user could hand the chart a credential (config.extra is gone: the schema refuses it; mlflow.extraEnv
# refuses credential-looking names): each is refused without echoing it, or the value lands only in a Secret.
CREDENTIAL_VALUES = {
    "config.extra": lambda name, value: ["--set-string", f"config.extra.{name}={value}"],
    "mlflow.extraEnv": lambda name, value: ["--set-string", f"mlflow.extraEnv[0].name={name}",
                                            "--set-string", f"mlflow.extraEnv[0].value={value}"],
}


def _outside_secrets(manifests: list[dict]) -> str:
    return yaml.safe_dump_all([m for m in manifests if m.get("kind") != "Secret"])


def test_chart_given_credentials_through_values_leaks_none(fault_record):
    """Every render setup x every value a credential could be put in (``--set``, how a leak would
    happen: Helm templates cannot read the environment): refused with the key named, or only in a Secret."""
    trials = [(setup, place, name) for setup in CHART_RENDERS for place in CREDENTIAL_VALUES for name in SECRETS]
    scenario = "secrets: Helm chart given the planted credentials through --set values"
    fault_record.plan(scenario, len(trials) + len(CHART_RENDERS))  # the renders with credentials, then without
    found, refused, plain = [], 0, []
    for setup, place, name in trials:
        proc = _helm(*CHART_RENDERS[setup], *CREDENTIAL_VALUES[place](name, SECRETS[name]))
        if proc.returncode != 0:  # refused (the schema, or the chart's credential check): fine unless it echoes it
            refused += 1
            found += leaks(proc.stderr, f"helm's refusal ({setup}, {name} in {place})")
            continue
        manifests = [d for d in yaml.safe_load_all(proc.stdout) if d]
        found += leaks(_outside_secrets(manifests) + proc.stderr, f"helm template ({setup}, {name} in {place})")
    for setup, args in CHART_RENDERS.items():  # and without them: no credential-looking value in plain text
        proc = _helm(*args)
        manifests = [d for d in yaml.safe_load_all(proc.stdout) if d] if proc.returncode == 0 else []
        if proc.returncode != 0:
            found.append(f"{setup}: render failed: {proc.stderr}")
        plain += [f"{setup}: {t}" for t in _plain_text_places(manifests)
                  if re.search(r"(ACCESS_KEY|SECRET_KEY|PASSWORD|TOKEN)\S*=\S", t)]
    found += [f"a credential in plain text: {t}" for t in plain]
    total = len(trials) + len(CHART_RENDERS)
    fault_record(scenario, trials=total, survived=max(0, total - len(found)),
                 data_lost=len(found), note=f"{refused} of {len(trials)} refused; credentials reach pods "
                                            f"only through secretKeyRef/envFrom of a Secret")
    assert not found, found

"""The Helm chart (charts/clasflow), offline: helm lint --strict, helm template with the default
values and every documented toggle (charts/clasflow/ci/*-values.yaml), the rendered manifests
validated against the Kubernetes schemas (kubernetes-validate --strict), pods non-root and
bounded, no secret value in plain text, and the pipeline upload script.

helm is the static binary `make setup` unpacks into the venv; kubernetes-validate is in the
lock. Neither is optional: a missing tool fails these tests (run `make setup`).
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
import textwrap
from functools import lru_cache
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
CHART = REPO / "charts" / "clasflow"
CI_VALUES = CHART / "ci"
BIN = Path(sys.executable).parent
HELM = BIN / "helm"
KUBE_VALIDATE = BIN / "kubernetes-validate"
# The chart's kubeVersion floor and the newest schemas kubernetes-validate bundles.
KUBE_VERSIONS = ("1.29.0", "1.37.0")
RELEASE = "clasflow"
NAMESPACE = "ml"

SCENARIOS = ["default"] + sorted(p.name.removesuffix("-values.yaml") for p in CI_VALUES.glob("*-values.yaml"))
DOCUMENTED = {"external-s3", "postgres", "ingress-tls", "kfp-upload", "existing-secret", "gpu",
              "gpu-cluster", "external-mlflow"}


def _tool(path: Path) -> str:
    if not (path.is_file() and os.access(path, os.X_OK)):
        pytest.fail(f"{path} is missing: run `make setup` (it installs helm and the lint tools)")
    return str(path)


def _values_args(scenario: str) -> list[str]:
    return [] if scenario == "default" else ["-f", str(CI_VALUES / f"{scenario}-values.yaml")]


def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, "HELM_CACHE_HOME": "/tmp/clasflow-helm/cache",
           "HELM_CONFIG_HOME": "/tmp/clasflow-helm/config", "HELM_DATA_HOME": "/tmp/clasflow-helm/data"}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env, **kw)


def helm_template(*args: str) -> subprocess.CompletedProcess:
    return _run([_tool(HELM), "template", RELEASE, str(CHART), "--namespace", NAMESPACE, *args])


@lru_cache(maxsize=None)
def rendered(scenario: str) -> str:
    proc = helm_template(*_values_args(scenario))
    assert proc.returncode == 0, f"helm template ({scenario}) failed:\n{proc.stderr}"
    return proc.stdout


@lru_cache(maxsize=None)
def manifests(scenario: str) -> tuple[dict, ...]:
    return tuple(d for d in yaml.safe_load_all(rendered(scenario)) if d)


def find(scenario: str, kind: str, name: str | None = None) -> list[dict]:
    return [m for m in manifests(scenario)
            if m["kind"] == kind and (name is None or m["metadata"]["name"] == name)]


def one(scenario: str, kind: str, name: str) -> dict:
    found = find(scenario, kind, name)
    assert len(found) == 1, f"{kind}/{name} in {scenario}: {len(found)} found"
    return found[0]


def pod_specs(scenario: str) -> list[tuple[str, dict]]:
    out = []
    for m in manifests(scenario):
        name = f"{m['kind']}/{m['metadata']['name']}"
        if m["kind"] == "Pod":
            out.append((name, m["spec"]))
        elif m["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
            out.append((name, m["spec"]["template"]["spec"]))
    return out


def env_of(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container.get("env", [])}


def config_data(scenario: str) -> dict[str, str]:
    return one(scenario, "ConfigMap", "clasflow-config")["data"]


# ----------------------------------------------------------------------------- lint and schemas


def test_every_documented_toggle_has_a_values_file():
    assert DOCUMENTED <= set(SCENARIOS), sorted(DOCUMENTED - set(SCENARIOS))


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_helm_lint_strict(scenario):
    proc = _run([_tool(HELM), "lint", "--strict", str(CHART), "--namespace", NAMESPACE, *_values_args(scenario)])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 chart(s) failed" in proc.stdout


def test_kubernetes_schemas_validate_all_scenarios(tmp_path):
    """One kubernetes-validate run over every scenario (each rendered into its own file)."""
    files = []
    for scenario in SCENARIOS:
        path = tmp_path / f"{scenario}.yaml"
        path.write_text(rendered(scenario))
        files.append(str(path))
    versions = [a for v in KUBE_VERSIONS for a in ("--kubernetes-version", v)]
    proc = _run([_tool(KUBE_VALIDATE), "--strict", *versions, *files])
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert not re.search(r"^(ERROR|WARN)", out, re.M), out
    passed = out.count(" passed for resource ")
    expected = sum(len(manifests(s)) for s in SCENARIOS) * len(KUBE_VERSIONS)
    assert passed == expected, f"{passed} of {expected} resources validated:\n{out}"


def test_kubernetes_validate_strict_rejects_unknown_fields(tmp_path):
    """Control: the validator does reject what a cluster would reject."""
    deployment = next(m for m in manifests("default") if m["kind"] == "Deployment")
    broken = json.loads(json.dumps(deployment))
    broken["spec"]["template"]["spec"]["containers"][0]["resourcez"] = {}
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(broken))
    proc = _run([_tool(KUBE_VALIDATE), "--strict", "--kubernetes-version", KUBE_VERSIONS[0], str(path)])
    assert proc.returncode != 0, proc.stdout


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (["--set", "minio.enabled=false"], "externalS3"),
        (["--set", "minio.enabled=false", "--set", "externalS3.endpoint=https://s3.example.com"],
         "externalS3.existingSecret"),
        (["--set", "mlflow.backendStore.type=postgresql"], "existingSecret"),
        (["--set", "mlflow.replicas=2"], "one replica"),
        (["--set", "mlflow.enabled=false"], "trackingUri"),
        (["--set", "mlflow.ingress.enabled=true", "--set", "mlflow.ingress.host="], "host"),
        (["--set", "podSecurityContext.runAsNonRoot=false"], "runAsNonRoot"),
        (["--set", "containerSecurityContext.allowPrivilegeEscalation=true"], "allowPrivilegeEscalation"),
        (["--set", "mlflow.backendStore.type=mysql"], "backendStore"),
        (["--set", "minio.resources=null"], "resources"),
        (["--set", "credentials.existingSecret=Not_A_Name"], "existingSecret"),
        (["--set", "unknownTopLevel=1"], "unknownTopLevel"),
    ],
)
def test_invalid_values_are_rejected(values, message):
    proc = helm_template(*values)
    assert proc.returncode != 0, f"rendered with {values}"
    assert message in proc.stderr, proc.stderr


# ----------------------------------------------------------------------------- pod security


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_pods_are_non_root_read_only_and_bounded(scenario):
    specs = pod_specs(scenario)
    assert specs
    for name, spec in specs:
        psc = spec.get("securityContext", {})
        assert psc.get("runAsNonRoot") is True, name
        assert psc.get("runAsUser", 0) != 0, name
        assert psc.get("seccompProfile", {}).get("type") == "RuntimeDefault", name
        assert spec.get("automountServiceAccountToken") is False, name
        assert spec.get("serviceAccountName") == RELEASE, name
        assert not spec.get("hostNetwork") and not spec.get("hostPID") and not spec.get("hostIPC"), name
        for container in spec.get("initContainers", []) + spec["containers"]:
            where = f"{name}/{container['name']}"
            sc = container.get("securityContext", {})
            assert sc.get("allowPrivilegeEscalation") is False, where
            assert sc.get("readOnlyRootFilesystem") is True, where
            assert sc.get("runAsNonRoot") is True, where
            assert not sc.get("privileged"), where
            assert "ALL" in sc.get("capabilities", {}).get("drop", []), where
            assert not sc.get("capabilities", {}).get("add"), where
            res = container.get("resources", {})
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(res.get(kind, {})), f"{where}: {kind} {res}"
            image = container["image"]
            assert re.fullmatch(r"[\w.\-/]+:[\w.\-]+", image) and not image.endswith(":latest"), where
            # Writable places are volumes (the root filesystem is read-only).
            mounts = {m["mountPath"] for m in container.get("volumeMounts", [])}
            assert "/tmp" in mounts, where


def test_service_account_does_not_mount_tokens():
    (sa,) = find("default", "ServiceAccount")
    assert sa["automountServiceAccountToken"] is False


# ----------------------------------------------------------------------------- secrets


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_no_secret_value_in_plain_text(scenario):
    text = rendered(scenario)
    secrets = find(scenario, "Secret")
    for secret in secrets:
        assert "stringData" not in secret, secret["metadata"]["name"]
        for key, encoded in secret["data"].items():
            value = base64.b64decode(encoded).decode()
            assert len(value) >= 20, key  # generated, not a weak default
            assert value not in text, f"{key} appears decoded in the rendered manifests"
    for name, spec in pod_specs(scenario):
        for container in spec["containers"]:
            for env in container.get("env", []):
                sensitive = re.search(r"KEY|SECRET|PASSWORD|TOKEN$|BACKEND_STORE_URI", env["name"])
                harmless = str(env.get("value", "")).startswith("sqlite:")  # a file path, no credential
                if sensitive and not harmless:
                    assert "valueFrom" in env and "value" not in env, f"{name}: {env}"
    # No credential anywhere in the ConfigMap the components read.
    for key, value in config_data(scenario).items():
        assert not re.search(r"ACCESS_KEY|PASSWORD|TOKEN", key), key
        assert "@" not in value, f"{key}={value}"


def test_values_file_has_no_credentials():
    values = yaml.safe_load((CHART / "values.yaml").read_text())

    def walk(node, path=""):
        if isinstance(node, dict):
            for k, v in node.items():
                yield from walk(v, f"{path}.{k}")
        else:
            yield path, node

    for path, value in walk(values):
        leaf = path.rsplit(".", 1)[-1].lower()
        if re.search(r"password|secretkey|accesskey|token|uri$|username", leaf) and leaf != "serviceaccounttoken":
            assert value in ("", None, False), f"{path} has a default: {value!r}"


def test_generated_credentials_are_random_and_kept_on_upgrade():
    a = one("default", "Secret", "clasflow-credentials")
    b = yaml.safe_load(helm_template("--show-only", "templates/secret.yaml").stdout)
    assert a["data"]["AWS_SECRET_ACCESS_KEY"] != b["data"]["AWS_SECRET_ACCESS_KEY"]
    template = (CHART / "templates" / "secret.yaml").read_text()
    # An upgrade reads the Secret already in the cluster and keeps its values.
    assert re.search(r'lookup "v1" "Secret" \.Release\.Namespace', template)
    assert "randAlphaNum" in template
    assert a["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"


# ----------------------------------------------------------------------------- what each toggle does


def test_default_install():
    data = config_data("default")
    assert data["CLASFLOW_S3_ENDPOINT"] == f"http://clasflow-minio.{NAMESPACE}.svc.cluster.local:9000"
    assert data["MLFLOW_TRACKING_URI"] == f"http://clasflow-mlflow.{NAMESPACE}.svc.cluster.local:5000"
    assert data["CLASFLOW_ARTIFACT_ROOT"] == "s3://clasflow/runs"
    assert data["CLASFLOW_CREDENTIALS_SECRET"] == "clasflow-credentials"
    assert data["MLFLOW_EXPERIMENT_NAME"] == "flowers102-quickstart"
    assert set(one("default", "Secret", "clasflow-credentials")["data"]) == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}

    minio = one("default", "Deployment", "clasflow-minio")["spec"]["template"]["spec"]["containers"][0]
    assert re.fullmatch(r"minio/minio:RELEASE\.\d{4}-\d\d-\d\dT\d\d-\d\d-\d\dZ", minio["image"])
    assert env_of(minio)["MINIO_ROOT_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
        "name": "clasflow-credentials", "key": "AWS_SECRET_ACCESS_KEY"}
    assert one("default", "PersistentVolumeClaim", "clasflow-minio")["spec"]["resources"]["requests"]["storage"] == "50Gi"

    job = one("default", "Job", "clasflow-buckets")
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "post-install,post-upgrade"
    mc = job["spec"]["template"]["spec"]["containers"][0]
    assert mc["image"].startswith("minio/mc:RELEASE.")
    assert env_of(mc)["BUCKETS"]["value"] == "clasflow"
    assert "mc mb --ignore-existing" in mc["args"][0]

    mlflow_dep = one("default", "Deployment", "clasflow-mlflow")
    mlflow = mlflow_dep["spec"]["template"]["spec"]["containers"][0]
    assert mlflow["image"] == "ghcr.io/clasflow/clasflow-mlflow:0.1.0"
    assert "--artifacts-destination=s3://clasflow/mlflow" in mlflow["args"]
    assert "--serve-artifacts" in mlflow["args"]
    env = env_of(mlflow)
    assert env["MLFLOW_BACKEND_STORE_URI"]["value"] == "sqlite:////mlflow/data/mlflow.db"
    assert env["MLFLOW_S3_ENDPOINT_URL"]["value"] == data["CLASFLOW_S3_ENDPOINT"]
    assert mlflow_dep["spec"]["strategy"]["type"] == "Recreate"
    assert find("default", "PersistentVolumeClaim", "clasflow-mlflow")
    hosts = next(a for a in mlflow["args"] if a.startswith("--allowed-hosts=")).split("=", 1)[1].split(",")
    assert f"clasflow-mlflow.{NAMESPACE}.svc.cluster.local:*" in hosts and "localhost:*" in hosts
    assert mlflow["readinessProbe"]["httpGet"]["path"] == "/health"

    assert not find("default", "Ingress")
    assert not find("default", "Job", "clasflow-pipeline-upload")
    # helm test pods: the GPU self-check and the connection check.
    assert {p["metadata"]["name"] for p in find("default", "Pod")} == {"clasflow-gpu-check", "clasflow-connection"}


def test_external_s3():
    s = "external-s3"
    assert not find(s, "Deployment", "clasflow-minio") and not find(s, "PersistentVolumeClaim", "clasflow-minio")
    assert not find(s, "Secret"), "the chart creates no Secret for an external S3"
    data = config_data(s)
    assert data["CLASFLOW_S3_ENDPOINT"] == "https://minio.storage.svc.cluster.local:9000"
    assert data["CLASFLOW_ARTIFACT_ROOT"] == "s3://clasflow-artifacts/runs"
    assert data["CLASFLOW_CREDENTIALS_SECRET"] == "clasflow-s3"
    mlflow = one(s, "Deployment", "clasflow-mlflow")["spec"]["template"]["spec"]["containers"][0]
    assert "--artifacts-destination=s3://clasflow-artifacts/mlflow" in mlflow["args"]
    assert env_of(mlflow)["AWS_ACCESS_KEY_ID"]["valueFrom"]["secretKeyRef"]["name"] == "clasflow-s3"
    mc = one(s, "Job", "clasflow-buckets")["spec"]["template"]["spec"]["containers"][0]
    assert env_of(mc)["S3_ENDPOINT"]["value"] == data["CLASFLOW_S3_ENDPOINT"]


def test_postgres_backend():
    s = "postgres"
    dep = one(s, "Deployment", "clasflow-mlflow")
    env = env_of(dep["spec"]["template"]["spec"]["containers"][0])
    assert env["MLFLOW_BACKEND_STORE_URI"]["valueFrom"]["secretKeyRef"] == {
        "name": "mlflow-db", "key": "MLFLOW_BACKEND_STORE_URI"}
    assert dep["spec"]["replicas"] == 2 and "strategy" not in dep["spec"]
    assert not find(s, "PersistentVolumeClaim", "clasflow-mlflow")


def test_ingress_with_tls():
    s = "ingress-tls"
    ing = one(s, "Ingress", "clasflow-mlflow")
    assert ing["spec"]["ingressClassName"] == "nginx"
    assert ing["spec"]["tls"] == [{"hosts": ["mlflow.clasflow.example.com"], "secretName": "mlflow-tls"}]
    rule = ing["spec"]["rules"][0]
    assert rule["host"] == "mlflow.clasflow.example.com"
    assert rule["http"]["paths"][0]["backend"]["service"] == {"name": "clasflow-mlflow", "port": {"name": "http"}}
    assert ing["metadata"]["annotations"]["cert-manager.io/cluster-issuer"] == "letsencrypt"
    args = one(s, "Deployment", "clasflow-mlflow")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "mlflow.clasflow.example.com" in next(a for a in args if a.startswith("--allowed-hosts="))


def test_kfp_upload():
    s = "kfp-upload"
    cm = one(s, "ConfigMap", "clasflow-pipeline")
    shipped = (CHART / "files" / "flowers_quickstart.yaml").read_bytes()
    assert base64.b64decode(cm["binaryData"]["flowers_quickstart.yaml"]) == shipped
    job = one(s, "Job", "clasflow-pipeline-upload")
    ann = job["metadata"]["annotations"]
    assert ann["helm.sh/hook"] == "post-install,post-upgrade"
    assert int(ann["helm.sh/hook-weight"]) > 0  # after the buckets
    spec = job["spec"]["template"]["spec"]
    c = spec["containers"][0]
    assert c["image"] == "ghcr.io/clasflow/clasflow-cpu:0.1.0"
    assert c["command"] == ["python", "/pipeline/upload.py"]
    env = env_of(c)
    assert env["KFP_HOST"]["value"] == "http://ml-pipeline.kubeflow.svc.cluster.local:8888"
    assert env["KFP_NAMESPACE"]["value"] == "team-vision"
    token = next(v for v in spec["volumes"] if v["name"] == "kfp-token")
    assert token["projected"]["sources"][0]["serviceAccountToken"]["audience"] == "pipelines.kubeflow.org"


def test_existing_secret():
    s = "existing-secret"
    assert not find(s, "Secret")
    assert config_data(s)["CLASFLOW_CREDENTIALS_SECRET"] == "team-clasflow-credentials"
    refs = set(re.findall(r"secretKeyRef:\s+name: (\S+)", rendered(s)))
    assert refs == {"team-clasflow-credentials"}, refs


def test_gpu_nodes():
    s = "gpu"
    data = config_data(s)
    assert json.loads(data["CLASFLOW_GPU_NODE_SELECTOR"]) == {"nvidia.com/gpu.present": "true", "node-pool": "gpu-h100"}
    tolerations = json.loads(data["CLASFLOW_GPU_TOLERATIONS"])
    assert {"key": "dedicated", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"} in tolerations
    assert data["CLASFLOW_GPU_RESOURCE"] == "nvidia.com/gpu"
    pod = one(s, "Pod", "clasflow-gpu-check")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    assert pod["spec"]["nodeSelector"] == json.loads(data["CLASFLOW_GPU_NODE_SELECTOR"])
    assert pod["spec"]["tolerations"] == tolerations
    c = pod["spec"]["containers"][0]
    assert c["image"] == "ghcr.io/clasflow/clasflow-gpu:0.1.0"
    assert c["resources"]["limits"]["nvidia.com/gpu"] == 1 and c["resources"]["requests"]["nvidia.com/gpu"] == 1
    assert "paddle.utils.run_check()" in c["args"][0]
    # The chart's own pods stay on the CPU pool, claims use the storage class.
    for kind, name in (("Deployment", "clasflow-minio"), ("Deployment", "clasflow-mlflow")):
        assert one(s, kind, name)["spec"]["template"]["spec"]["nodeSelector"] == {"node-pool": "cpu"}
    for pvc in find(s, "PersistentVolumeClaim"):
        assert pvc["spec"]["storageClassName"] == "fast-ssd"
    assert all("storageClassName" not in p["spec"] for p in find("default", "PersistentVolumeClaim"))


def test_external_mlflow():
    s = "external-mlflow"
    assert not find(s, "Deployment", "clasflow-mlflow")
    assert config_data(s)["MLFLOW_TRACKING_URI"] == "https://mlflow.internal.example.com"


def test_gpu_cluster_example_from_the_docs():
    s = "gpu-cluster"
    assert "gpu-cluster-values.yaml" in (REPO / "docs" / "gpu-cluster.md").read_text()
    kinds = {(m["kind"], m["metadata"]["name"]) for m in manifests(s)}
    assert ("Ingress", "clasflow-mlflow") in kinds and ("Job", "clasflow-pipeline-upload") in kinds
    assert ("Deployment", "clasflow-minio") not in kinds
    ing = one(s, "Ingress", "clasflow-mlflow")
    assert ing["spec"]["tls"][0]["secretName"] == "clasflow-mlflow-tls"


def test_notes_say_how_to_open_mlflow_and_submit():
    proc = _run([_tool(HELM), "install", RELEASE, str(CHART), "--dry-run=client", "--namespace", NAMESPACE])
    assert proc.returncode == 0, proc.stderr
    notes = proc.stdout.split("NOTES:", 1)[1]
    assert "port-forward svc/clasflow-mlflow 5000:5000" in notes
    assert "run create" in notes and "pipelines/flowers_quickstart.yaml" in notes
    assert "valid_top1" in notes and "flowers102-quickstart" in notes
    assert "clasflow-credentials" in notes and "clasflow-config" in notes
    assert "NOTE:" not in notes  # the default names are the compiled pipeline's
    proc = _run([_tool(HELM), "install", RELEASE, str(CHART), "--dry-run=client", "--namespace", NAMESPACE,
                 *_values_args("external-s3")])
    assert proc.returncode == 0, proc.stderr
    assert "NOTE: the compiled pipeline reads Secret clasflow-credentials" in proc.stdout


# ----------------------------------------------------------------------------- shared settings


def test_chart_defaults_match_images_env():
    from clasflow.images import parse_env_file

    env = parse_env_file((REPO / "images" / "images.env").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert values["image"]["registry"] == env["IMAGE_REGISTRY"]
    assert str(chart["appVersion"]) == env["IMAGE_TAG"]
    assert (values["image"]["gpu"], values["image"]["cpu"], values["image"]["mlflow"]) == (
        env["IMAGE_GPU"], env["IMAGE_CPU"], env["IMAGE_MLFLOW"])
    data = config_data("default")
    assert (data["CLASFLOW_IMAGE_REGISTRY"], data["CLASFLOW_IMAGE_TAG"]) == (env["IMAGE_REGISTRY"], env["IMAGE_TAG"])


def test_shipped_pipeline_matches_the_compiled_one():
    """charts/clasflow/files/ holds a copy (make chart-sync); a stale copy would be uploaded."""
    compiled = REPO / "pipelines" / "flowers_quickstart.yaml"
    shipped = CHART / "files" / "flowers_quickstart.yaml"
    assert shipped.is_file()
    if compiled.is_file():
        assert shipped.read_bytes() == compiled.read_bytes(), "stale chart copy: run `make chart-sync`"
    else:
        assert shipped.read_text().lstrip().startswith("# PLACEHOLDER")


def _walk(node):
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)


def test_the_shipped_pipeline_finds_what_the_chart_installs():
    """The compiled pipeline's defaults name the chart's default Secret and ConfigMap, every key it
    reads exists there, and its GPU defaults are the chart's gpu.* values."""
    docs = [d for d in yaml.safe_load_all((CHART / "files" / "flowers_quickstart.yaml").read_text()) if d]
    assert "root" in docs[0], "files/flowers_quickstart.yaml is not a compiled pipeline"
    defaults = {k: v.get("defaultValue") for k, v in docs[0]["root"]["inputDefinitions"]["parameters"].items()}
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    data = config_data("default")
    secret = one("default", "Secret", "clasflow-credentials")
    assert defaults["config_map"] == values["config"]["name"]
    assert defaults["credentials_secret"] == values["credentials"]["secretName"]
    assert defaults["gpu_node_selector"] == values["gpu"]["nodeSelector"]
    assert defaults["gpu_tolerations"] == values["gpu"]["tolerations"]
    assert defaults["gpu_resource"] == values["gpu"]["resourceName"]
    seen = 0
    for node in _walk(docs[1:]):
        for ref in node.get("configMapAsEnv", []):
            assert {k["configMapKey"] for k in ref["keyToEnv"]} <= set(data), ref
            seen += 1
        for ref in node.get("secretAsEnv", []):
            if not ref["optional"]:
                assert {k["secretKey"] for k in ref["keyToEnv"]} <= set(secret["data"]), ref
            seen += 1
    assert seen, "the pipeline reads neither the ConfigMap nor the Secret"
    gpu_check = one("default", "Pod", "clasflow-gpu-check")["spec"]
    assert gpu_check["nodeSelector"] == defaults["gpu_node_selector"]


# ----------------------------------------------------------------------------- the upload script


FAKE_KFP = textwrap.dedent('''
    import json, os, types
    LOG = os.environ["FAKE_KFP_LOG"]
    def _log(*call):
        with open(LOG, "a") as f:
            f.write(json.dumps(call) + "\\n")
    class Client:
        def __init__(self, host=None, namespace="kubeflow", **kw):
            _log("init", host, namespace)
        def get_pipeline_id(self, name):
            _log("get_pipeline_id", name)
            return os.environ.get("FAKE_KFP_EXISTING") or None
        def upload_pipeline(self, path, pipeline_name=None, description=None, namespace=None):
            _log("upload_pipeline", pipeline_name, namespace)
            return types.SimpleNamespace(pipeline_id="p-1")
        def upload_pipeline_version(self, path, pipeline_version_name, pipeline_id=None, **kw):
            _log("upload_pipeline_version", pipeline_version_name, pipeline_id)
            return types.SimpleNamespace(pipeline_version_id="v-2")
''')


def _upload(tmp_path, pipeline_text: str, existing: str = "") -> tuple[subprocess.CompletedProcess, list]:
    script = one("kfp-upload", "ConfigMap", "clasflow-pipeline")["data"]["upload.py"]
    (tmp_path / "fake").mkdir(exist_ok=True)
    (tmp_path / "fake" / "kfp.py").write_text(FAKE_KFP)
    (tmp_path / "upload.py").write_text(script)
    (tmp_path / "pipeline.yaml").write_text(pipeline_text)
    log = tmp_path / "calls.jsonl"
    log.unlink(missing_ok=True)
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "fake"), "FAKE_KFP_LOG": str(log),
           "FAKE_KFP_EXISTING": existing, "PIPELINE_FILE": str(tmp_path / "pipeline.yaml"),
           "KFP_HOST": "http://kfp.test:8888", "KFP_NAMESPACE": "team-vision",
           "PIPELINE_NAME": "flowers102-quickstart", "PIPELINE_VERSION": "0.1.0-r1"}
    proc = subprocess.run([sys.executable, str(tmp_path / "upload.py")], capture_output=True, text=True,
                          env=env, timeout=60)
    calls = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    return proc, calls


COMPILED = "pipelineInfo:\n  name: flowers102-quickstart\nroot:\n  dag: {}\nschemaVersion: 2.1.0\n" \
           "---\nplatforms:\n  kubernetes: {}\n"


def test_upload_script_refuses_the_placeholder(tmp_path):
    proc, calls = _upload(tmp_path, (CHART / "files" / "flowers_quickstart.yaml").read_text()
                          if not (REPO / "pipelines" / "flowers_quickstart.yaml").is_file() else "# placeholder\n")
    assert proc.returncode != 0
    assert "make chart-sync" in proc.stderr
    assert calls == []


def test_upload_script_creates_then_versions(tmp_path):
    proc, calls = _upload(tmp_path, COMPILED)
    assert proc.returncode == 0, proc.stderr
    assert calls[0] == ["init", "http://kfp.test:8888", "team-vision"]
    assert calls[-1] == ["upload_pipeline", "flowers102-quickstart", "team-vision"]

    proc, calls = _upload(tmp_path, COMPILED, existing="p-1")
    assert proc.returncode == 0, proc.stderr
    assert calls[-1][0] == "upload_pipeline_version" and calls[-1][2] == "p-1"
    assert re.fullmatch(r"0\.1\.0-r1-\d{8}t\d{6}", calls[-1][1])

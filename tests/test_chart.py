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

# The chart's MinIO pin (values.yaml names its sources): the last community image, on quay.io.
MINIO_PIN = "quay.io/minio/minio@sha256:14cea493d9a34af32f524e538b8346cf79f3321eff8e708c1e2960462bd8936e"
SCENARIOS = ["default"] + sorted(p.name.removesuffix("-values.yaml") for p in CI_VALUES.glob("*-values.yaml"))
DOCUMENTED = {"external-s3", "postgres", "ingress-tls", "kfp-upload", "existing-secret", "gpu",
              "gpu-cluster", "external-mlflow", "multi-user", "mlflow-auth"}


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


def find(scenario: str, kind: str, name: str | None = None, namespace: str | None = NAMESPACE) -> list[dict]:
    """Objects of `kind` (and `name`) in `namespace` (None: any); no namespace = the release's."""
    return [m for m in manifests(scenario)
            if m["kind"] == kind and (name is None or m["metadata"]["name"] == name)
            and (namespace is None or m["metadata"].get("namespace", NAMESPACE) == namespace)]


def one(scenario: str, kind: str, name: str, namespace: str = NAMESPACE) -> dict:
    found = find(scenario, kind, name, namespace)
    assert len(found) == 1, f"{kind}/{name} in {scenario} ({namespace}): {len(found)} found"
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
        (["--set", "config.extra.FOO=bar"], "extra"),  # reached no pipeline pod: removed
        (["--set", "minio.image.digest=sha256:abc"], "digest"),
        (["--set", "mlflow.auth.enabled=true"], "mlflow.auth.existingSecret"),
        (["--set", "mlflow.auth.enabled=true", "--set", "mlflow.auth.existingSecret=a",
          "--set", "mlflow.backendStore.type=postgresql", "--set", "mlflow.backendStore.postgresql.existingSecret=db"],
         "sqlite"),
        (["--set", "mlflow.corsAllowedOrigins[0]=mlflow.example.com"], "corsAllowedOrigins"),
        (["--set", "pipelineNamespaces[0]=Team_A"], "pipelineNamespaces"),
        (["--set", "kfp.uploadPipeline.enabled=true", "--set", "kfp.uploadPipeline.namespace=team-x"],
         "not in pipelineNamespaces"),
        (["--set", "mlflow.enabled=false,externalMlflow.trackingUri=http://x,kfp.uploadPipeline.enabled=true,"
                   "kfp.uploadPipeline.namespace=team-x"], "not in pipelineNamespaces"),  # also with an external MLflow
        (["--set", "podAnnotations.a=1", "--set-json", "podAnnotations.b=1"], "podAnnotations"),
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
            assert re.fullmatch(r"[\w.\-/]+(:[\w.\-]+|@sha256:[0-9a-f]{64})", image) and not image.endswith(":latest"), where
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
    b = next(yaml.safe_load_all(helm_template("--show-only", "templates/secret.yaml").stdout))
    assert a["data"]["AWS_SECRET_ACCESS_KEY"] != b["data"]["AWS_SECRET_ACCESS_KEY"]
    # One generated pair per render, the same in every namespace the pipeline runs in.
    assert one("default", "Secret", "clasflow-credentials", "kubeflow")["data"] == a["data"]
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
    assert data["CLASFLOW_ARTIFACT_ROOT"] == "s3://clasflow"
    from clasflow.storage import run_prefix  # what the steps make of it: one runs/ level, not runs/runs/

    assert run_prefix(data["CLASFLOW_ARTIFACT_ROOT"], "run-1") == "s3://clasflow/runs/run-1/"
    assert data["AWS_DEFAULT_REGION"] == "us-east-1"
    assert set(one("default", "Secret", "clasflow-credentials")["data"]) == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}

    minio = one("default", "Deployment", "clasflow-minio")["spec"]["template"]["spec"]["containers"][0]
    assert minio["image"] == MINIO_PIN  # by digest; the tag is informational
    assert env_of(minio)["MINIO_ROOT_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
        "name": "clasflow-credentials", "key": "AWS_SECRET_ACCESS_KEY"}
    assert one("default", "PersistentVolumeClaim", "clasflow-minio")["spec"]["resources"]["requests"]["storage"] == "50Gi"

    job = one("default", "Job", "clasflow-buckets")
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "post-install,post-upgrade"
    buckets = job["spec"]["template"]["spec"]["containers"][0]
    assert buckets["image"] == "ghcr.io/clasflow/clasflow-cpu:0.1.0"  # no minio/mc image any more
    assert env_of(buckets)["BUCKETS"]["value"] == "clasflow"
    assert "create_bucket" in buckets["args"][0]

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
    assert data["CLASFLOW_ARTIFACT_ROOT"] == "s3://clasflow-artifacts"
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
    # The UI's POST searches carry Origin https://<host>: without it MLflow answers 403.
    assert "--cors-allowed-origins=https://mlflow.clasflow.example.com" in args
    assert not [a for a in one("default", "Deployment", "clasflow-mlflow")["spec"]["template"]["spec"]["containers"][0]["args"]
                if a.startswith("--cors-allowed-origins")]


def _upload_job(scenario: str) -> dict:
    return one(scenario, "Job", "clasflow-pipeline-upload")


def _job_args(scenario: str) -> dict[str, str]:
    container = _upload_job(scenario)["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["python", "-m", "clasflow.kfp_upload"]
    return dict(a.removeprefix("--").split("=", 1) for a in container["args"])


def test_kfp_upload():
    s = "kfp-upload"
    cm = one(s, "ConfigMap", "clasflow-pipeline")
    shipped = (CHART / "files" / "flowers_quickstart.yaml").read_bytes()
    assert base64.b64decode(cm["binaryData"]["flowers_quickstart.yaml"]) == shipped
    job = _upload_job(s)
    ann = job["metadata"]["annotations"]
    assert ann["helm.sh/hook"] == "post-install,post-upgrade"
    assert int(ann["helm.sh/hook-weight"]) > 0  # after the buckets
    spec = job["spec"]["template"]["spec"]
    c = spec["containers"][0]
    assert c["image"] == "ghcr.io/clasflow/clasflow-cpu:0.1.0"
    args = _job_args(s)
    assert args["host"] == "http://ml-pipeline.kubeflow.svc.cluster.local:8888"
    assert args["namespace"] == "team-vision" and args["registry"] == "ghcr.io/clasflow"
    assert args["record"] == "clasflow-pipeline-version"
    defaults = json.loads(args["defaults"])
    assert defaults["credentials_secret"] == "clasflow-credentials" and defaults["config_map"] == "clasflow-config"
    assert "image_pull_secret" not in defaults  # no imagePullSecrets: the pipeline's None stays
    assert env_of(c)["KF_PIPELINES_SA_TOKEN_PATH"]["value"] == "/var/run/secrets/kubeflow/pipelines/token"
    token = next(v for v in spec["volumes"] if v["name"] == "kfp-token")
    assert token["projected"]["sources"][0]["serviceAccountToken"]["audience"] == "pipelines.kubeflow.org"
    # The version id stays readable after the Job is gone: a ConfigMap of the release, which the
    # Job's ServiceAccount may get/patch and nothing else.
    assert "data" not in one(s, "ConfigMap", "clasflow-pipeline-version")
    role = one(s, "Role", "clasflow-pipeline-version")
    assert role["rules"] == [{"apiGroups": [""], "resources": ["configmaps"],
                              "resourceNames": ["clasflow-pipeline-version"], "verbs": ["get", "patch"]}]
    binding = one(s, "RoleBinding", "clasflow-pipeline-version")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": RELEASE, "namespace": NAMESPACE}]
    api = next(v for v in spec["volumes"] if v["name"] == "kube-api")["projected"]["sources"]
    assert "audience" not in api[0]["serviceAccountToken"] and spec["automountServiceAccountToken"] is False
    assert not find(s, "RoleBinding", "clasflow-kfp-upload", namespace=None)


def test_multi_user_kubeflow():
    """The pipeline's pods run in the profile namespaces: the Secret (same keys) and the ConfigMap
    are there too, with fully qualified service addresses; the upload authenticates with the
    projected token through ml-pipeline-ui, bound to the profile's ClusterRole."""
    s = "multi-user"
    release_secret = one(s, "Secret", "clasflow-credentials")
    release_config = config_data(s)
    for namespace in ("team-vision", "team-nlp"):
        secret = one(s, "Secret", "clasflow-credentials", namespace)
        assert secret["data"] == release_secret["data"]
        assert secret["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
        assert one(s, "ConfigMap", "clasflow-config", namespace)["data"] == release_config
    assert not find(s, "Secret", namespace="kubeflow"), "pipelineNamespaces replaces the kubeflow default"
    assert release_config["MLFLOW_TRACKING_URI"].endswith(f".{NAMESPACE}.svc.cluster.local:5000")
    args = _job_args(s)
    assert args["host"] == "http://ml-pipeline-ui.kubeflow.svc.cluster.local" and args["namespace"] == "team-vision"
    binding = one(s, "RoleBinding", "clasflow-kfp-upload", "team-vision")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "kubeflow-pipelines-edit"}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": RELEASE, "namespace": NAMESPACE}]
    for name, spec in pod_specs(s):
        assert spec is not None
    for m in manifests(s):
        if m["kind"] in ("Deployment", "Job"):
            assert m["spec"]["template"]["metadata"]["annotations"] == {"sidecar.istio.io/inject": "true"}, m["metadata"]["name"]
        if m["kind"] == "Pod":
            assert m["metadata"]["annotations"]["sidecar.istio.io/inject"] == "true"
    for policy in find(s, "NetworkPolicy"):
        allowed = {p.get("namespaceSelector", {}).get("matchLabels", {}).get("kubernetes.io/metadata.name")
                   for p in policy["spec"]["ingress"][0]["from"]}
        assert {"team-vision", "team-nlp"} <= allowed, policy["metadata"]["name"]


def test_the_upload_job_args_drive_the_real_uploader(tmp_path, monkeypatch):
    """The chart's Job arguments, as rendered, run clasflow.kfp_upload against the local KFP API:
    the uploaded version carries the chart's settings as parameter defaults."""
    from clasflow import kfp_upload
    from pipelines import flowers_quickstart as fq
    from tests.kfp_api import FakeKfp

    args = _job_args("gpu-cluster")
    package = fq.compile_package(tmp_path / "p.yaml", {"clasflow-gpu": f"{args['registry']}/clasflow-gpu@sha256:{'ef' * 32}"})
    (tmp_path / "token").write_text("t0ken")
    monkeypatch.setenv(kfp_upload.TOKEN_PATH_VAR, str(tmp_path / "token"))
    with FakeKfp("t0ken") as kfp:
        argv = [f"--{k}={v}" for k, v in args.items() if k not in ("file", "host", "record")]
        assert kfp_upload.main(["--file", str(package), "--host", kfp.url, *argv]) == 0
        (version,) = [v for vs in kfp.versions.values() for v in vs]
        params = kfp.specs[version["pipeline_version_id"]]["root"]["inputDefinitions"]["parameters"]
    values = yaml.safe_load((CI_VALUES / "gpu-cluster-values.yaml").read_text())
    assert params["gpu_node_selector"]["defaultValue"] == values["gpu"]["nodeSelector"]
    assert params["gpu_tolerations"]["defaultValue"] == values["gpu"]["tolerations"]
    assert params["image_pull_secret"]["defaultValue"] == values["imagePullSecrets"][0]["name"]
    assert params["credentials_secret"]["defaultValue"] == values["externalS3"]["existingSecret"]


def test_existing_secret():
    s = "existing-secret"
    assert not find(s, "Secret", namespace=None)
    refs = set(re.findall(r"secretKeyRef:\s+name: (\S+)", rendered(s)))
    assert refs == {"team-clasflow-credentials"}, refs


def test_gpu_nodes():
    s = "gpu"
    values = yaml.safe_load((CI_VALUES / "gpu-values.yaml").read_text())
    pod = one(s, "Pod", "clasflow-gpu-check")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    assert pod["spec"]["nodeSelector"] == values["gpu"]["nodeSelector"]
    assert pod["spec"]["tolerations"] == values["gpu"]["tolerations"]
    c = pod["spec"]["containers"][0]
    assert c["image"] == "ghcr.io/clasflow/clasflow-gpu:0.1.0"
    assert c["resources"]["limits"]["nvidia.com/gpu"] == 1 and c["resources"]["requests"]["nvidia.com/gpu"] == 1
    assert c["command"] == ["clasflow", "doctor", "--require", "gpu"] and "args" not in c
    # The chart's own pods stay on the CPU pool, claims use the storage class.
    for kind, name in (("Deployment", "clasflow-minio"), ("Deployment", "clasflow-mlflow")):
        assert one(s, kind, name)["spec"]["template"]["spec"]["nodeSelector"] == {"node-pool": "cpu"}
    for pvc in find(s, "PersistentVolumeClaim"):
        assert pvc["spec"]["storageClassName"] == "fast-ssd"
    assert all("storageClassName" not in p["spec"] for p in find("default", "PersistentVolumeClaim"))


def test_mlflow_basic_auth():
    s = "mlflow-auth"
    c = one(s, "Deployment", "clasflow-mlflow")["spec"]["template"]["spec"]["containers"][0]
    assert "--app-name=basic-auth" in c["args"]
    env = env_of(c)
    for key in ("MLFLOW_AUTH_ADMIN_USERNAME", "MLFLOW_AUTH_ADMIN_PASSWORD", "MLFLOW_FLASK_SERVER_SECRET_KEY"):
        assert env[key]["valueFrom"]["secretKeyRef"] == {"name": "mlflow-admin", "key": key}
    ini = one(s, "ConfigMap", "clasflow-mlflow-auth")["data"]["basic_auth.ini"]
    assert env["MLFLOW_AUTH_CONFIG_PATH"]["value"] == "/mlflow/auth/basic_auth.ini"
    assert "database_uri = sqlite:////mlflow/data/basic_auth.db" in ini and "default_permission = NO_PERMISSIONS" in ini
    assert "admin_password" not in ini
    mounts = {m["mountPath"] for m in c["volumeMounts"]}
    assert {"/mlflow/auth", "/mlflow/data"} <= mounts
    # The installed MLflow has this app (the image pins the same version).
    proc = _run([str(BIN / "mlflow"), "server", "--help"])
    assert "--app-name [basic-auth]" in proc.stdout


def test_network_policy_limits_who_reaches_minio_and_mlflow():
    for s in ("default", "ingress-tls"):
        policies = {p["metadata"]["name"]: p["spec"] for p in find(s, "NetworkPolicy")}
        assert set(policies) == {"clasflow-minio", "clasflow-mlflow"}, s
        for name, spec in policies.items():
            component = name.removeprefix("clasflow-")
            assert spec["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == component
            assert spec["policyTypes"] == ["Ingress"]
            (rule,) = spec["ingress"]
            peers = rule["from"]
            assert {"podSelector": {}} in peers  # the release namespace itself
            namespaces = {p["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"] for p in peers if "namespaceSelector" in p}
            expected = {"kubeflow"} | ({"ingress-nginx"} if (s, component) == ("ingress-tls", "mlflow") else set())
            assert namespaces == expected, (s, name, namespaces)
            ports = {p["port"] for p in rule["ports"]}
            assert ports == ({9000, 9001} if component == "minio" else {5000})
    assert not find("external-s3", "NetworkPolicy", "clasflow-minio")
    assert not helm_template("--set", "networkPolicy.enabled=false").stdout.count("kind: NetworkPolicy")


def test_network_policy_lets_kfp_read_its_artifacts_in_multi_user_mode():
    """With kfpLauncher.enabled, KFP's namespace (its UI reads the artifacts in the chart's S3, its API
    server reaches MLflow with the MLflow plugin) reaches MinIO and MLflow, also in multi-user
    Kubeflow where it is not a pipeline namespace; once, and not without kfpLauncher."""
    def sources(*args: str) -> dict[str, list[str]]:
        proc = helm_template(*args)
        assert proc.returncode == 0, proc.stderr
        return {d["metadata"]["name"]: [p["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
                                        for p in d["spec"]["ingress"][0]["from"] if "namespaceSelector" in p]
                for d in yaml.safe_load_all(proc.stdout) if d and d["kind"] == "NetworkPolicy"}

    multi_user = _values_args("multi-user")
    teams = ["team-vision", "team-nlp"]
    assert sources(*multi_user) == {"clasflow-minio": teams, "clasflow-mlflow": teams}
    with_launcher = sources(*multi_user, "--set", "kfpLauncher.enabled=true")
    assert with_launcher == {"clasflow-minio": teams + ["kubeflow"], "clasflow-mlflow": teams + ["kubeflow"]}
    renamed = sources(*multi_user, "--set", "kfpLauncher.enabled=true,networkPolicy.kfpNamespace=pipelines")
    assert renamed["clasflow-minio"] == teams + ["pipelines"]
    assert sources(*_values_args("kfp-launcher"))["clasflow-minio"] == ["kubeflow", "team-vision"]  # once
    assert sources("--namespace", "kubeflow", "--set", "kfpLauncher.enabled=true")["clasflow-minio"] == []  # the release's


def test_the_chart_pods_run_the_released_digests(tmp_path):
    """After `make release` the chart carries files/release.env: its own pods run those digests
    when image.registry is the release's, tags otherwise."""
    import shutil

    chart = tmp_path / "clasflow"
    shutil.copytree(CHART, chart)
    pins = {n: f"registry.example.com/ml/{n}@sha256:{c * 64}" for n, c in
            (("clasflow-gpu", "1"), ("clasflow-cpu", "2"), ("clasflow-mlflow", "3"))}
    (chart / "files" / "release.env").write_text("".join(f"{n}={r}\n" for n, r in pins.items()))

    def images(*values):
        proc = _run([_tool(HELM), "template", RELEASE, str(chart), "-n", NAMESPACE,
                     "--set", "kfp.uploadPipeline.enabled=true", *values])
        assert proc.returncode == 0, proc.stderr
        docs = [d for d in yaml.safe_load_all(proc.stdout) if d]
        return {f"{d['kind']}/{d['metadata']['name']}": c["image"] for d in docs if d["kind"] in ("Deployment", "Job", "Pod")
                for c in (d["spec"]["template"]["spec"] if d["kind"] != "Pod" else d["spec"])["containers"]}

    pinned = images("--set", "image.registry=registry.example.com/ml")
    assert pinned["Deployment/clasflow-mlflow"] == pins["clasflow-mlflow"]
    assert pinned["Job/clasflow-pipeline-upload"] == pinned["Job/clasflow-buckets"] == pins["clasflow-cpu"]
    assert pinned["Pod/clasflow-gpu-check"] == pins["clasflow-gpu"]
    other = images("--set", "image.registry=ghcr.io/clasflow")
    assert other["Deployment/clasflow-mlflow"] == "ghcr.io/clasflow/clasflow-mlflow:0.1.0"
    tagged = images("--set", "image.registry=registry.example.com/ml", "--set", "image.tag=0.2.0")
    assert tagged["Deployment/clasflow-mlflow"] == "registry.example.com/ml/clasflow-mlflow:0.2.0"


def test_minio_must_be_pinned_by_digest():
    """A mirror set without its digest (or with a tag instead) is refused with the fix, not run by tag."""
    mirror = ("--set", "minio.image.repository=registry.example.com/mirror/minio")
    proc = helm_template(*mirror, "--set", "minio.image.digest=")
    assert proc.returncode != 0
    assert "minio.image.digest is required" in proc.stderr and "no longer publishes community images" in proc.stderr
    assert "crane digest registry.example.com/mirror/minio:RELEASE.2025-09-07T16-13-09Z" in proc.stderr
    proc = helm_template(*mirror, "--set", "minio.image.digest=RELEASE.2025-09-07T16-13-09Z")  # a tag is no digest
    assert proc.returncode != 0 and "'/minio/image/digest'" in proc.stderr and "does not match pattern" in proc.stderr
    assert helm_template("--set", "minio.enabled=false", "--set", "minio.image.digest=", "--set",
                         "externalS3.endpoint=https://s3.example.com", "--set", "externalS3.existingSecret=s3").returncode == 0
    mirrored = helm_template(*mirror)  # `crane copy` keeps the digest: only the repository changes
    assert mirrored.returncode == 0 and f'image: "registry.example.com/mirror/minio@{MINIO_PIN.split("@")[1]}"' in mirrored.stdout


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


def _notes(*values: str) -> str:
    proc = _run([_tool(HELM), "install", RELEASE, str(CHART), "--dry-run=client", "--namespace", NAMESPACE, *values])
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.split("NOTES:", 1)[1]


def test_notes_say_how_to_open_mlflow_and_submit():
    notes = _notes()
    assert "port-forward svc/clasflow-mlflow 5000:5000" in notes
    assert "run create" in notes and "pipelines/flowers_quickstart.yaml" in notes
    assert "valid_top1" in notes and "flowers102-quickstart" in notes
    assert "in kubeflow (pipelineNamespaces)" in notes
    assert "credentials_secret=clasflow-credentials config_map=clasflow-config" in notes
    assert "helm test clasflow -n ml --timeout 30m" in notes and "keep it internal" in notes
    notes = _notes("-f", str(CI_VALUES / "external-s3-values.yaml"))
    assert "credentials_secret=clasflow-s3" in notes and "create it in each of these namespaces" in notes
    notes = _notes("-f", str(CI_VALUES / "multi-user-values.yaml"))
    assert "in team-vision, team-nlp (pipelineNamespaces)" in notes
    assert '--existing-token "$TOKEN" --namespace team-vision run create' in notes
    assert "get configmap clasflow-pipeline-version -o jsonpath='{.data.version_id}'" in notes
    assert "--pipeline-id <pipeline_id> --version <version_id>" in notes


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


# ----------------------------------------------------------------------------- the rendered settings against real services


def _mlflow_args(scenario: str) -> list[str]:
    c = one(scenario, "Deployment", "clasflow-mlflow")["spec"]["template"]["spec"]["containers"][0]
    return [a for a in c["args"] if a.startswith(("--allowed-hosts=", "--cors-allowed-origins=", "--app-name="))]


SEARCH = "/ajax-api/2.0/mlflow/experiments/search"


@pytest.mark.slow
def test_mlflow_behind_the_ingress_accepts_the_ui_origin(tmp_path):
    """A real `mlflow server` with the chart's --allowed-hosts and --cors-allowed-origins: the UI's
    POST search through the ingress (Host and Origin of the ingress host) succeeds; another
    origin is still blocked, as is the ingress origin without the chart's CORS flag."""
    import requests

    from tests.services import MlflowServer

    args = _mlflow_args("ingress-tls")
    headers = {"Host": "mlflow.clasflow.example.com", "Origin": "https://mlflow.clasflow.example.com"}
    for flags, expected in ((args, 200), ([a for a in args if not a.startswith("--cors")], 403)):
        (tmp_path / str(expected)).mkdir()
        with MlflowServer(tmp_path / str(expected), extra_args=tuple(flags)) as server:
            answer = requests.post(server.url + SEARCH, json={"max_results": 5}, headers=headers, timeout=30)
            assert answer.status_code == expected, (flags, answer.status_code, answer.text[:200])
            if expected == 200:
                assert "experiments" in answer.json()
                evil = requests.post(server.url + SEARCH, json={"max_results": 5}, timeout=30,
                                     headers={**headers, "Origin": "https://evil.example.com"})
                assert evil.status_code == 403
            else:
                assert "Cross-origin request blocked" in answer.text


@pytest.mark.slow
def test_mlflow_basic_auth_as_the_chart_configures_it(tmp_path):
    """The chart's basic_auth.ini and Secret keys on a real `mlflow server --app-name basic-auth`:
    /health (the probes) stays open, the API wants the admin's password."""
    import requests

    from tests.services import MlflowServer

    s = "mlflow-auth"
    ini = one(s, "ConfigMap", "clasflow-mlflow-auth")["data"]["basic_auth.ini"]
    (tmp_path / "auth.ini").write_text(ini.replace("sqlite:////mlflow/data/", f"sqlite:///{tmp_path}/"))
    env = {"MLFLOW_AUTH_CONFIG_PATH": str(tmp_path / "auth.ini"), "MLFLOW_AUTH_ADMIN_USERNAME": "admin",
           "MLFLOW_AUTH_ADMIN_PASSWORD": "a-long-test-password-1", "MLFLOW_FLASK_SERVER_SECRET_KEY": "k" * 32}
    c = one(s, "Deployment", "clasflow-mlflow")["spec"]["template"]["spec"]["containers"][0]
    assert set(env) <= set(env_of(c))
    headers = {"Host": "mlflow.example.com", "Origin": "http://mlflow.example.com"}
    with MlflowServer(tmp_path, extra_args=tuple(_mlflow_args(s)), env=env) as server:
        assert requests.get(server.url + "/health", timeout=30).status_code == 200
        anonymous = requests.post(server.url + SEARCH, json={"max_results": 5}, headers=headers, timeout=30)
        assert anonymous.status_code == 401
        admin = requests.post(server.url + SEARCH, json={"max_results": 5}, headers=headers, timeout=30,
                              auth=("admin", env["MLFLOW_AUTH_ADMIN_PASSWORD"]))
        assert admin.status_code == 200, admin.text[:200]
    assert (tmp_path / "basic_auth.db").is_file()


def test_the_bucket_job_creates_missing_buckets_and_keeps_the_others(tmp_path):
    """The bucket job's script, as rendered, against moto's S3 server: missing buckets are made
    (with the region's location constraint), an existing one keeps its objects, a rerun (every
    upgrade) changes nothing."""
    import boto3

    from tests.services import MotoServer

    c = one("default", "Job", "clasflow-buckets")["spec"]["template"]["spec"]["containers"][0]
    assert c["command"] == ["python", "-c"]
    with MotoServer(tmp_path) as moto:
        creds = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test"}
        env = {**os.environ, **creds, "S3_ENDPOINT": moto.url, "AWS_DEFAULT_REGION": "eu-west-1",
               "BUCKETS": "clasflow extra-bucket", "HOME": str(tmp_path)}
        s3 = boto3.client("s3", endpoint_url=moto.url, region_name="eu-west-1", aws_access_key_id="test",
                          aws_secret_access_key="test")
        s3.create_bucket(Bucket="clasflow", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
        s3.put_object(Bucket="clasflow", Key="runs/keep.txt", Body=b"kept")
        for _ in range(2):
            proc = subprocess.run([sys.executable, "-c", c["args"][0]], env=env, capture_output=True, text=True, timeout=120)
            assert proc.returncode == 0, proc.stderr
            assert "buckets ready: clasflow extra-bucket" in proc.stdout
        assert {b["Name"] for b in s3.list_buckets()["Buckets"]} == {"clasflow", "extra-bucket"}
        assert s3.get_bucket_location(Bucket="extra-bucket")["LocationConstraint"] == "eu-west-1"
        assert s3.get_object(Bucket="clasflow", Key="runs/keep.txt")["Body"].read() == b"kept"


def test_one_experiment_name_across_readme_docs_makefile_chart_and_pipeline():
    """The KFP experiment of every documented `kfp run create` and the MLflow experiment are one name."""
    from pipelines import flowers_quickstart as fq

    texts = {p: (REPO / p).read_text() for p in ("README.md", "docs/gpu-cluster.md", "Makefile")}
    names = {}
    for path, text in texts.items():
        # `run create -e NAME`, `--experiment-name NAME`, `KFP_EXPERIMENT ?= NAME`
        for match in re.finditer(r"(?:run create -e|--experiment-name|KFP_EXPERIMENT \?=)\s+\"?([\w.-]+)", text):
            names.setdefault(match[1], set()).add(path)
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    pipeline = next(yaml.safe_load_all(fq.PACKAGE.read_text()))["root"]["inputDefinitions"]["parameters"]
    assert set(names) == {"flowers102-quickstart"}, names
    assert names["flowers102-quickstart"] == set(texts)
    assert values["config"]["experimentName"] == pipeline["experiment"]["defaultValue"] == "flowers102-quickstart"


def test_kfp_launcher_configmap_points_kfp_at_the_charts_s3():
    """kfpLauncher.enabled: KFP's own artifact store (defaultPipelineRoot + providers, the keys
    kubeflow/pipelines backend/src/v2/config/s3.go reads) is the chart's S3, in every pipeline namespace."""
    assert not find("default", "ConfigMap", "kfp-launcher", namespace=None)  # off by default
    s = "kfp-launcher"
    for namespace in ("kubeflow", "team-vision"):
        data = one(s, "ConfigMap", "kfp-launcher", namespace)["data"]
        assert data["defaultPipelineRoot"] == "s3://clasflow/kfp"
        default = yaml.safe_load(data["providers"])["s3"]["default"]
        assert default == {"endpoint": f"clasflow-minio.{NAMESPACE}.svc.cluster.local:9000", "region": "us-east-1",
                           "disableSSL": True, "forcePathStyle": True,
                           "credentials": {"fromEnv": False, "secretRef": {"secretName": "clasflow-credentials",
                                                                           "accessKeyKey": "AWS_ACCESS_KEY_ID",
                                                                           "secretKeyKey": "AWS_SECRET_ACCESS_KEY"}}}
        secret = one(s, "Secret", "clasflow-credentials", namespace)  # the Secret it names is there too
        assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= set(secret["data"])
    assert not find(s, "ConfigMap", "kfp-launcher")  # not in the release namespace: no pipeline runs there

    external = [m for m in yaml.safe_load_all(helm_template("-f", str(CI_VALUES / "external-s3-values.yaml"),
                                                             "--set", "kfpLauncher.enabled=true",
                                                             "--set", "kfpLauncher.pipelineRoot=s3://kfp-store/v2").stdout)
                if m and m["kind"] == "ConfigMap" and m["metadata"]["name"] == "kfp-launcher"]
    assert external and external[0]["data"]["defaultPipelineRoot"] == "s3://kfp-store/v2"
    default = yaml.safe_load(external[0]["data"]["providers"])["s3"]["default"]
    assert default["endpoint"] == "minio.storage.svc.cluster.local:9000" and default["disableSSL"] is False
    assert default["credentials"]["secretRef"]["secretName"] == "clasflow-s3"
    refused = helm_template("--set", "kfpLauncher.enabled=true", "--set", "kfpLauncher.pipelineRoot=minio://mlpipeline")
    assert refused.returncode != 0 and "pipelineRoot" in refused.stderr

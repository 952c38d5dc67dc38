"""The chart's upload job (clasflow.kfp_upload) against a local server that behaves like the KFP
v2beta1 API where it matters: token required, namespace filter on list, name conflicts."""

from __future__ import annotations

import copy
import json

import pytest
import yaml

from clasflow import kfp_upload
from pipelines import flowers_quickstart as fq
from tests.kfp_api import FakeKfp

TOKEN = "projected-sa-token"
REGISTRY = "registry.example.com/ml"
PINNED = f"{REGISTRY}/clasflow-gpu@sha256:" + "cd" * 32
NAME = "flowers102-quickstart"


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    """The real compiled pipeline, pinned to a digest in REGISTRY (as `make release` writes it)."""
    path = tmp_path_factory.mktemp("pkg") / "flowers_quickstart.yaml"
    return fq.compile_package(path, {"clasflow-gpu": PINNED})


@pytest.fixture
def kfp():
    with FakeKfp(TOKEN, k8s_token="k8s-token") as server:
        yield server


@pytest.fixture
def token_file(tmp_path, monkeypatch):
    path = tmp_path / "token"
    path.write_text(TOKEN)
    monkeypatch.setenv(kfp_upload.TOKEN_PATH_VAR, str(path))
    return path


def _run(kfp, package, *extra, namespace="team-vision"):
    return kfp_upload.main(["--file", str(package), "--name", NAME, "--host", kfp.url, "--namespace", namespace,
                            "--registry", REGISTRY, *extra])


def _versions(kfp):
    return [v for versions in kfp.versions.values() for v in versions]


def test_creates_in_the_namespace_then_keeps_an_unchanged_pipeline(kfp, package, token_file, capsys):
    assert _run(kfp, package) == 0
    (pipeline,) = kfp.pipelines.values()
    assert pipeline["namespace"] == "team-vision" and pipeline["display_name"] == NAME
    (first,) = _versions(kfp)
    assert "content sha256:" in first["description"]
    assert kfp.specs[first["pipeline_version_id"]]["root"] == yaml.safe_load_all(package.read_text()).__next__()["root"]
    # A `helm upgrade` with the same pipeline: found in its namespace, nothing uploaded.
    assert _run(kfp, package) == 0
    assert len(kfp.pipelines) == 1 and len(_versions(kfp)) == 1
    assert "unchanged, kept" in capsys.readouterr().out
    uploads = [c for c in kfp.calls if c[0] == "POST"]
    assert len(uploads) == 1


def test_a_changed_pipeline_becomes_a_new_version(kfp, package, token_file):
    assert _run(kfp, package) == 0
    assert _run(kfp, package, "--defaults", json.dumps({"credentials_secret": "team-s3"})) == 0
    (pipeline_id,) = kfp.pipelines
    first, second = kfp.versions[pipeline_id]
    assert second["display_name"].startswith(f"{NAME}-") and second["description"] != first["description"]
    params = kfp.specs[second["pipeline_version_id"]]["root"]["inputDefinitions"]["parameters"]
    assert params["credentials_secret"]["defaultValue"] == "team-s3"
    assert kfp.specs[first["pipeline_version_id"]]["root"]["inputDefinitions"]["parameters"][
        "credentials_secret"]["defaultValue"] == "clasflow-credentials"
    # Back to the first content: that version is found again (paged lists), no third upload.
    for i in range(11):  # more versions than one page of the list
        kfp._new_version(pipeline_id, f"other-{i}", "unrelated", {})
    assert _run(kfp, package) == 0
    assert len(kfp.versions[pipeline_id]) == 13


def test_the_old_lookup_conflicts_and_the_namespaced_one_does_not(kfp, package, token_file):
    """The bug of the old job: get_pipeline_id() lists shared pipelines only, so an upgrade with a
    namespace uploaded the same name again and KFP answered 409."""
    import kfp as kfp_sdk

    assert _run(kfp, package) == 0
    client = kfp_sdk.Client(host=kfp.url, existing_token=TOKEN, namespace="team-vision")
    assert client.get_pipeline_id(NAME) is None  # not visible without the namespace filter
    with pytest.raises(Exception) as err:
        client.upload_pipeline(str(package), pipeline_name=NAME, namespace="team-vision")
    assert getattr(err.value, "status", None) == 409
    assert _run(kfp, package) == 0 and len(kfp.pipelines) == 1


def test_same_name_in_another_namespace_is_another_pipeline(kfp, package, token_file):
    assert _run(kfp, package, namespace="team-a") == 0
    assert _run(kfp, package, namespace="team-b") == 0
    assert sorted(p["namespace"] for p in kfp.pipelines.values()) == ["team-a", "team-b"]


def test_without_the_token_the_api_refuses_and_the_job_says_why(kfp, package, monkeypatch, capsys):
    monkeypatch.delenv(kfp_upload.TOKEN_PATH_VAR, raising=False)
    assert _run(kfp, package) == 2
    err = capsys.readouterr().err
    assert "HTTP 401" in err and "serviceAccountToken=true" in err
    assert not kfp.pipelines
    monkeypatch.setenv(kfp_upload.TOKEN_PATH_VAR, "/nonexistent/token")
    assert _run(kfp, package) == 2
    assert "no token there" in capsys.readouterr().err


def test_refuses_tags_other_registries_and_placeholders(kfp, package, token_file, tmp_path, capsys):
    docs = list(yaml.safe_load_all(package.read_text()))
    for image, where in ((f"{REGISTRY}/clasflow-gpu:0.1.0", "tag"), (f"ghcr.io/x/clasflow-gpu@sha256:{'cd' * 32}", "registry")):
        changed = copy.deepcopy(docs)
        next(iter(changed[0]["deploymentSpec"]["executors"].values()))["container"]["image"] = image
        path = tmp_path / f"{where}.yaml"
        path.write_text(yaml.safe_dump_all(changed))
        assert _run(kfp, path) == 2, where
        err = capsys.readouterr().err
        assert image in err and f"make release REGISTRY={REGISTRY}" in err
    placeholder = tmp_path / "placeholder.yaml"
    placeholder.write_text("# PLACEHOLDER: run make chart-sync\n")
    assert _run(kfp, placeholder) == 2
    assert "make chart-sync" in capsys.readouterr().err
    assert not kfp.pipelines and not [c for c in kfp.calls if c[0] == "POST"]


@pytest.mark.parametrize(("defaults", "message"), [
    ({"no_such_parameter": "x"}, "does not exist"),
    ({"gpu_node_selector": "pool=a100"}, "takes a dict"),
    ({"image_pull_secret": ""}, "takes a non-empty str"),
])
def test_refuses_bad_defaults(kfp, package, token_file, capsys, defaults, message):
    assert _run(kfp, package, "--defaults", json.dumps(defaults)) == 2
    assert message in capsys.readouterr().err and not kfp.pipelines


def test_the_version_is_recorded_in_the_configmap(kfp, package, token_file):
    from kubernetes import client

    assert _run(kfp, package) == 0
    docs = kfp_upload.load_package(package)
    result = kfp_upload.upload(kfp_upload._client(kfp.url, str(token_file)), docs, NAME, "team-vision")
    assert not result.created
    kfp.config_maps[("clasflow", "clasflow-pipeline-version")] = {}
    config = client.Configuration(host=kfp.url, api_key={"authorization": "k8s-token"}, api_key_prefix={"authorization": "Bearer"})
    api = client.CoreV1Api(client.ApiClient(config))
    kfp_upload.record(result, "clasflow-pipeline-version", "clasflow", api)
    data = kfp.config_maps[("clasflow", "clasflow-pipeline-version")]
    (version,) = _versions(kfp)
    assert data["version_id"] == version["pipeline_version_id"] and data["pipeline_id"] == version["pipeline_id"]
    assert data["namespace"] == "team-vision" and len(data["sha256"]) == 64
    with pytest.raises(kfp_upload.UploadError, match="ConfigMap clasflow/missing"):
        kfp_upload.record(result, "missing", "clasflow", api)

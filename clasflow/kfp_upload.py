"""Upload the compiled pipeline to Kubeflow Pipelines: what the chart's upload Job runs.

    python -m clasflow.kfp_upload --file flowers_quickstart.yaml --name flowers102-quickstart \\
        --host http://ml-pipeline-ui.kubeflow.svc.cluster.local --namespace team-vision \\
        --registry registry.example.com/ml --defaults '{"credentials_secret": "..."}' \\
        --record clasflow-pipeline-version

It refuses a package that is not compiled or whose executors do not run images pinned by digest
in ``--registry``; writes the chart's values into the parameters' defaults (``--defaults``);
authenticates with the projected ServiceAccount token (KF_PIPELINES_SA_TOKEN_PATH) when there is
one; finds the pipeline by name in ``--namespace`` (multi-user Kubeflow: the profile namespace;
empty: shared pipelines); uploads a new version only when no version carries this content's
sha256 (in its description); and records the pipeline and version ids in the ConfigMap
``--record`` of the pod's namespace, which outlives the Job.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

from clasflow.errors import ClasflowError
from clasflow.images import PINNED

DESCRIPTION = "PaddleClas flowers102 quick start (clasflow)"
TOKEN_PATH_VAR = "KF_PIPELINES_SA_TOKEN_PATH"
_TYPES = {"STRING": str, "STRUCT": dict, "LIST": list, "BOOLEAN": bool, "NUMBER_INTEGER": int, "NUMBER_DOUBLE": float}


class UploadError(ClasflowError):
    """The package, the settings or the KFP API refused the upload."""


@dataclass(frozen=True)
class Uploaded:
    pipeline_name: str
    namespace: str
    pipeline_id: str
    version_id: str
    version_name: str
    sha256: str
    created: bool  # False: a version with this content existed already


def load_package(path: Path) -> list[dict]:
    """The documents of a compiled package (pipeline spec, platform spec)."""
    try:
        docs = [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]
    except (OSError, yaml.YAMLError) as err:
        raise UploadError(f"{path}: cannot read the pipeline package: {err}") from None
    if not docs or not isinstance(docs[0], dict) or "root" not in docs[0]:
        raise UploadError(f"{path} is not a compiled pipeline (the chart's placeholder?): compile it "
                          "(`make release REGISTRY=...` or `make compile`), run `make chart-sync`, then `helm upgrade`.")
    return docs


def check_images(docs: list[dict], registry: str) -> list[str]:
    """Every executor's image, when all are ``<registry>/NAME@sha256:...``; else an UploadError."""
    prefix = registry.rstrip("/") + "/"
    images = sorted({e["container"]["image"] for e in docs[0]["deploymentSpec"]["executors"].values()})
    bad = [i for i in images if not (i.startswith(prefix) and PINNED.match(i))]
    if bad:
        raise UploadError(f"the pipeline's executors run {', '.join(bad)}: not pinned by digest in the chart's "
                          f"image.registry {registry!r}. Run `make release REGISTRY={registry}` (builds, pushes, "
                          "compiles with the digests, syncs the chart), then `helm upgrade`.")
    return images


def apply_defaults(docs: list[dict], defaults: dict) -> list[dict]:
    """Set the default value of pipeline parameters (the chart's cluster settings: names, selectors);
    unknown names, wrong types and empty strings are refused."""
    params = docs[0]["root"]["inputDefinitions"]["parameters"]
    for name, value in defaults.items():
        if name not in params:
            raise UploadError(f"pipeline parameter {name!r} does not exist (known: {', '.join(sorted(params))})")
        expected = _TYPES[params[name]["parameterType"]]
        if not isinstance(value, expected) or value == "":  # KFP's driver refuses empty names
            raise UploadError(f"pipeline parameter {name!r} takes a {'non-empty ' if expected is str else ''}"
                              f"{expected.__name__}, got {value!r}")
        params[name]["defaultValue"] = value
    return docs


def _client(host: str, token_path: str | None):
    import kfp
    from kfp.client.set_volume_credentials import ServiceAccountTokenVolumeCredentials

    credentials = None
    if token_path:
        if not Path(token_path).is_file():
            raise UploadError(f"{TOKEN_PATH_VAR}={token_path}: no token there (is the projected "
                              "serviceAccountToken volume mounted?)")
        credentials = ServiceAccountTokenVolumeCredentials(token_path)
    return kfp.Client(host=host, credentials=credentials)


def _name_filter(name: str) -> str:
    return json.dumps({"predicates": [{"operation": "EQUALS", "key": "display_name", "stringValue": name}]})


def _find_version(client, pipeline_id: str, sha256: str):
    token = ""
    while True:
        page = client.list_pipeline_versions(pipeline_id, page_token=token, page_size=100)
        for version in page.pipeline_versions or []:
            if sha256 in (version.description or ""):
                return version
        token = page.next_page_token
        if not token:
            return None


def upload(client, docs: list[dict], name: str, namespace: str, host: str = "") -> Uploaded:
    """Create the pipeline, or add a version when none has this content; returns what is current."""
    from kfp_server_api.exceptions import ApiException

    try:
        return _upload(client, docs, name, namespace)
    except ApiException as err:
        hint = {401: "the KFP API wants a token: set kfp.uploadPipeline.serviceAccountToken=true",
                403: "the token's ServiceAccount may not create pipelines there (see the RoleBinding in docs/gpu-cluster.md)",
                409: "a pipeline or version of that name exists where this job cannot see it "
                     "(another namespace, or shared): set kfp.uploadPipeline.namespace or pipelineName"}
        raise UploadError(f"KFP API {host}: HTTP {err.status} {err.reason}: {(err.body or '')[:300]} "
                          f"{hint.get(err.status, '')}".rstrip()) from None


def _upload(client, docs: list[dict], name: str, namespace: str) -> Uploaded:
    text = yaml.safe_dump_all(docs, sort_keys=True)
    sha256 = hashlib.sha256(text.encode()).hexdigest()
    description = f"{DESCRIPTION}; content sha256:{sha256}"
    found = client.list_pipelines(filter=_name_filter(name), namespace=namespace or None, page_size=2).pipelines or []
    if len(found) > 1:
        raise UploadError(f"{len(found)} pipelines named {name!r} in namespace {namespace or '(shared)'}: delete the extra ones")
    if found:
        version = _find_version(client, found[0].pipeline_id, sha256)
        if version is not None:
            return Uploaded(name, namespace, found[0].pipeline_id, version.pipeline_version_id, version.display_name,
                            sha256, False)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "pipeline.yaml"
        path.write_text(text, encoding="utf-8")
        if not found:  # KFP gives the first version the pipeline's name and description
            pipeline_id = client.upload_pipeline(str(path), pipeline_name=name, description=description,
                                                 namespace=namespace or None).pipeline_id
            version = _find_version(client, pipeline_id, sha256)
            if version is None:
                raise UploadError(f"pipeline {name!r} ({pipeline_id}) was created without this version")
        else:
            pipeline_id = found[0].pipeline_id
            version = client.upload_pipeline_version(str(path), pipeline_version_name=f"{name}-{sha256[:12]}",
                                                     pipeline_id=pipeline_id, description=description)
    return Uploaded(name, namespace, pipeline_id, version.pipeline_version_id, version.display_name, sha256, True)


def record(result: Uploaded, config_map: str, namespace: str, api=None) -> None:
    """Write the ids into ConfigMap `config_map` (the chart creates it; the Job's Role may patch it)."""
    from kubernetes import client, config

    if api is None:
        config.load_incluster_config()
        api = client.CoreV1Api()
    data = {k: str(v) for k, v in asdict(result).items()}
    try:
        api.patch_namespaced_config_map(config_map, namespace, {"data": data})
    except client.ApiException as err:
        raise UploadError(f"recording the version in ConfigMap {namespace}/{config_map} failed: HTTP {err.status} "
                          f"{err.reason} (the chart's Role allows get/patch on that ConfigMap only)") from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m clasflow.kfp_upload", description=__doc__.splitlines()[0])
    parser.add_argument("--file", type=Path, required=True, help="the compiled pipeline package")
    parser.add_argument("--name", required=True, help="the pipeline's name in KFP")
    parser.add_argument("--host", required=True, help="the KFP API, e.g. http://ml-pipeline-ui.kubeflow.svc.cluster.local")
    parser.add_argument("--namespace", default="", help="multi-user Kubeflow: the profile namespace ('' = shared)")
    parser.add_argument("--registry", required=True, help="the registry every executor image must come from")
    parser.add_argument("--defaults", default="{}", help="JSON object: pipeline parameter -> default value")
    parser.add_argument("--record", default="", metavar="CONFIGMAP", help="ConfigMap to write the ids to")
    parser.add_argument("--record-namespace", default=os.environ.get("POD_NAMESPACE", ""),
                        help="its namespace (default: $POD_NAMESPACE, the Job's own)")
    args = parser.parse_args(argv)
    try:
        docs = load_package(args.file)
        images = check_images(docs, args.registry)
        try:
            defaults = json.loads(args.defaults)
        except json.JSONDecodeError as err:
            raise UploadError(f"--defaults is not JSON: {err}") from None
        apply_defaults(docs, defaults)
        result = upload(_client(args.host, os.environ.get(TOKEN_PATH_VAR)), docs, args.name, args.namespace, args.host)
        where = args.namespace or "shared"
        verb = "uploaded" if result.created else "unchanged, kept"
        print(f"{verb} pipeline {result.pipeline_name!r} ({where}): id {result.pipeline_id}, "
              f"version {result.version_name!r} id {result.version_id}; images {', '.join(images)}")
        if args.record:
            record(result, args.record, args.record_namespace)
            print(f"recorded in ConfigMap {args.record_namespace}/{args.record}")
    except UploadError as err:
        print(f"pipeline upload: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

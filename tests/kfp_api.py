"""A small HTTP server that behaves like the Kubeflow Pipelines v2beta1 API where the upload job
depends on it, plus the one Kubernetes call the job makes (patching its ConfigMap).

Like KFP in multi-user mode (backend/src/apiserver/server/pipeline_upload_server.go and the
generated kfp_server_api client): every call but healthz needs ``Authorization: Bearer <token>``;
pipelines are unique by name within a namespace ("" = shared) and a list shows only the
namespace asked for; uploading a pipeline creates its first version with the pipeline's name and
description; a second pipeline (or version) of the same name answers 409; the upload must be a
compiled pipeline spec; version lists are paged.
"""

from __future__ import annotations

import email
import email.policy
import itertools
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import yaml

PREFIX = "/apis/v2beta1"


class FakeKfp:
    def __init__(self, token: str, k8s_token: str = ""):
        self.token, self.k8s_token = token, k8s_token
        self.pipelines: dict[str, dict] = {}  # id -> pipeline
        self.versions: dict[str, list[dict]] = {}  # pipeline id -> versions, oldest first
        self.specs: dict[str, dict] = {}  # version id -> uploaded pipeline spec
        self.config_maps: dict[tuple[str, str], dict] = {}  # (namespace, name) -> data
        self.calls: list[tuple[str, str]] = []
        self._ids = itertools.count(1)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._server.shutdown()
        self._server.server_close()

    # ------------------------------------------------------------------ state changes

    def _new_version(self, pipeline_id: str, name: str, description: str, spec: dict) -> dict:
        version = {"pipeline_id": pipeline_id, "pipeline_version_id": f"v-{next(self._ids)}", "name": name,
                   "display_name": name, "description": description, "created_at": "2026-01-01T00:00:00Z"}
        self.versions[pipeline_id].append(version)
        self.specs[version["pipeline_version_id"]] = spec
        return version

    def _upload(self, query: dict, spec: dict) -> tuple[int, dict]:
        name, namespace = query.get("name", ""), query.get("namespace", "")
        if any(p["name"] == name and p["namespace"] == namespace for p in self.pipelines.values()):
            return 409, {"error_message": "Failed to create a pipeline and a pipeline version", "code": 6}
        pipeline = {"pipeline_id": f"p-{next(self._ids)}", "name": name, "display_name": name,
                    "description": query.get("description", ""), "namespace": namespace}
        self.pipelines[pipeline["pipeline_id"]] = pipeline
        self.versions[pipeline["pipeline_id"]] = []
        self._new_version(pipeline["pipeline_id"], name, pipeline["description"], spec)
        return 200, pipeline

    def _upload_version(self, query: dict, spec: dict) -> tuple[int, dict]:
        pipeline_id, name = query.get("pipelineid", ""), query.get("name", "")
        if pipeline_id not in self.pipelines:
            return 400, {"error_message": "Failed to create a pipeline version", "code": 3}
        if any(v["name"] == name for v in self.versions[pipeline_id]):
            return 409, {"error_message": "Failed to create a pipeline version", "code": 6}
        return 200, self._new_version(pipeline_id, name, query.get("description", ""), spec)

    def _list_pipelines(self, query: dict) -> dict:
        namespace = query.get("namespace", "")
        names = None
        if query.get("filter"):
            predicates = json.loads(query["filter"])["predicates"]
            names = {p["stringValue"] for p in predicates if p["key"] == "display_name" and p["operation"] == "EQUALS"}
        found = [p for p in self.pipelines.values()
                 if p["namespace"] == namespace and (names is None or p["display_name"] in names)]
        return {"pipelines": found, "total_size": len(found)} if found else {}

    def _list_versions(self, pipeline_id: str, query: dict) -> tuple[int, dict]:
        if pipeline_id not in self.pipelines:
            return 404, {"error_message": f"pipeline {pipeline_id} not found", "code": 5}
        versions = list(reversed(self.versions[pipeline_id]))  # newest first
        start, size = int(query.get("page_token") or 0), int(query.get("page_size") or 10)
        page = {"pipeline_versions": versions[start:start + size], "total_size": len(versions)}
        if start + size < len(versions):
            page["next_page_token"] = str(start + size)
        return 200, page

    # ------------------------------------------------------------------ HTTP

    def _handler(self):
        kfp = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, status: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _authorized(self, token: str) -> bool:
                return self.headers.get("Authorization") == f"Bearer {token}"

            def _route(self, method: str) -> None:
                url = urlparse(self.path)
                query = {k: v[0] for k, v in parse_qs(url.query).items()}
                kfp.calls.append((method, url.path))
                if url.path.startswith("/api/v1/namespaces/"):
                    return self._config_map(method, url.path)
                if url.path == f"{PREFIX}/healthz":
                    return self._send(200, {"multi_user": True})
                if not self._authorized(kfp.token):
                    return self._send(401, {"error_message": "Unauthenticated: no valid bearer token", "code": 16})
                if method == "GET" and url.path == f"{PREFIX}/pipelines":
                    return self._send(200, kfp._list_pipelines(query))
                if method == "GET" and url.path.startswith(f"{PREFIX}/pipelines/") and url.path.endswith("/versions"):
                    return self._send(*kfp._list_versions(url.path.split("/")[4], query))
                if method == "POST" and url.path in (f"{PREFIX}/pipelines/upload", f"{PREFIX}/pipelines/upload_version"):
                    spec = self._uploaded_spec()
                    if spec is None:
                        return self._send(400, {"error_message": "Failed to read a pipeline spec file", "code": 3})
                    upload = kfp._upload if url.path.endswith("/upload") else kfp._upload_version
                    return self._send(*upload(query, spec))
                return self._send(404, {"error_message": f"no route {method} {url.path}", "code": 5})

            def _uploaded_spec(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                head = f"Content-Type: {self.headers.get('Content-Type', '')}\r\n\r\n".encode()
                message = email.message_from_bytes(head + body, policy=email.policy.HTTP)
                files = [part for part in message.iter_parts() if part.get_param("name", header="content-disposition") == "uploadfile"] \
                    if message.is_multipart() else []
                if not files:
                    return None
                try:
                    docs = [d for d in yaml.safe_load_all(files[0].get_payload(decode=True)) if d]
                except yaml.YAMLError:
                    return None
                return docs[0] if docs and isinstance(docs[0], dict) and "root" in docs[0] else None

            def _config_map(self, method: str, path: str) -> None:
                parts = path.split("/")  # /api/v1/namespaces/<ns>/configmaps/<name>
                key = (parts[4], parts[6])
                if not self._authorized(kfp.k8s_token):
                    return self._send(401, {"kind": "Status", "status": "Failure", "reason": "Unauthorized", "code": 401})
                if key not in kfp.config_maps:
                    return self._send(404, {"kind": "Status", "status": "Failure", "reason": "NotFound", "code": 404})
                if method != "PATCH" or "merge-patch" not in self.headers.get("Content-Type", ""):
                    return self._send(415, {"kind": "Status", "status": "Failure", "reason": "UnsupportedMediaType"})
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                kfp.config_maps[key].update(body.get("data", {}))
                return self._send(200, {"kind": "ConfigMap", "apiVersion": "v1",
                                        "metadata": {"name": key[1], "namespace": key[0]}, "data": kfp.config_maps[key]})

            def do_GET(self):
                self._route("GET")

            def do_POST(self):
                self._route("POST")

            def do_PATCH(self):
                self._route("PATCH")

        return Handler

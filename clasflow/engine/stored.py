"""Checkpoints kept in the object store, so a training step continues on another pod.

`CheckpointStore(prefix)` mirrors the checkpoint folders a training writes (epochs,
``interrupted``, ``best_model``) under ``PREFIX/<folder>/``. Each folder's files go up with
clasflow.storage (atomic, sha256-verified), then ``manifest.json`` naming every file and its
sha256: a folder counts only once its manifest is there and its files match it, so a process
killed halfway through an upload leaves an incomplete folder that nobody resumes from. After a
new epoch checkpoint is stored, older stored checkpoints are deleted: the store holds the
latest checkpoint (plus an ``interrupted`` one newer than it, and ``best_model``).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

from clasflow import storage
from clasflow.engine import checkpoint as ckpt
from clasflow.errors import ClasflowError
from clasflow.fsutil import file_digest, replace_dir, write_text_atomic

log = logging.getLogger(__name__)
MANIFEST = "manifest.json"
BEST = "best_model"


class CheckpointStore:
    def __init__(self, prefix: str):
        self.prefix = prefix.rstrip("/") + "/"

    def _uri(self, *parts: str) -> str:
        return storage.join(self.prefix, *parts)

    def put(self, folder: str | os.PathLike) -> None:
        """Store one checkpoint folder; a storage failure is logged at WARNING (training goes
        on, the next checkpoint tries again)."""
        folder = Path(folder)
        try:
            self._put(folder)
        except ClasflowError as exc:
            log.warning("checkpoint %s was NOT stored in %s: %s", folder, self.prefix, exc)

    def _put(self, folder: Path) -> None:
        meta = ckpt.read_meta(folder)
        storage.remove(self._uri(folder.name, MANIFEST))  # incomplete until its new manifest is up
        files = {f.name: file_digest(f) for f in sorted(folder.iterdir()) if f.is_file()}
        for name in files:
            storage.upload(folder / name, self._uri(folder.name, name))
        manifest = {"files": files, "position": list(meta.next_position()), "epoch": meta.epoch}
        with tempfile.TemporaryDirectory() as tmp:
            write_text_atomic(Path(tmp) / MANIFEST, json.dumps(manifest, indent=2))
            storage.upload(Path(tmp) / MANIFEST, self._uri(folder.name, MANIFEST))
        if folder.name.isdigit():  # older checkpoints (and leftovers of cut uploads) are not needed any more
            for name, other in self.manifests(with_incomplete=True).items():
                if name not in (BEST, folder.name) and (other is None or tuple(other["position"]) <= tuple(manifest["position"])):
                    storage.remove(self._uri(name) + "/")
        log.info("stored checkpoint %s in %s", folder.name, self._uri(folder.name))

    def manifests(self, with_incomplete: bool = False) -> dict[str, dict | None]:
        """Folder name -> manifest of every stored folder that has one (and, `with_incomplete`,
        None for folders without)."""
        found: dict[str, dict | None] = {}
        with tempfile.TemporaryDirectory() as tmp:
            for uri in storage.list(self.prefix):
                name, _, leaf = uri[len(self.prefix):].partition("/")
                if with_incomplete:
                    found.setdefault(name, None)
                if leaf != MANIFEST:
                    continue
                try:
                    found[name] = json.loads(storage.download(uri, Path(tmp) / f"{name}.json").read_text())
                except (ClasflowError, json.JSONDecodeError) as exc:
                    log.warning("ignoring stored checkpoint %s: unreadable manifest (%s)", self._uri(name), exc)
        return found

    def restore(self, arch_dir: str | os.PathLike) -> Path | None:
        """Download the latest complete stored checkpoint (and best_model) into `arch_dir`;
        returns the local checkpoint folder, or None when the store holds none."""
        arch_dir = Path(arch_dir)
        manifests = self.manifests()
        candidates = sorted(((tuple(m["position"]), name.isdigit(), name) for name, m in manifests.items() if name != BEST),
                            reverse=True)
        if BEST in manifests:
            self._fetch(BEST, manifests[BEST], arch_dir)
        for _, _, name in candidates:
            local = self._fetch(name, manifests[name], arch_dir)
            if local is not None:
                return local
        return None

    def _fetch(self, name: str, manifest: dict, arch_dir: Path) -> Path | None:
        arch_dir.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=arch_dir))
        try:
            for file, sha in manifest["files"].items():
                storage.download(self._uri(name, file), tmp / file, sha256=sha)
            replace_dir(tmp, arch_dir / name)
        except ClasflowError as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            log.warning("stored checkpoint %s is incomplete or corrupt, not resuming from it: %s", self._uri(name), exc)
            return None
        return arch_dir / name

    def clear(self) -> int:
        """Delete every stored checkpoint of this training; returns how many objects went."""
        return storage.remove(self.prefix)

"""Load pretrained weights strictly: every key must match, except a classifier head whose
class count differs (1000 -> 102), which is skipped and reported.

``path`` may be, in this order:

* a ``.pdparams`` file, or a PaddleClas prefix (``output/ResNet50_vd/19/ppcls`` means
  ``output/ResNet50_vd/19/ppcls.pdparams``);
* a v1 (seed) ``.tar`` archive of per-variable files;
* a folder holding exactly one ``.pdparams``, or else extracted v1 variable files.

Weight files are pickles: loading one runs whatever code it carries. So a file that
``clasflow download`` recorded in ``zoo.lock.json`` beside it (or that the zoo pins) is checked
against that sha256 before it is unpickled, and refused when it differs unless the caller
trusts it (``trust=True``, the ``--trust`` flag). Files without a lock entry or pin, such as
the checkpoints our trainer writes, load as before.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import os
import re
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import paddle

from clasflow.errors import ClasflowError

from . import v1_weights

HEAD_KEY = re.compile(r"(^|\.)fc\.(weight|bias)$")
_LIST_MAX = 20
LOCK_FILE = "zoo.lock.json"  # written by clasflow.zoo.download_weights beside the weights
log = logging.getLogger(__name__)
# Trust for loads that do not take a `trust` argument (the export stage reads weights itself).
_TRUST = contextvars.ContextVar("clasflow_trust_weights", default=False)


@contextlib.contextmanager
def trusted_weights(trust: bool = True):
    """Within this block, weights whose sha256 differs from their lock entry or pin load (with a
    warning) instead of being refused: what ``--trust`` means for commands that load weights."""
    token = _TRUST.set(bool(trust))
    try:
        yield
    finally:
        _TRUST.reset(token)


def _zoo_pins() -> dict[str, str]:
    """file name -> sha256 for the zoo entries that carry a pin."""
    from clasflow.zoo import registry

    pins = {}
    for entry in registry().values():
        if entry.sha256:
            for url in (entry.v1_tar, entry.v2_pdparams):
                if url:
                    pins[url.rsplit("/", 1)[1]] = entry.sha256.lower()
    return pins


def verify_weights(path: str | os.PathLike, *, trust: bool | None = None) -> str | None:
    """Check the weights file ``path`` against the sha256 recorded for it before it is unpickled.

    The expected digest is the entry for its file name in ``zoo.lock.json`` beside it, else the
    zoo's pin for that file name. Returns the file's sha256 when there is something to check,
    None when there is not (e.g. our own checkpoints). A mismatch (or a lock file that cannot be
    read) raises ClasflowError naming the file, both digests and ``--trust``; with ``trust``
    (None: the enclosing :func:`trusted_weights` block) it is logged as a warning instead.
    """
    from clasflow.fsutil import file_digest

    path = Path(path)
    trust = _TRUST.get() if trust is None else bool(trust)
    lock_path = path.parent / LOCK_FILE
    expected = source = None
    if lock_path.is_file():
        try:
            lock = json.loads(lock_path.read_text(encoding="utf-8"))
            entry = lock.get(path.name) if isinstance(lock, dict) else None
            if entry is not None:
                expected = entry.get("sha256") if isinstance(entry, dict) else None
                if not isinstance(expected, str) or not re.fullmatch(r"[0-9a-fA-F]{64}", expected):
                    raise ValueError(f"its entry for {path.name} has no valid sha256")
        except (OSError, UnicodeDecodeError, ValueError) as exc:  # JSONDecodeError is a ValueError
            msg = (f"{path}: cannot verify the weights: {lock_path} is unreadable ({exc}); weight files are "
                   f"pickles that can run code when loaded. Re-download them with `clasflow download`, or pass "
                   f"--trust to load this file anyway")
            if not trust:
                raise ClasflowError(msg) from None
            log.warning("--trust: %s", msg)
            return None
        source = str(lock_path)
    if expected is None:
        expected = _zoo_pins().get(path.name)
        source = "the zoo pin (clasflow/zoo_models.tsv)"
    if expected is None:
        return None
    actual = file_digest(path)
    if actual == expected.lower():
        return actual
    msg = (f"{path}: sha256 {actual} does not match the expected {expected.lower()} recorded in {source}. "
           f"Weight files are pickles that can run code when loaded, so this one is refused; if you trust it, "
           f"pass --trust (or download it again with `clasflow download`)")
    if not trust:
        raise ClasflowError(msg)
    log.warning("--trust: loading %s although its sha256 %s differs from %s recorded in %s",
                path, actual, expected.lower(), source)
    return actual


@dataclass
class LoadReport:
    """What :func:`load_pretrained` did."""

    source: str  # the file or folder actually read
    format: str  # "pdparams" or "v1"
    loaded: list[str] = field(default_factory=list)  # model keys set from the file
    skipped_head: list[str] = field(default_factory=list)  # head keys left at their init
    head_shapes: dict[str, tuple[list[int], list[int]]] = field(default_factory=dict)  # key -> (file, model)
    ignored: list[str] = field(default_factory=list)  # v1 files that are not parameters

    def summary(self) -> str:
        text = f"loaded {len(self.loaded)} tensors from {self.source} ({self.format})"
        if self.skipped_head:
            shapes = ", ".join(f"{k} {f} vs {m}" for k, (f, m) in self.head_shapes.items())
            text += f"; skipped classifier head (class count differs: {shapes})"
        if self.ignored:
            text += f"; ignored non-parameter files {self.ignored}"
        return text


def resolve_weights(path: str | os.PathLike) -> tuple[Path, str]:
    """Find the weights ``path`` refers to; returns (path, "pdparams" | "v1")."""
    p = Path(os.path.expanduser(str(path)))
    prefixed = Path(str(p) + ".pdparams")
    if p.is_file():
        if p.suffix == ".pdparams":
            return p, "pdparams"
        if tarfile.is_tarfile(p):
            return p, "v1"
        if prefixed.is_file():
            return prefixed, "pdparams"
        raise ClasflowError(f"{p} is neither a .pdparams file nor a v1 .tar archive of weights")
    if prefixed.is_file():
        return prefixed, "pdparams"
    if p.is_dir():
        found = sorted(p.glob("*.pdparams"))
        if len(found) == 1:
            return found[0], "pdparams"
        if len(found) > 1:
            names = ", ".join(f.name for f in found)
            raise ClasflowError(f"{p} holds several .pdparams ({names}); pass one, e.g. "
                                f"{p / found[0].stem} (PaddleClas prefix) or {found[0]}")
        if any(f.is_file() and not f.name.startswith(".") for f in p.rglob("*")):
            return p, "v1"
        raise ClasflowError(f"{p} is an empty folder: no .pdparams and no v1 variable files")
    raise ClasflowError(f"no pretrained weights at {p}: neither {p} nor {prefixed} exists")


def _read_pdparams(path: Path, *, trust: bool | None = None) -> dict[str, np.ndarray]:
    verify_weights(path, trust=trust)  # before unpickling anything
    try:
        state = paddle.load(str(path), return_numpy=True)
    except Exception as e:  # paddle raises a variety of errors for damaged pickles
        raise ClasflowError(f"{path}: cannot read .pdparams: {type(e).__name__}: {e}") from None
    if not isinstance(state, dict):
        raise ClasflowError(f"{path}: expected a state dict (name -> tensor), found {type(state).__name__}")
    out = {}
    for k, v in state.items():
        if str(k).startswith("StructuredToParameterName@@"):
            continue
        if not isinstance(v, (np.ndarray, np.generic)):
            raise ClasflowError(f"{path}: entry {k!r} is a {type(v).__name__}, not a tensor "
                                "(is this an optimizer .pdopt or a metrics .pdstates file?)")
        out[str(k)] = np.asarray(v)
    return out


def _fmt(keys, shapes=None) -> str:
    keys = list(keys)
    items = [f"{k} {shapes[k][0]} vs model {shapes[k][1]}" if shapes else k for k in keys[:_LIST_MAX]]
    return ", ".join(items) + (f" ... ({len(keys)} in all)" if len(keys) > _LIST_MAX else "")


def _prefix_hint(unexpected, model_keys) -> str:
    head, _, rest = unexpected[0].partition(".")
    if rest and rest in model_keys:
        return f" (the file's keys look prefixed with '{head}.': load it into model.{head.lower()} instead?)"
    return ""


def apply_state(model, state: dict[str, np.ndarray], source: str, fmt: str,
                strict_head: bool = False) -> LoadReport:
    """Copy ``state`` into ``model`` by key, under the rules in the module docstring."""
    target = model.state_dict()
    shape = {k: (list(state[k].shape), list(target[k].shape)) for k in target if k in state}
    mismatched = {k: s for k, s in shape.items() if s[0] != s[1]}
    report = LoadReport(source=source, format=fmt)
    heads = {k.rsplit(".", 1)[0] for k in mismatched if HEAD_KEY.search(k)}
    if heads and not strict_head:
        in_head = lambda k: k.rsplit(".", 1)[0] in heads  # noqa: E731
        report.skipped_head = [k for k in target if in_head(k)]
        report.head_shapes = {k: shape[k] for k in report.skipped_head if k in shape}
        mismatched = {k: s for k, s in mismatched.items() if not in_head(k)}
    skip = set(report.skipped_head)
    missing = [k for k in target if k not in state and k not in skip]
    unexpected = [k for k in state if k not in target and not (skip and k.rsplit(".", 1)[0] in heads)]
    problems = []
    if missing:
        problems.append(f"missing in file: {_fmt(missing)}")
    if unexpected:
        problems.append(f"not in model: {_fmt(unexpected)}")
    if mismatched:
        problems.append(f"shape mismatch: {_fmt(mismatched, mismatched)}")
    if problems:
        hint = _prefix_hint(unexpected, set(target)) if unexpected else ""
        raise ClasflowError(f"{source}: weights do not fit {type(model).__name__}: "
                            + "; ".join(problems) + hint + " (nothing was loaded)")
    for k, tensor in target.items():
        if k in skip:
            continue
        arr = state[k]
        want = str(tensor.dtype).replace("paddle.", "")
        if arr.dtype.name != want and want in ("float16", "float32", "float64", "int32", "int64"):
            arr = arr.astype(want)
        tensor.set_value(arr)
        report.loaded.append(k)
    return report


def load_pretrained(model, path: str | os.PathLike, *, strict_head: bool = False, trust: bool = False) -> LoadReport:
    """Load weights at ``path`` into ``model`` (see module docstring for accepted paths).

    A classifier (``fc.weight``/``fc.bias``) whose shape differs is left untouched and listed
    in the report, unless ``strict_head``; any other missing/unexpected key or shape mismatch
    raises :class:`ClasflowError` naming the keys, before anything is changed. A file listed in
    ``zoo.lock.json`` beside it (or pinned by the zoo) must match that sha256 unless ``trust``
    (or an enclosing :func:`trusted_weights` block).
    """
    trust = bool(trust) or _TRUST.get()
    resolved, fmt = resolve_weights(path)
    if fmt == "pdparams":
        return apply_state(model, _read_pdparams(resolved, trust=trust), str(resolved), fmt, strict_head)
    if resolved.is_file():  # a v1 .tar archive
        verify_weights(resolved, trust=trust)
    state, ignored = v1_weights.convert_v1(model, resolved)
    report = apply_state(model, state, str(resolved), fmt, strict_head)
    report.ignored = ignored
    return report

"""Bad configs and list files, generated: every one ends in a ClasflowError that names the key, file
or line, never in another exception.

Hypothesis mutates the six quick-start configs (pointed at a 4-image dataset) and their list files:
wrong types, unknown and missing keys, out-of-range and huge values, missing files, labels out of
range, unlabeled lines where labels are required, empty lists, non-UTF-8 bytes, NUL bytes, broken
YAML and malformed ``-o`` overrides. Each case goes through the real entry points that run before
any training: ``load_config(path, overrides, check_paths=True)`` and ``build_loader`` for TRAIN and
VALID (which reads the lists with ``read_list`` and checks every image file). Some mutations are
valid (a huge epoch count is allowed); those must load, and the others must be refused naming a
locator. A fixed set of cases also goes through ``python -m clasflow train -c BAD.yaml``: exit 2,
the locator on stderr, no traceback. tests/test_config.py and test_data_loaders.py hold the
hand-written cases.
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from clasflow.config import load_config
from clasflow.errors import ClasflowError
from tests.conftest import CONFIGS

BASES = sorted(p.name for p in CONFIGS.glob("*.yaml"))
IMAGES = 4

# ------------------------------------------------------------------ the dataset and the valid base


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    import cv2
    import numpy as np

    root = tmp_path_factory.mktemp("inputs")
    (root / "jpg").mkdir()
    for i in range(IMAGES):
        cv2.imwrite(str(root / "jpg" / f"image_{i}.png"), np.full((40, 48, 3), 40 * i, dtype=np.uint8))
    labeled = "".join(f"jpg/image_{i}.png {i}\n" for i in range(IMAGES))
    (root / "train_list.txt").write_text(labeled)
    (root / "val_list.txt").write_text(labeled)
    (root / "unlabeled_list.txt").write_text("".join(f"jpg/image_{i}.png\n" for i in range(IMAGES)))
    return root


def base_config(name: str, data: Path) -> dict:
    raw = yaml.safe_load((CONFIGS / name).read_text())
    raw["model_save_dir"] = str(data / "output")
    for section, listing in (("TRAIN", "train_list.txt"), ("VALID", "val_list.txt")):
        raw[section].update(file_list=str(data / listing), data_dir=str(data), num_workers=0, loader="opencv", batch_size=2)
    if raw.get("use_distillation"):
        raw["TRAIN"]["file_list"] = str(data / "unlabeled_list.txt")
    return raw


def run_entry_points(path: Path, overrides: list[str]) -> None:
    """What happens before training starts (clasflow train: load_config, then the loaders)."""
    from clasflow.data import build_loader

    cfg = load_config(path, overrides, check_paths=True)
    if cfg.TRAIN is not None:
        build_loader(cfg.TRAIN, mode="train", labeled=not cfg.use_distillation, class_num=cfg.classes_num, seed=cfg.seed)
    if cfg.VALID is not None:
        build_loader(cfg.VALID, mode="eval", labeled=True, class_num=cfg.classes_num, seed=cfg.seed)


def test_every_base_config_is_valid(tiny_data, tmp_path):
    for name in BASES:
        path = tmp_path / name
        path.write_text(yaml.safe_dump(base_config(name, tiny_data)))
        run_entry_points(path, [])


# ------------------------------------------------------------------ cases


@dataclass
class Case:
    kind: str
    what: str
    raw: Any  # the config mapping (or bytes: the file itself)
    lists: dict[str, bytes] = field(default_factory=dict)  # list name -> content, written beside the config
    overrides: list[str] = field(default_factory=list)
    must_fail: bool = True
    locators: tuple[str, ...] = ()  # one of them must be in the message ({dir} is the case folder)

    def write(self, folder: Path) -> Path:
        raw = self.raw
        for name, content in self.lists.items():
            (folder / name).write_bytes(content)
        if isinstance(raw, bytes):
            data = raw
        else:
            data = yaml.safe_dump(_placeholders(raw, str(folder)), sort_keys=False, allow_unicode=True).encode()
        (folder / "BAD.yaml").write_bytes(data)
        return folder / "BAD.yaml"


def _placeholders(node: Any, folder: str) -> Any:
    if isinstance(node, dict):
        return {k: _placeholders(v, folder) for k, v in node.items()}
    if isinstance(node, list):
        return [_placeholders(v, folder) for v in node]
    return node.replace("{dir}", folder) if isinstance(node, str) else node


def _leaves(node: Any, path: tuple = ()) -> list[tuple[tuple, Any]]:
    """(path, value) of every scalar and list-of-scalars in the config, transforms arguments included."""
    out = []
    if isinstance(node, dict):
        if not node and path:
            out.append((path, node))
        for k, v in node.items():
            out += _leaves(v, path + (k,))
    elif isinstance(node, list) and any(isinstance(v, (dict, list)) for v in node):
        for i, v in enumerate(node):
            out += _leaves(v, path + (i,))
    else:
        out.append((path, node))
    return out


def _get(raw: dict, path: tuple) -> Any:
    for p in path:
        raw = raw[p]
    return raw


def _set(raw: dict, path: tuple, value: Any) -> None:
    _get(raw, path[:-1])[path[-1]] = value


def _key(path: tuple) -> str:
    """The name a message must show: the last mapping key on the path."""
    return next(str(p) for p in reversed(path) if isinstance(p, str))


def _free_form(path: tuple) -> bool:
    """Under ARCHITECTURE.params: checked by the model when it is built, not by the config."""
    return path[:2] == ("ARCHITECTURE", "params")


WRONG_VALUES = {"mapping": {"bogus": [1, 2]}, "nested list": [[1], [2]], "text": "not-a-number", "float": 2.5,
                "bool": True, "null": None}


NONE_DEFAULTS = {"NormalizeImage": ("scale", "mean", "std"), "RandCropImage": ("scale", "ratio", "interpolation"),
                 "ResizeImage": ("size", "interpolation")}


def _wrong_type_is_valid(path: tuple, original: Any, kind: str) -> bool:
    """The few replacements that are in fact valid values."""
    name = _key(path)
    if kind == "float":  # where a float goes, or NormalizeImage's scale ('1./255.' or a number)
        return isinstance(original, float) or (name == "scale" and isinstance(original, str))
    if kind == "number":
        return name == "scale" and isinstance(original, str)
    if kind == "null":  # Optional, an operator without arguments, or an argument whose default is None
        return name == "shuffle_seed" or original is None or (path[1:2] == ("transforms",) and name in NONE_DEFAULTS.get(path[3], ()))
    if kind == "bool":
        return isinstance(original, bool)
    return False


@st.composite
def wrong_type(draw, raw):
    path, original = draw(st.sampled_from([(p, v) for p, v in _leaves(raw) if not _free_form(p)]))
    kind = draw(st.sampled_from(sorted(WRONG_VALUES)))
    value = copy.deepcopy(WRONG_VALUES[kind])
    if kind == "text" and isinstance(original, str):
        value = 12345  # a number where text goes
        kind = "number"
    _set(raw, path, value)
    return Case("wrong type", f"{'.'.join(map(str, path))} = {value!r} (was {original!r})", raw,
                must_fail=not _wrong_type_is_valid(path, original, kind), locators=(_key(path),))


BAD_VALUES: list[tuple[tuple, list, str]] = [
    (("TRAIN", "batch_size"), [0, -1, -2**63], "batch_size"),
    (("VALID", "batch_size"), [0, -7], "batch_size"),
    (("TRAIN", "num_workers"), [-1], "num_workers"),
    (("epochs",), [0, -5], "epochs"),
    (("classes_num",), [1, 0, -3], "classes_num"),
    (("topk",), [0, -1], "topk"),
    (("save_interval",), [0], "save_interval"),
    (("valid_interval",), [-1], "valid_interval"),
    (("print_interval",), [0], "print_interval"),
    (("total_images",), [0], "total_images"),
    (("image_shape",), [[3, -32, 32], [1, 32, 32], [3, 32], [], [3, 0, 0]], "image_shape"),
    (("ls_epsilon",), [1.0, -0.1, float("nan")], "ls_epsilon"),
    (("mode",), ["test"], "mode"),
    (("LEARNING_RATE", "function"), ["Step"], "function"),
    (("LEARNING_RATE", "params", "lr"), [0, -0.1, float("nan"), float("inf")], "lr"),
    (("LEARNING_RATE", "params", "end_lr"), ["zero"], "end_lr"),
    (("OPTIMIZER", "function"), ["Adam"], "function"),
    (("OPTIMIZER", "params", "momentum"), ["fast", [0.9]], "momentum"),
    (("OPTIMIZER", "params", "use_nesterov"), ["sometimes"], "use_nesterov"),
    (("OPTIMIZER", "regularizer", "factor"), [-1.0, float("nan")], "factor"),
    (("OPTIMIZER", "regularizer", "function"), ["L3"], "function"),
    (("TRAIN", "loader"), ["gpu"], "loader"),
    (("TRAIN", "transforms", 1, "RandCropImage", "size"), [0, -5, [0, 3], [1, 2, 3]], "size"),
    (("TRAIN", "transforms", 1, "RandCropImage", "scale"), [[0.5], [1.5, 0.2], [-1, 1]], "scale"),
    (("TRAIN", "transforms", 1, "RandCropImage", "ratio"), [[-1, 1]], "ratio"),
    (("TRAIN", "transforms", 2, "RandFlipImage", "flip_code"), [2, -2], "flip_code"),
    (("TRAIN", "transforms", 3, "NormalizeImage", "scale"), ["1/0", "abc", 0, -1, "1./255./2"], "scale"),
    (("TRAIN", "transforms", 3, "NormalizeImage", "std"), [[0, 1, 1], [1, 1]], "std"),
    (("TRAIN", "transforms", 3, "NormalizeImage", "mean"), [[1, 2]], "mean"),
    (("TRAIN", "transforms", 3, "NormalizeImage", "order"), ["xyz"], "order"),
    (("VALID", "transforms", 1, "ResizeImage", "resize_short"), [-1, 1.5, 0], "resize_short"),
    (("VALID", "transforms", 2, "CropImage", "size"), [-1, [2]], "size"),
]


@st.composite
def bad_value(draw, raw):
    path, values, locator = draw(st.sampled_from(BAD_VALUES))
    value = draw(st.sampled_from(values))
    if path[:2] == ("LEARNING_RATE", "params") and path[-1] == "end_lr":
        raw["LEARNING_RATE"]["function"] = "Linear"
    _set(raw, path, value)
    return Case("out of range", f"{'.'.join(map(str, path))} = {value!r}", raw, locators=(locator,))


HUGE = [10**30, -(10**30), 2**63, 1e308, float("inf"), float("-inf")]


@st.composite
def huge(draw, raw):
    numeric = [(p, v) for p, v in _leaves(raw) if isinstance(v, (int, float)) and not isinstance(v, bool) and not _free_form(p)]
    path, original = draw(st.sampled_from(numeric))
    value = draw(st.sampled_from(HUGE))
    _set(raw, path, value)
    return Case("huge number", f"{'.'.join(map(str, path))} = {value!r}", raw, must_fail=False, locators=(_key(path),))


STRUCTURED = {  # where an unknown key is an error, and the keys known there
    (): None, ("ARCHITECTURE",): None, ("LEARNING_RATE",): None, ("LEARNING_RATE", "params"): None,
    ("OPTIMIZER",): None, ("OPTIMIZER", "params"): None, ("OPTIMIZER", "regularizer"): None,
    ("TRAIN",): None, ("VALID",): None, ("TRAIN", "transforms", 1, "RandCropImage"): None,
    ("VALID", "transforms", 3, "NormalizeImage"): None,
}
KNOWN_NAMES = {"mode", "ARCHITECTURE", "pretrained_model", "model_save_dir", "classes_num", "total_images", "save_interval",
               "validate", "valid_interval", "epochs", "topk", "image_shape", "use_mix", "ls_epsilon", "use_distillation",
               "checkpoints", "print_interval", "use_amp", "seed", "LEARNING_RATE", "OPTIMIZER", "TRAIN", "VALID", "name",
               "params", "function", "regularizer", "factor", "batch_size", "num_workers", "file_list", "data_dir",
               "shuffle_seed", "transforms", "loader", "skip_bad_images", "lr", "end_lr", "power", "decay_epochs", "gamma",
               "warmup_epoch", "epochs", "step_each_epoch", "momentum", "use_nesterov", "size", "scale", "ratio",
               "interpolation", "backend", "mean", "std", "order", "output_fp16", "channel_num"}


@st.composite
def unknown_key(draw, raw):
    where = draw(st.sampled_from(list(STRUCTURED)))
    name = draw(st.from_regex(r"[A-Za-z][A-Za-z0-9_]{2,12}", fullmatch=True).filter(lambda n: n not in KNOWN_NAMES))
    node = _get(raw, where)
    if node is None:
        node = {}
        _set(raw, where, node)
    node[name] = draw(st.sampled_from([1, "x", [1, 2], {"a": 1}, None]))
    # LEARNING_RATE.params and OPTIMIZER.params are checked against the schedule/optimizer when training builds them
    later = where in (("LEARNING_RATE", "params"), ("OPTIMIZER", "params"))
    return Case("unknown key", f"{'.'.join(map(str, where + (name,)))}", raw, must_fail=not later, locators=(name,))


REQUIRED = [("ARCHITECTURE",), ("ARCHITECTURE", "name"), ("LEARNING_RATE", "params", "lr"),
            ("OPTIMIZER", "regularizer", "factor"), ("TRAIN", "batch_size"), ("TRAIN", "file_list"), ("TRAIN", "data_dir"),
            ("TRAIN", "transforms"), ("VALID", "batch_size"), ("VALID", "file_list"), ("VALID", "data_dir"),
            ("VALID", "transforms"), ("TRAIN", "transforms", 1, "RandCropImage", "size"),
            ("VALID", "transforms", 2, "CropImage", "size"), ("VALID", "transforms", 1, "ResizeImage", "resize_short")]


@st.composite
def missing_key(draw, raw):
    path = draw(st.sampled_from(REQUIRED))
    del _get(raw, path[:-1])[path[-1]]
    locator = "resize_short" if path[-1] == "resize_short" else _key(path)
    return Case("missing key", ".".join(map(str, path)), raw, locators=(locator,))


@st.composite
def missing_file(draw, raw):
    section = draw(st.sampled_from(["TRAIN", "VALID"]))
    key = draw(st.sampled_from(["file_list", "data_dir"]))
    missing = "{dir}/" + draw(st.from_regex(r"[a-z]{1,8}(/[a-z]{1,8}){0,2}", fullmatch=True)) + ".missing"
    raw[section][key] = missing
    return Case("missing file", f"{section}.{key} = {missing}", raw, locators=(f"{section}.{key}",))


def _image_line(i: int, label: Any = None) -> str:
    return f"jpg/image_{i}.png" + ("" if label is None else f" {label}")


@st.composite
def bad_list(draw, raw, data: Path):
    distill = bool(raw.get("use_distillation"))
    section = draw(st.sampled_from(["VALID"] if distill else ["TRAIN", "VALID"]))
    classes = raw["classes_num"]
    lines = [_image_line(i, i) for i in range(IMAGES)]
    at = draw(st.integers(0, IMAGES - 1))
    kind = draw(st.sampled_from(["label out of range", "negative label", "huge label", "label not an integer",
                                 "unlabeled line", "empty list", "blank list", "non-UTF-8 bytes", "NUL byte in a path",
                                 "missing image", "not an image", "path too long", "CRLF and BOM (valid)",
                                 "unlabeled extra list: non-UTF-8"]))
    content, must_fail, line = None, True, at + 1
    if kind == "label out of range":
        lines[at] = _image_line(at, classes + draw(st.integers(0, 1000)))
    elif kind == "negative label":
        lines[at] = _image_line(at, -draw(st.integers(1, 10**6)))
    elif kind == "huge label":
        lines[at] = _image_line(at, draw(st.sampled_from([10**30, 2**63, 2**64 + 1])))
    elif kind == "label not an integer":
        lines[at] = _image_line(at, draw(st.sampled_from(["abc", "1.5", "0x1", "1e3", "--1", "٣x"])))
    elif kind == "unlabeled line":
        lines[at] = _image_line(at)
    elif kind == "NUL byte in a path":
        lines[at] = f"jpg/ima\x00ge_{at}.png {at}"
    elif kind == "missing image":
        lines[at] = f"jpg/missing_{at}.png {at}"
    elif kind == "not an image":
        lines[at] = f"{section.lower()}.txt {at}"
    elif kind == "path too long":
        lines[at] = f"jpg/{'x' * 5000}.png {at}"
    if kind == "empty list":
        content, line = b"", None
    elif kind == "blank list":
        content, line = b"\n  \n\t\n", None
    elif kind == "non-UTF-8 bytes":
        encoded = [l.encode() for l in lines]
        encoded[at] = encoded[at][:4] + b"\xff\xfe\xfa" + encoded[at][4:]
        content = b"\n".join(encoded) + b"\n"
    elif kind == "CRLF and BOM (valid)":
        content, must_fail = ("\ufeff" + "\r\n".join(lines) + "\r\n").encode(), False
    elif kind == "unlabeled extra list: non-UTF-8":
        section = "TRAIN"
        if distill:
            content = b"jpg/image_0.png\n\xc3\x28 jpg/image_1.png\n"
            line = 2
        else:
            content = b"jpg/image_0.png 0\njpg/image_1.png \xc3\x28\n"
            line = 2
    if content is None:
        content = ("\n".join(lines) + "\n").encode()
    name = f"{section.lower()}.txt"
    raw[section]["file_list"] = "{dir}/" + name
    raw[section]["data_dir"] = str(data)
    if kind == "not an image":
        raw[section]["data_dir"] = "{dir}"
        raw[section]["file_list"] = "{dir}/" + name
    locators = ("{dir}/" + name + (f":{line}" if line else ""),)
    return Case("list file", f"{section} {kind} (line {line})", raw, lists={name: content}, must_fail=must_fail,
                locators=locators)


YAML_BREAKAGE = {
    "non-UTF-8 byte in a value": lambda text: text.replace(b"mode: train", b"mode: tr\xe9in", 1),
    "non-UTF-8 byte in a comment": lambda text: b"# caf\xe9\n" + text,
    "unclosed bracket": lambda text: text.replace(b"image_shape:", b"image_shape: [3, 224\nx:", 1),
    "tab indentation": lambda text: text.replace(b"\n  name:", b"\n\tname:", 1),
    "top level is a list": lambda text: b"- " + text.replace(b"\n", b"\n  "),
    "top level is a number": lambda text: b"42\n",
    "empty file": lambda text: b"",
    "only a comment": lambda text: b"# nothing here\n",
    "python object tag": lambda text: text + b"evil: !!python/object/apply:os.system ['echo pwned']\n",
    "deeply nested": lambda text: text + b"deep: " + b"[" * 20000 + b"]" * 20000 + b"\n",
    "duplicate key (last wins, valid)": lambda text: text + b"epochs: 3\n",
    "NUL byte": lambda text: text.replace(b"mode:", b"mo\x00de:", 1),
}


@st.composite
def broken_yaml(draw, raw):
    what = draw(st.sampled_from(sorted(YAML_BREAKAGE)))
    text = yaml.safe_dump(raw, sort_keys=False).encode()
    if what.startswith("duplicate"):
        text = text.replace(b"epochs: 20\n", b"")
    return Case("broken YAML", what, YAML_BREAKAGE[what](text), must_fail="valid" not in what,
                locators=("BAD.yaml",))


OVERRIDES = [("epochs", "epochs"), ("=3", "=3"), ("epochs=[1,", "epochs"), ("TRAIN.batch_size.x=1", "TRAIN.batch_size"),
             ("TRAIN.transforms.99.RandCropImage.size=3", "TRAIN.transforms"), ("epochs=abc", "epochs"),
             ("TRAIN.batchsize=4", "batchsize"), ("VALID.transforms.2.CropImage.size=[1, 2, 3]", "size"),
             ("classes_num=2.5", "classes_num"), ("LEARNING_RATE.params.lr=-1", "lr"),
             ("image_shape=[3, 32]", "image_shape"), ("TRAIN=5", "TRAIN"), (".=1", ".=1"), ("a..b=1", "a..b=1")]


@st.composite
def bad_override(draw, raw):
    text, locator = draw(st.sampled_from(OVERRIDES))
    return Case("bad -o override", text, raw, overrides=[text], locators=(locator,))


@st.composite
def cases(draw, data: Path):
    name = draw(st.sampled_from(BASES))
    raw = base_config(name, data)
    strategy = draw(st.sampled_from(["wrong_type", "bad_value", "huge", "unknown_key", "missing_key", "missing_file",
                                     "bad_list", "broken_yaml", "bad_override"]))
    if strategy == "bad_list":
        case = draw(bad_list(raw, data))
    else:
        case = draw(globals()[strategy](raw))
    case.what = f"{name}: {case.what}"
    return case


def check(case: Case, folder: Path) -> str:
    """Run the case; returns 'refused' or 'accepted'. Anything but a located ClasflowError fails."""
    path = case.write(folder)
    try:
        run_entry_points(path, case.overrides)
    except ClasflowError as exc:
        msg = str(exc)
        locators = [loc.replace("{dir}", str(folder)) for loc in case.locators]
        assert any(loc in msg for loc in locators), f"{case.kind}: {case.what}: the message names none of {locators}: {msg}"
        return "refused"
    assert not case.must_fail, f"{case.kind}: {case.what}: accepted"
    return "accepted"


# ------------------------------------------------------------------ the property


def regressions(data: Path) -> list[Case]:
    """Cases that once ended in another exception (or unlocated), run every time besides the generated ones."""

    def mutated(name: str, path: tuple, value: Any, locator: str, kind: str = "huge number") -> Case:
        raw = base_config(name, data)
        _set(raw, path, value)
        return Case(kind, f"{name}: {'.'.join(map(str, path))} = {value!r}", raw, locators=(locator,))

    text = yaml.safe_dump(base_config("ResNet50_vd.yaml", data), sort_keys=False).encode()
    nul_list = base_config("ResNet50_vd.yaml", data)
    nul_list["TRAIN"]["file_list"] = "{dir}/train.txt"
    return [
        mutated("ResNet50_vd_finetune.yaml", ("VALID", "transforms", 1, "ResizeImage", "resize_short"), float("inf"),
                "resize_short"),  # was OverflowError
        mutated("ResNet50_vd.yaml", ("TRAIN", "transforms", 1, "RandCropImage", "size"), 10**30, "size"),  # was cv2.error at the first batch
        mutated("ResNet50_vd.yaml", ("classes_num",), 10**12, "classes_num"),  # was IndexError building the model
        mutated("ResNet50_vd.yaml", ("TRAIN", "num_workers"), 10**30, "num_workers"),  # exhausted the machine
        mutated("ResNet50_vd.yaml", ("OPTIMIZER", "params", "momentum"), True, "momentum", "wrong type"),  # was accepted
        mutated("ResNet50_vd.yaml", ("LEARNING_RATE", "params", "lr"), float("nan"), "lr", "out of range"),  # was accepted
        Case("list file", "NUL byte in a path", nul_list, lists={"train.txt": b"jpg/ima\x00ge_0.png 0\n"},
             locators=("{dir}/train.txt:1",)),  # was ValueError: embedded null byte
        Case("broken YAML", "deeply nested", text + b"deep: " + b"[" * 20000 + b"]" * 20000 + b"\n",
             locators=("BAD.yaml",)),  # was RecursionError
        Case("broken YAML", "non-UTF-8 byte", b"# caf\xe9\n" + text, locators=("BAD.yaml:1",)),  # was UnicodeDecodeError
        Case("bad -o override", ".=1", base_config("ResNet50_vd.yaml", data), overrides=[".=1"], locators=(".=1",)),
    ]


def outcome(case: Case) -> dict:
    """One generated case's result; a wrong exception or an unlocated message is a 'failed' outcome."""
    with tempfile.TemporaryDirectory() as tmp:
        try:
            result, error = check(case, Path(tmp)), ""
        except Exception as exc:  # counted (and reported below), not raised inside hypothesis
            result, error = "failed", f"{type(exc).__name__}: {exc}"[:500]
    return {"kind": case.kind, "what": case.what, "outcome": result, "must_fail": case.must_fail, "error": error}


KINDS = {"wrong type", "out of range", "huge number", "unknown key", "missing key", "missing file", "list file",
         "broken YAML", "bad -o override"}


@pytest.mark.timeout(600)
def test_generated_bad_inputs_end_in_a_located_clasflow_error(tiny_data, fault_record):
    scenario = "inputs: generated bad configs, overrides and list files (hypothesis)"
    fault_record.plan(scenario, 500)
    outcomes: list[dict] = []

    @settings(max_examples=500, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much])
    @given(case=cases(tiny_data))
    def prop(case):
        outcomes.append(outcome(case))

    for case in regressions(tiny_data):
        prop = example(case=case)(prop)
    prop()

    failed = [o for o in outcomes if o["outcome"] == "failed"]
    refused = sum(o["outcome"] == "refused" for o in outcomes)
    kinds = {o["kind"] for o in outcomes}
    fault_record(scenario, trials=len(outcomes), survived=len(outcomes) - len(failed), data_lost=0,
                 note=f"{refused} refused with a located ClasflowError, {len(outcomes) - refused - len(failed)} valid "
                      f"mutations accepted, {len(failed)} failed; kinds: {', '.join(sorted(kinds))}")
    assert not failed, "\n".join(f"{o['kind']}: {o['what']}: {o['error']}" for o in failed[:20])
    assert len(outcomes) >= 500
    assert kinds == KINDS


# ------------------------------------------------------------------ the same through the CLI

CLI_CASES = [  # (base config, mutation, locator); list mutations reach the loaders (after Paddle is imported)
    ("ResNet50_vd.yaml", lambda r: _set(r, ("TRAIN", "batch_size"), "eight"), "TRAIN.batch_size"),
    ("ResNet50_vd.yaml", lambda r: _set(r, ("epochs",), -1), "epochs"),
    ("ResNet50_vd_finetune.yaml", lambda r: r.update(lerning_rate=1), "lerning_rate"),
    ("ResNet50_vd_finetune.yaml", lambda r: r["TRAIN"].pop("file_list"), "TRAIN.file_list"),
    ("ResNet50_vd_ssld_finetune.yaml", lambda r: _set(r, ("VALID", "file_list"), "{dir}/nope.txt"), "{dir}/nope.txt"),
    ("ResNet50_vd_ssld_finetune.yaml", lambda r: _set(r, ("image_shape",), [3, 0, 0]), "image_shape"),
    ("MobileNetV3_large_x1_0_finetune.yaml", lambda r: _set(r, ("TRAIN", "transforms", 1, "RandCropImage", "size"), -3), "size"),
    ("MobileNetV3_large_x1_0_finetune.yaml", lambda r: _set(r, ("VALID", "transforms", 1, "ResizeImage", "resize_short"), 1e400), "resize_short"),
    ("ResNet50_vd_ssld_random_erasing_finetune.yaml", lambda r: _set(r, ("TRAIN", "transforms", 5, "RandomErasing", "EPSILON"), 2), "EPSILON"),
    ("R50_vd_distill_MV3_large_x1_0.yaml", lambda r: _set(r, ("pretrained_model",), "one/path"), "pretrained_model"),
    ("R50_vd_distill_MV3_large_x1_0.yaml", lambda r: _set(r, ("OPTIMIZER", "params", "momentum"), "fast"), "momentum"),
    ("ResNet50_vd.yaml", lambda r: _set(r, ("LEARNING_RATE", "params", "lr"), float("nan")), "lr"),
    ("ResNet50_vd.yaml", lambda r: _set(r, ("ARCHITECTURE", "name"), "ResNet51_vd"), "ResNet51_vd"),
    ("ResNet50_vd.yaml", b"mode: tr\xe9in\n", "BAD.yaml"),
    ("ResNet50_vd.yaml", b"x: [1, 2\n", "BAD.yaml"),
    ("ResNet50_vd.yaml", ("val_list.txt", b"jpg/image_0.png 0\njpg/image_1.png 999\n"), "val_list.txt:2"),
    ("ResNet50_vd.yaml", ("train_list.txt", b"jpg/image_0.png 0\njpg/image_1.png\n"), "train_list.txt:2"),
    ("ResNet50_vd.yaml", ("train_list.txt", b"\n\n"), "train_list.txt"),
    ("ResNet50_vd.yaml", ("val_list.txt", b"jpg/image_0.png 0\n\xff\xfe 1\n"), "val_list.txt:2"),
    ("ResNet50_vd.yaml", ("val_list.txt", b"jpg/missing.png 0\n"), "val_list.txt:1"),
]


def _cli_case(i: int, spec, data: Path, root: Path) -> tuple[str, int, str, str]:
    base, mutation, locator = spec
    folder = root / f"case{i}"
    folder.mkdir()
    raw = base_config(base, data)
    raw["pretrained_model"] = ["", ""] if raw.get("use_distillation") else ""
    raw["epochs"] = 1
    if isinstance(mutation, bytes):
        (folder / "BAD.yaml").write_bytes(mutation)
    else:
        if isinstance(mutation, tuple):
            name, content = mutation
            (folder / name).write_bytes(content)
            section = "VALID" if name.startswith("val") else "TRAIN"
            raw[section]["file_list"] = str(folder / name)
        else:
            mutation(raw)
        (folder / "BAD.yaml").write_text(yaml.safe_dump(_placeholders(raw, str(folder)), sort_keys=False))
    proc = subprocess.run([sys.executable, "-m", "clasflow", "train", "-c", str(folder / "BAD.yaml"), "--no-track"],
                          capture_output=True, text=True, timeout=240, env={**os.environ, "OMP_NUM_THREADS": "1"})
    return locator.replace("{dir}", str(folder)), proc.returncode, proc.stderr, proc.stdout


@pytest.mark.timeout(600)
def test_bad_configs_through_the_cli(tiny_data, tmp_path, fault_record):
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(lambda a: _cli_case(a[0], a[1], tiny_data, tmp_path), enumerate(CLI_CASES)))
    problems = []
    for (locator, rc, err, out), spec in zip(results, CLI_CASES):
        if rc != 2 or "Traceback" in err or "clasflow: error:" not in err or locator not in err:
            problems.append(f"{spec[0]} ({locator}): exit {rc}\n{err[-1500:]}")
    fault_record("inputs: bad configs and lists through `clasflow train` (exit 2, no traceback)", trials=len(CLI_CASES),
                 survived=len(CLI_CASES) - len(problems), data_lost=0)
    assert not problems, "\n\n".join(problems)

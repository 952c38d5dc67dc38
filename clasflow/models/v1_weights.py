"""Seed (PaddleClas 1.x, static graph) pretrained weights: read, write, rename to 2.x keys.

A v1 pretrained model is a ``.tar`` (or its extracted folder) with one file per variable,
named after the static-graph parameter (``conv1_1_weights``, ``bn2a_branch2a_scale``, ...).
Each file is Paddle's ``save_vars`` LoDTensor serialization, little-endian:

    uint32 version (0) | uint64 lod_level | lod_level x (uint64 nbytes, nbytes of uint64 offsets)
    uint32 tensor version (0) | int32 desc size | TensorDesc protobuf | raw data (C order)

``TensorDesc`` is ``{1: data_type (varint enum), 2: dims (repeated int64)}``.

Name maps (from PaddleClas 1.x static / 2.0 dygraph ``ParamAttr(name=...)`` conventions):

ResNet_vd: stem ``conv1_{1,2,3}_weights`` with BN ``bnv1_{1,2,3}_*`` (the rule ``"bn" +
name[3:]`` applied to ``conv1_1``; ``bn_conv1_1_*`` is also accepted); block ``res{2..5}{a,b,..}``
(for 101/152/200, stage 3 is ``res4a``, ``res4b1``, ``res4b2``, ...) with branches ``branch2a``,
``branch2b``, ``branch2c`` (bottleneck), ``branch1`` (shortcut) and BN ``bn{2a}_{branch}_*``;
classifier ``fc_0.w_0`` / ``fc_0.b_0``. BN suffixes: scale, offset, mean, variance.

MobileNetV3: stem ``conv1``; block i is ``conv{i+2}`` with ``_expand``, ``_depthwise``,
``_linear`` (each ``_weights`` and ``_bn_{scale,offset,mean,variance}``) and SE
``_se_1_weights``/``_se_1_offset``/``_se_2_weights``/``_se_2_offset``; ``conv_last``;
``last_1x1_conv_weights``; ``fc_weights``/``fc_offset``.
"""

from __future__ import annotations

import os
import re
import struct
import tarfile
from pathlib import Path

import numpy as np

from clasflow.errors import ClasflowError

# framework.proto VarType.Type -> numpy dtype (bf16 is read as raw uint16 bits, see _to_numpy)
_DTYPES = {0: np.bool_, 1: np.int16, 2: np.int32, 3: np.int64, 4: np.float16, 5: np.float32,
           6: np.float64, 20: np.uint8, 21: np.int8, 22: "bfloat16"}
_CODES = {np.dtype(v): k for k, v in _DTYPES.items() if v != "bfloat16"}
_MAX_LOD_LEVEL = 16
_MAX_DESC = 1 << 16
# Files a v1 folder may hold that are not model parameters (optimizer / scheduler state).
_NOT_PARAMS = re.compile(r"(@LR_DECAY_COUNTER@|learning_rate_\d+|_velocity_\d+|_moment\d?_\d+|"
                         r"_beta\d_pow_acc_\d+|^__model__$|^__params__$)")


class V1FormatError(ClasflowError):
    """A v1 variable file is truncated or not in Paddle's save_vars format."""


# ---------------------------------------------------------------- binary format

def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise ValueError("truncated varint")
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return value, pos


def _put_varint(value: int) -> bytes:
    value &= (1 << 64) - 1  # int64 two's complement, as protobuf does
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        out.append(low | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _signed64(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v


def _parse_desc(desc: bytes) -> tuple[int, list[int]]:
    dtype, dims, pos = None, [], 0
    while pos < len(desc):
        tag, pos = _varint(desc, pos)
        field, wire = tag >> 3, tag & 7
        if wire == 0:
            value, pos = _varint(desc, pos)
            if field == 1:
                dtype = value
            elif field == 2:
                dims.append(_signed64(value))
        elif wire == 2:  # length-delimited: packed dims, or an unknown field
            size, pos = _varint(desc, pos)
            chunk, pos = desc[pos:pos + size], pos + size
            if pos > len(desc):
                raise ValueError("truncated field")
            if field == 2:
                p = 0
                while p < len(chunk):
                    value, p = _varint(chunk, p)
                    dims.append(_signed64(value))
        elif wire in (1, 5):
            pos += 8 if wire == 1 else 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
    if dtype is None:
        raise ValueError("tensor description has no data_type")
    return dtype, dims


def parse_v1_var(data: bytes, name: str = "<bytes>") -> np.ndarray:
    """Decode one save_vars variable file's bytes into an array."""
    try:
        (version,) = struct.unpack_from("<I", data, 0)
        if version != 0:
            raise ValueError(f"unsupported LoDTensor version {version}")
        (lod_level,) = struct.unpack_from("<Q", data, 4)
        if lod_level > _MAX_LOD_LEVEL:
            raise ValueError(f"implausible lod_level {lod_level}")
        pos = 12
        for _ in range(lod_level):
            (nbytes,) = struct.unpack_from("<Q", data, pos)
            pos += 8 + nbytes
        tensor_version, desc_size = struct.unpack_from("<Ii", data, pos)
        pos += 8
        if tensor_version != 0:
            raise ValueError(f"unsupported tensor version {tensor_version}")
        if not 0 < desc_size <= _MAX_DESC or pos + desc_size > len(data):
            raise ValueError(f"bad tensor description size {desc_size}")
        code, dims = _parse_desc(data[pos:pos + desc_size])
        pos += desc_size
    except (struct.error, ValueError) as e:
        raise V1FormatError(f"{name}: not a Paddle v1 (save_vars) variable file: {e}") from None
    if code not in _DTYPES:
        raise V1FormatError(f"{name}: unsupported data type code {code}")
    if any(d < 0 for d in dims):
        raise V1FormatError(f"{name}: negative dimension in shape {dims}")
    dtype = np.dtype(np.uint16 if _DTYPES[code] == "bfloat16" else _DTYPES[code])
    count = int(np.prod(dims, dtype=np.int64)) if dims else 1
    expected = count * dtype.itemsize
    if len(data) - pos != expected:
        raise V1FormatError(f"{name}: shape {dims} ({np.dtype(dtype).name}) needs {expected} data bytes, "
                            f"file has {len(data) - pos} (truncated or corrupt)")
    arr = np.frombuffer(data, dtype=dtype.newbyteorder("<"), count=count, offset=pos).reshape(dims)
    if _DTYPES[code] == "bfloat16":
        return (arr.astype(np.uint32) << 16).view(np.float32)
    return arr.astype(dtype, copy=True)


def read_v1_var(path: str | os.PathLike) -> np.ndarray:
    """Read one v1 variable file written by Paddle's ``save_vars`` (or :func:`write_v1_var`)."""
    return parse_v1_var(Path(path).read_bytes(), str(path))


def encode_v1_var(array) -> bytes:
    """Serialize an array the way Paddle's ``save_vars`` does (LoD level 0)."""
    arr = np.asarray(array)
    arr = arr if arr.flags.c_contiguous else arr.copy(order="C")  # keeps 0-d arrays 0-d
    if arr.dtype not in _CODES:
        raise ClasflowError(f"cannot write dtype {arr.dtype} in v1 format")
    desc = b"\x08" + _put_varint(_CODES[arr.dtype])
    for d in arr.shape:
        desc += b"\x10" + _put_varint(int(d))
    head = struct.pack("<IQIi", 0, 0, 0, len(desc))
    return head + desc + arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()


def write_v1_var(path: str | os.PathLike, array) -> None:
    """Write ``array`` as one v1 variable file (for tests and fixtures)."""
    Path(path).write_bytes(encode_v1_var(array))


# ---------------------------------------------------------------- name maps

_BN_SUFFIX = {"weight": "scale", "bias": "offset", "_mean": "mean", "_variance": "variance"}


def _conv_bn_names(prefix: str, conv: str, bn: str) -> dict[str, list[str]]:
    names = {f"{prefix}.conv.weight": [f"{conv}_weights"]}
    for attr, suffix in _BN_SUFFIX.items():
        names[f"{prefix}.bn.{attr}"] = [f"{bn}_{suffix}"]
    return names


def resnet_vd_v1_block_names(depth: int, block_depth) -> list[str]:
    """v1 names of the blocks in order: ``res2a``.., with ``res4b<i>`` for stage 3 of 101/152/200."""
    names = []
    for s, n in enumerate(block_depth):
        for i in range(n):
            if depth in (101, 152, 200) and s == 2:
                names.append("res4a" if i == 0 else f"res4b{i}")
            else:
                names.append(f"res{s + 2}{chr(97 + i)}")
    return names


def resnet_vd_v1_names(model) -> dict[str, list[str]]:
    """2.x key -> candidate v1 names (first is canonical) for a :class:`ResNetVd`."""
    names: dict[str, list[str]] = {}
    for j in range(3):
        stem = _conv_bn_names(f"stem.{j}", f"conv1_{j + 1}", f"bnv1_{j + 1}")
        for key, cands in stem.items():
            if ".bn." in key:
                cands.append(cands[0].replace("bnv1_", "bn_conv1_"))
        names.update(stem)
    branches = {"conv0": "branch2a", "conv1": "branch2b", "conv2": "branch2c", "short": "branch1"}
    for n, res in enumerate(resnet_vd_v1_block_names(model.depth, model.block_depth)):
        for layer, branch in branches.items():
            names.update(_conv_bn_names(f"blocks.{n}.{layer}", f"{res}_{branch}", f"bn{res[3:]}_{branch}"))
    names["fc.weight"], names["fc.bias"] = ["fc_0.w_0"], ["fc_0.b_0"]
    return names


def mobilenet_v3_v1_names(model) -> dict[str, list[str]]:
    """2.x key -> candidate v1 names for a :class:`MobileNetV3`."""
    names = _conv_bn_names("conv", "conv1", "conv1_bn")
    for i in range(len(model.config)):
        v1 = f"conv{i + 2}"
        for layer, part in (("expand_conv", "expand"), ("bottleneck_conv", "depthwise"), ("linear_conv", "linear")):
            names.update(_conv_bn_names(f"blocks.{i}.{layer}", f"{v1}_{part}", f"{v1}_{part}_bn"))
        for k in (1, 2):
            names[f"blocks.{i}.mid_se.conv{k}.weight"] = [f"{v1}_se_{k}_weights"]
            names[f"blocks.{i}.mid_se.conv{k}.bias"] = [f"{v1}_se_{k}_offset"]
    names.update(_conv_bn_names("last_second_conv", "conv_last", "conv_last_bn"))
    names["last_conv.weight"] = ["last_1x1_conv_weights"]
    names["fc.weight"], names["fc.bias"] = ["fc_weights"], ["fc_offset"]
    return names


def v1_names_for(model) -> dict[str, list[str]]:
    """Name map for the model's own state-dict keys (keys it lacks, e.g. SE of plain blocks, drop out)."""
    from .mobilenet_v3 import MobileNetV3
    from .resnet_vd import ResNetVd

    if isinstance(model, ResNetVd):
        table = resnet_vd_v1_names(model)
    elif isinstance(model, MobileNetV3):
        table = mobilenet_v3_v1_names(model)
    else:
        raise ClasflowError(
            f"v1 (seed) weights can only be loaded into ResNet*_vd or MobileNetV3 models, not "
            f"{type(model).__name__}; for a distillation model load .teacher and .student separately")
    keys = model.state_dict().keys()
    unmapped = [k for k in keys if k not in table]
    if unmapped:
        raise ClasflowError(f"no v1 name known for keys {unmapped[:10]}")
    return {k: table[k] for k in keys}


# ---------------------------------------------------------------- archives and folders

def read_v1_files(path: str | os.PathLike) -> dict[str, bytes]:
    """Raw bytes of every variable file in a v1 ``.tar`` (read in memory, nothing extracted)
    or folder, by file name. Nested folders (``ResNet50_vd_pretrained/...``) are flattened."""
    path = Path(path)
    files: dict[str, bytes] = {}

    def add(name: str, data: bytes, where: str):
        if name in files:
            raise ClasflowError(f"{path}: variable {name!r} appears twice (second at {where})")
        files[name] = data

    if path.is_dir():
        for p in sorted(path.rglob("*")):
            if p.is_file() and not p.name.startswith("."):
                add(p.name, p.read_bytes(), str(p))
    else:
        try:
            with tarfile.open(path) as tar:
                for m in tar.getmembers():
                    base = m.name.rsplit("/", 1)[-1]
                    if not m.isfile() or not base or base.startswith(".") or "__MACOSX" in m.name:
                        continue
                    add(base, tar.extractfile(m).read(), m.name)
        except (tarfile.TarError, OSError, EOFError) as e:
            raise ClasflowError(f"{path}: cannot read v1 weights archive: {e}") from None
    if not files:
        raise ClasflowError(f"{path}: no variable files found (expected v1 weights such as conv1_weights)")
    return files


def convert_v1(model, path: str | os.PathLike) -> tuple[dict[str, np.ndarray], list[str]]:
    """Read v1 weights at ``path`` and rename them to ``model``'s 2.x keys.

    Returns (state dict, ignored non-parameter files). Missing variables and files that match
    no parameter raise :class:`ClasflowError` naming them.
    """
    table = v1_names_for(model)
    files = read_v1_files(path)
    state, missing, used = {}, [], set()
    for key, cands in table.items():
        found = next((c for c in cands if c in files), None)
        if found is None:
            missing.append(f"{cands[0]} (-> {key})")
            continue
        state[key] = parse_v1_var(files[found], f"{path}:{found}")
        used.add(found)
    ignored = sorted(n for n in files if n not in used and _NOT_PARAMS.search(n))
    unexpected = sorted(n for n in files if n not in used and n not in ignored)
    problems = []
    if missing:
        problems.append(f"missing {len(missing)} variable(s): {', '.join(missing[:20])}"
                        + (" ..." if len(missing) > 20 else ""))
    if unexpected:
        problems.append(f"{len(unexpected)} file(s) match no parameter of {type(model).__name__}: "
                        f"{', '.join(unexpected[:20])}" + (" ..." if len(unexpected) > 20 else ""))
    if problems:
        raise ClasflowError(f"{path}: v1 weights do not fit the model: " + "; ".join(problems))
    return state, ignored

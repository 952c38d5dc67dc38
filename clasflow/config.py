"""PaddleClas v1 YAML configs as typed, validated objects.

`load_config(path, overrides)` reads a YAML file, applies ``-o a.b.c=value`` overrides (values
typed by YAML), and validates everything before any work starts: unknown keys fail with their
dotted path and a "did you mean" suggestion, wrong types and bad values name the key and value,
and (with ``check_files``) a missing file_list or data_dir names the file. The result is a
`Config` (pydantic) that the rest of clasflow uses instead of raw dicts.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
import typing
import warnings
from pathlib import Path
from typing import Any, Literal, Optional, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from clasflow.errors import ConfigError
from clasflow.fsutil import file_digest, read_utf8


# Bounds past which a value cannot work (instead of failing deep inside Paddle or OpenCV): more
# classes than this exhaust memory in the classifier (and Paddle's dims are int32); more loader
# workers exhaust the machine; transform sizes go to OpenCV as int32.
MAX_CLASSES = 1_000_000
MAX_WORKERS = 1024
MAX_TRANSFORM_INT = 2**31 - 1

# What `Config.hash` leaves out: where things live and how to resume or log, not what is trained.
HASH_EXCLUDED = {"checkpoints", "print_interval", "model_save_dir", "pretrained_model"}
HASH_EXCLUDED_DATA = ("file_list", "data_dir")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=False)


class Architecture(_Section):
    name: str
    params: dict[str, Any] = Field(default_factory=dict)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_params(v: dict[str, Any], checks: dict[str, tuple[Any, str]]) -> dict[str, Any]:
    """Type-check the known keys of a free-form ``params`` mapping (unknown keys are the stage's to refuse)."""
    for key, (ok, what) in checks.items():
        if key in v and not ok(v[key]):
            raise ValueError(f"params.{key} must be {what}, got {v[key]!r}")
    return v


_LR_PARAMS = {
    "lr": (lambda x: _number(x) and x > 0, "a positive number"),
    "end_lr": (lambda x: _number(x) and x >= 0, "a number >= 0"),
    "power": (lambda x: _number(x) and x > 0, "a positive number"),
    "gamma": (lambda x: _number(x) and x > 0, "a positive number"),
    "decay_epochs": (lambda x: isinstance(x, list) and all(isinstance(e, int) and not isinstance(e, bool) and e >= 0 for e in x),
                     "a list of epoch numbers (ints >= 0)"),
    "warmup_epoch": (lambda x: isinstance(x, int) and not isinstance(x, bool) and x >= 0, "an int >= 0"),
    "epochs": (lambda x: isinstance(x, int) and not isinstance(x, bool) and x > 0, "a positive int"),
    "step_each_epoch": (lambda x: isinstance(x, int) and not isinstance(x, bool) and x > 0, "a positive int"),
}
_MOMENTUM_PARAMS = {
    "momentum": (lambda x: _number(x) and x >= 0, "a number >= 0"),
    "use_nesterov": (lambda x: isinstance(x, bool), "true or false"),
}


class LearningRate(_Section):
    function: Literal["Linear", "Cosine", "Piecewise", "CosineWarmup"] = "Linear"
    params: dict[str, Any] = Field(default_factory=dict)

    @field_validator("params")
    @classmethod
    def _lr_present(cls, v: dict[str, Any]) -> dict[str, Any]:
        lr = v.get("lr")
        if not _number(lr) or lr <= 0:
            raise ValueError(f"params.lr must be a positive number, got {lr!r}")
        return _check_params(v, _LR_PARAMS)


class Regularizer(_Section):
    function: Literal["L1", "L2"] = "L2"
    factor: float = Field(ge=0.0)


class Optimizer(_Section):
    function: Literal["Momentum"] = "Momentum"
    params: dict[str, Any] = Field(default_factory=lambda: {"momentum": 0.9})
    regularizer: Optional[Regularizer] = None

    @field_validator("params")
    @classmethod
    def _momentum_params(cls, v: dict[str, Any]) -> dict[str, Any]:
        return _check_params(v, _MOMENTUM_PARAMS)


class TransformSpec(_Section):
    """One PaddleClas operator, ``{OpName: {args}}`` in YAML."""

    name: str
    args: dict[str, Any] = Field(default_factory=dict)


class DataSection(_Section):
    batch_size: int = Field(gt=0)
    num_workers: int = Field(default=4, ge=0, le=MAX_WORKERS)
    file_list: str
    data_dir: str
    shuffle_seed: Optional[int] = 0
    transforms: list[TransformSpec]
    loader: Literal["auto", "dali", "opencv"] = "auto"
    skip_bad_images: bool = False

    @field_validator("transforms", mode="before")
    @classmethod
    def _ops_from_yaml(cls, v: Any) -> Any:
        if not isinstance(v, list):
            return v
        specs = []
        for i, item in enumerate(v):
            if isinstance(item, TransformSpec):
                specs.append(item)
            elif isinstance(item, dict) and len(item) == 1:
                (name, args), = item.items()
                if args is not None and not isinstance(args, dict):
                    raise ValueError(f"transforms[{i}].{name}: arguments must be a mapping, got {args!r}")
                specs.append(TransformSpec(name=str(name), args=args or {}))
            else:
                raise ValueError(f"transforms[{i}] must be a one-key mapping like {{RandFlipImage: {{flip_code: 1}}}}, got {item!r}")
        return specs


# PaddleClas's key `validate` shadows pydantic's deprecated BaseModel.validate; the field wins.
warnings.filterwarnings("ignore", message='Field name "validate"', category=UserWarning)


class Config(_Section):
    mode: Literal["train", "valid"] = "train"
    ARCHITECTURE: Architecture
    pretrained_model: Union[str, list[str]] = ""
    model_save_dir: str = "./output/"
    classes_num: int = Field(default=1000, gt=1, le=MAX_CLASSES)
    total_images: int = Field(default=1281167, gt=0)
    save_interval: int = Field(default=1, gt=0)
    validate: bool = True
    valid_interval: int = Field(default=1, gt=0)
    epochs: int = Field(default=120, gt=0)
    topk: int = Field(default=5, gt=0)
    image_shape: list[int] = Field(default_factory=lambda: [3, 224, 224])
    use_mix: bool = False
    ls_epsilon: float = Field(default=0.0, ge=0.0, lt=1.0)
    use_distillation: bool = False
    checkpoints: str = ""
    print_interval: int = Field(default=10, gt=0)
    use_amp: bool = False
    seed: int = 0
    LEARNING_RATE: LearningRate = Field(default_factory=lambda: LearningRate(params={"lr": 0.1}))
    OPTIMIZER: Optimizer = Field(default_factory=Optimizer)
    TRAIN: Optional[DataSection] = None
    VALID: Optional[DataSection] = None

    @field_validator("image_shape")
    @classmethod
    def _shape(cls, v: list[int]) -> list[int]:
        if len(v) != 3 or v[0] != 3 or min(v) <= 0:
            raise ValueError(f"must be [3, H, W] with positive sizes, got {v}")
        return v

    @model_validator(mode="after")
    def _distillation_consistent(self) -> "Config":
        if self.use_distillation and not (isinstance(self.pretrained_model, list) and len(self.pretrained_model) == 2):
            raise ValueError(
                "pretrained_model: with use_distillation it must be a list [teacher, student], "
                f"got {self.pretrained_model!r}"
            )
        return self

    def hash(self) -> str:
        """Short sha256 of what changes the training, stored with checkpoints.

        It covers the architecture, hyperparameters, schedule, transforms, batch sizes, epochs,
        seed, class count, AMP and the *contents* of the train and valid lists, but not where
        files live (``model_save_dir``, list and data folder paths, pretrained weights, which a
        resumed run replaces by the checkpoint's), how to resume, or how often to log: a
        checkpoint resumes in any folder, on any machine.
        """
        data = self.model_dump(exclude=HASH_EXCLUDED)
        for section in ("TRAIN", "VALID"):
            sec = getattr(self, section)
            if sec is not None:
                for key in HASH_EXCLUDED_DATA:
                    data[section].pop(key)
                data[section]["list_sha256"] = file_digest(sec.file_list) if Path(sec.file_list).is_file() else None
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]

    def legacy_hash(self) -> str:
        """The hash checkpoints written before the location-free `hash` carry (all but
        ``checkpoints`` and ``print_interval``), so they still resume in their own folder."""
        blob = json.dumps(self.model_dump(exclude={"checkpoints", "print_interval"}), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def to_raw(self) -> dict[str, Any]:
        """The config as PaddleClas YAML would hold it (transforms as ``{OpName: {args}}``)."""
        raw = self.model_dump()
        for section in ("TRAIN", "VALID"):
            if raw.get(section):
                raw[section]["transforms"] = [{t["name"]: t["args"] or None} for t in raw[section]["transforms"]]
        return raw

    def flat(self) -> dict[str, Any]:
        """The resolved config as dotted keys (for MLflow params)."""
        out: dict[str, Any] = {}
        _flatten(self.model_dump(), "", out)
        return out


def _flatten(value: Any, prefix: str, out: dict[str, Any]) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten(v, f"{prefix}.{k}" if prefix else str(k), out)
    else:
        out[prefix] = value


# ---------------------------------------------------------------- overrides


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"a.b.c=value"`` -> (["a", "b", "c"], value typed by YAML)."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {text!r} must look like key.sub=value (e.g. -o epochs=2)")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {text!r}: value is not valid YAML: {exc}") from None
    parts = [p.strip() for p in key.strip().split(".")]
    if not all(parts):
        raise ConfigError(f"override {text!r}: the key {key.strip()!r} has an empty part (write key.sub=value)")
    return parts, value


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    for text in overrides:
        path, value = parse_override(text)
        node: Any = raw
        for i, part in enumerate(path[:-1]):
            if isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
                continue
            if not isinstance(node, dict):
                raise ConfigError(f"override {text!r}: {'.'.join(path[:i])} is not a mapping")
            node = node.setdefault(part, {})
        last = path[-1]
        if isinstance(node, list) and last.isdigit() and int(last) < len(node):
            node[int(last)] = value
        elif isinstance(node, dict):
            node[last] = value
        else:
            raise ConfigError(f"override {text!r}: {'.'.join(path[:-1])} is not a mapping")
    return raw


# ---------------------------------------------------------------- validation


def _model_of(annotation: Any) -> Optional[type[BaseModel]]:
    """The BaseModel class inside Optional[...] / plain annotations, if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _model_of(arg)
        if found is not None:
            return found
    return None


def _unknown_keys(raw: Any, model: type[BaseModel], path: str, where: str) -> None:
    if not isinstance(raw, dict):
        return
    fields = model.model_fields
    for key, value in raw.items():
        dotted = f"{path}.{key}" if path else str(key)
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=3, cutoff=0.5)
            if not close:
                close = [f for f in fields if f.lower() == str(key).lower()]
            hint = f"; did you mean {' or '.join(repr(path + '.' + c if path else c) for c in close)}?" if close else (
                f"; known keys here: {', '.join(sorted(fields))}"
            )
            raise ConfigError(f"{where}: unknown key {dotted!r}{hint}")
        sub = _model_of(fields[key].annotation)
        if sub is not None and sub is not TransformSpec:
            _unknown_keys(value, sub, dotted, where)


def _format_validation_error(exc: ValidationError, raw: dict[str, Any], where: str) -> ConfigError:
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        msg = err["msg"]
        if err["type"] in ("missing",):
            lines.append(f"{loc}: required key is missing")
        else:
            lines.append(f"{loc}: {msg} (got {err.get('input')!r})" if loc else msg)
    return ConfigError(f"{where}: invalid config:\n  " + "\n  ".join(lines))


def _check_transforms(cfg: Config, where: str) -> None:
    from clasflow.data import transforms as ops  # the loaders own the operator registry

    for section_name in ("TRAIN", "VALID"):
        section = getattr(cfg, section_name)
        if section is None:
            continue
        for i, spec in enumerate(section.transforms):
            key = f"{section_name}.transforms[{i}].{spec.name}"
            if spec.name not in ops.OPS:
                close = difflib.get_close_matches(spec.name, list(ops.OPS), n=3)
                hint = f"; did you mean {' or '.join(close)}?" if close else f"; known: {', '.join(sorted(ops.OPS))}"
                raise ConfigError(f"{where}: {key}: unknown transform {spec.name!r}{hint}")
            for arg, value in spec.args.items():
                values = value if isinstance(value, (list, tuple)) else [value]
                if any(isinstance(v, (int, float)) and not isinstance(v, bool) and abs(v) > MAX_TRANSFORM_INT for v in values):
                    raise ConfigError(f"{where}: {key}: {arg}={value!r} is out of range (at most {MAX_TRANSFORM_INT})")
            try:
                ops.OPS[spec.name](**spec.args)
            except (TypeError, OverflowError) as exc:
                raise ConfigError(f"{where}: {key}: bad arguments {spec.args!r}: {exc}") from None
            except ValueError as exc:
                raise ConfigError(f"{where}: {key}: {exc}") from None
            if section.loader == "dali" and spec.name not in ops.DALI_SUPPORTED:
                raise ConfigError(
                    f"{where}: {key}: transform {spec.name!r} has no DALI mapping; "
                    f"set {section_name}.loader=opencv to use it"
                )
        if section.loader == "dali":  # arguments DALI cannot express (e.g. interpolation: lanczos)
            from clasflow.data.dali_pipeline import check_dali_transforms

            try:
                check_dali_transforms(ops.build_ops(section.transforms))
            except ConfigError as exc:
                raise ConfigError(f"{where}: {section_name}.transforms: {exc}; set {section_name}.loader=opencv to use it") from None


def check_files(cfg: Config, where: str = "config") -> None:
    """Fail with the key and path if a data section's list or folder does not exist."""
    for section_name in ("TRAIN", "VALID"):
        section = getattr(cfg, section_name)
        if section is None:
            continue
        if not Path(section.file_list).is_file():
            raise ConfigError(
                f"{where}: {section_name}.file_list: file {section.file_list!r} not found "
                f"(run `clasflow dataset flowers102 --root DIR` first, or fix the path)"
            )
        if not Path(section.data_dir).is_dir():
            raise ConfigError(f"{where}: {section_name}.data_dir: folder {section.data_dir!r} not found")


def config_from_dict(raw: dict[str, Any], where: str = "config", *, check_paths: bool = False) -> Config:
    """Validate a raw mapping (already overridden) into a `Config`."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: the top level must be a mapping of keys, got {type(raw).__name__}")
    _unknown_keys(raw, Config, "", where)
    try:
        cfg = Config.model_validate(raw)
    except ValidationError as exc:
        raise _format_validation_error(exc, raw, where) from None
    _check_transforms(cfg, where)
    if check_paths:
        check_files(cfg, where)
    return cfg


def load_raw(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if path.exists() and not path.is_file():
        raise ConfigError(f"config file {str(path)!r} is not a file")
    text = read_utf8(path, ConfigError, "config file")
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    except RecursionError:
        raise ConfigError(f"{path}: not valid YAML: nested too deeply") from None
    if raw is None:
        raise ConfigError(f"{path}: the file is empty")
    return raw


def load_config(path: str | Path, overrides: list[str] | None = None, *, check_paths: bool = False) -> Config:
    """Read, override and validate a PaddleClas YAML config."""
    raw = apply_overrides(load_raw(path), list(overrides or []))
    return config_from_dict(raw, str(path), check_paths=check_paths)

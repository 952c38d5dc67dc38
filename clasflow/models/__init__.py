"""Model registry: PaddleClas 2.x-compatible ResNet_vd, MobileNetV3 and the distillation pair.

>>> model = build_model("ResNet50_vd", class_num=102, lr_mult_list=[0.1, 0.1, 0.2, 0.2, 0.3])
>>> report = load_pretrained(model, "pretrained/ResNet50_vd_pretrained")  # doctest: +SKIP
"""

from __future__ import annotations

import difflib
import inspect

from clasflow.errors import ClasflowError

from . import distill, mobilenet_v3, resnet_vd
from .pretrained import LoadReport, load_pretrained

_REGISTRY = {**resnet_vd.MODELS, **mobilenet_v3.MODELS, **distill.MODELS}
MODEL_NAMES: tuple[str, ...] = tuple(_REGISTRY)

__all__ = ["MODEL_NAMES", "LoadReport", "build_model", "load_pretrained", "model_params"]


def _factory(name: str):
    if name not in _REGISTRY:
        close = difflib.get_close_matches(str(name), MODEL_NAMES, n=5, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else f"; known models: {', '.join(MODEL_NAMES)}"
        raise ClasflowError(f"unknown model {name!r}{hint}")
    return _REGISTRY[name]


def model_params(name: str) -> dict[str, object]:
    """The keyword parameters ``name`` accepts, with their defaults."""
    return {p.name: p.default for p in inspect.signature(_factory(name)).parameters.values()}


def build_model(name: str, class_num: int = 1000, **params):
    """Build the registered model ``name`` with ``class_num`` outputs.

    Extra ``params`` (e.g. ``lr_mult_list`` for ResNet_vd, ``dropout_prob`` for MobileNetV3)
    must be ones the model accepts; anything else raises :class:`ClasflowError`.
    """
    factory = _factory(name)
    accepted = model_params(name)
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise ClasflowError(f"model {name} does not accept {', '.join(unknown)}; "
                            f"accepted parameters: {', '.join(accepted)}")
    if isinstance(class_num, bool) or not isinstance(class_num, int) or class_num < 1:
        raise ClasflowError(f"class_num must be a positive integer, got {class_num!r}")
    return factory(class_num=class_num, **params)

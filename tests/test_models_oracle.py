"""Oracle: our models against PaddleClas 2.6's own implementation (run by `make test-oracle`).

Only PaddleClas's two backbone modules are loaded (its package ``__init__`` files pull in
faiss, visualdl, ... which these checks do not need): the parent packages are registered as
empty namespace modules pointing at the installed folders, so the submodules load from the
real files without running those ``__init__`` files.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from pathlib import Path

import numpy as np
import paddle
import pytest

from clasflow.models import build_model

pytestmark = pytest.mark.oracle

_STUB_PACKAGES = ("paddleclas", "paddleclas.ppcls", "paddleclas.ppcls.arch",
                  "paddleclas.ppcls.arch.backbone", "paddleclas.ppcls.arch.backbone.legendary_models",
                  "paddleclas.ppcls.utils")
TOL = 1e-5


def _paddleclas_module(name: str):
    spec = importlib.util.find_spec("paddleclas")
    if spec is None or not spec.submodule_search_locations:
        pytest.fail("paddleclas is not importable: run `make test-oracle`, which installs the "
                    "paddleclas 2.6.0 wheel into a separate location and runs these tests with it")
    root = Path(list(spec.submodule_search_locations)[0])
    saved = {k: sys.modules.get(k) for k in _STUB_PACKAGES}
    try:
        for pkg in _STUB_PACKAGES:
            if pkg in sys.modules and getattr(sys.modules[pkg], "__file__", None):
                continue  # the real package is already imported: use it
            mod = types.ModuleType(pkg)
            mod.__path__ = [str(root.joinpath(*pkg.split(".")[1:]))]
            mod.__package__ = pkg
            sys.modules[pkg] = mod
        module = importlib.import_module(f"paddleclas.ppcls.arch.backbone.legendary_models.{name}")
        logger = importlib.import_module("paddleclas.ppcls.utils.logger")
        if getattr(logger, "_logger", None) is None:
            logger.init_logger()  # PaddleClas logs through a module global set up by its engine
        return module
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v


def _copy_and_compare(theirs, ours, shape) -> float:
    their_sd, our_sd = theirs.state_dict(), ours.state_dict()
    assert [(k, list(v.shape)) for k, v in their_sd.items()] == [(k, list(v.shape)) for k, v in our_sd.items()]
    rng = np.random.default_rng(0)
    # Our default initialisation keeps activations O(1) through the depth; BN affine and
    # running statistics are perturbed so they matter too. The same values go into both.
    perturb = {"bn.weight": (1.0, 0.2), "bn.bias": (0.0, 0.2), "bn._mean": (0.0, 0.2), "bn._variance": (1.0, 0.2)}
    for k, t in our_sd.items():
        value = t.numpy()
        for suffix, (centre, spread) in perturb.items():
            if k.endswith(suffix):
                value = centre + rng.uniform(-spread, spread, t.shape).astype("float32")
        t.set_value(value)
        their_sd[k].set_value(value)
    theirs.eval()
    ours.eval()
    x = paddle.to_tensor(rng.standard_normal(shape).astype("float32"))
    with paddle.no_grad():
        ref, got = theirs(x).numpy(), ours(x).numpy()
    assert ref.std() > 1e-3, "degenerate logits: the comparison would prove nothing"
    return float(np.abs(ref - got).max())


# 72x72 gives odd feature maps (9 -> 5), exercising the vd shortcut's SAME/ceil pooling.
@pytest.mark.parametrize("shape", [(1, 3, 64, 64), (2, 3, 72, 72)], ids=["64", "72"])
@pytest.mark.parametrize("module,name", [("resnet", "ResNet50_vd"), ("mobilenet_v3", "MobileNetV3_large_x1_0")])
def test_matches_paddleclas(module, name, shape):
    paddle.seed(0)
    theirs = getattr(_paddleclas_module(module), name)(class_num=102)
    ours = build_model(name, class_num=102)
    diff = _copy_and_compare(theirs, ours, shape)
    print(f"{name} {list(shape)}: max abs logit difference vs PaddleClas 2.6 = {diff:.3e}")
    assert diff < TOL, f"{name}: max abs difference {diff} >= {TOL}"


def test_lr_mult_matches_paddleclas():
    lr = [0.2, 0.2, 0.4, 0.4, 0.6]
    theirs = getattr(_paddleclas_module("resnet"), "ResNet50_vd")(class_num=102, lr_mult_list=lr)
    ours = build_model("ResNet50_vd", class_num=102, lr_mult_list=lr)
    their_lr = [p.optimize_attr["learning_rate"] for p in theirs.parameters()]
    our_lr = [p.optimize_attr["learning_rate"] for p in ours.parameters()]
    assert our_lr == their_lr


def test_train_mode_batchnorm_matches_paddleclas():
    """Train-mode forward (batch statistics) and the running-stat update agree too."""
    theirs = getattr(_paddleclas_module("resnet"), "ResNet50_vd")(class_num=102)
    ours = build_model("ResNet50_vd", class_num=102)
    _copy_and_compare(theirs, ours, (1, 3, 64, 64))
    theirs.train()
    ours.train()
    x = paddle.to_tensor(np.random.default_rng(1).standard_normal((2, 3, 64, 64)).astype("float32"))
    diff = float(np.abs(theirs(x).numpy() - ours(x).numpy()).max())
    stats = max(float(np.abs(a.numpy() - b.numpy()).max())
                for (k, a), b in zip(theirs.state_dict().items(), ours.state_dict().values()) if "_mean" in k)
    print(f"ResNet50_vd train mode: logits max abs diff {diff:.3e}, running means {stats:.3e}")
    assert diff < TOL and stats < TOL

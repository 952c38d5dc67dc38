"""The demo zoo: pretrained weights made offline by clasflow itself, for the demo profile.

The quick start teaches that ImageNet weights beat training from scratch and that distillation
lifts the small model. Offline there are no ImageNet weights, so the demo zoo plays their part:
ResNet50_vd and MobileNetV3_large_x1_0 are trained from scratch by :func:`clasflow.engine.trainer.train`
on a *source* task generated here (the 26 letters of ``fixture:glyphs?offset=10``), and the
ResNet50_vd weights trained on for more epochs stand in for the better "SSLD" weights. The demo's
*target* task (the digits, ``fixture:glyphs``) shares strokes and curves with the letters, not
classes, so weights that learned the letters transfer, as ImageNet weights transfer to flowers.

Each pretraining starts from weights whose residual branches end in a zero BN scale (the
"zero-init residual" trick of Goyal et al., 2017, *Accurate, Large Minibatch SGD*): every block
then starts as the identity, and the deep networks learn in the ~100 steps the demo can afford,
where PaddleClas's default initialisation diverges (measured: ResNet50_vd, one epoch of 1820
letters at batch 16, source valid Top1 0.09 with it, 0.93 with the zero-init). The demo's own
from-scratch baseline keeps PaddleClas's initialisation, as the quick start's ResNet50_vd.yaml does.

The zoo is built once per machine into ``<cache>/demo-zoo/<recipe key>/`` (``$CLASFLOW_CACHE_DIR``,
else ``$XDG_CACHE_HOME/clasflow``, else ``~/.cache/clasflow``) as a zoo mirror marked ``demo`` in
its ``ZOO_MIRROR.json``; the key is the sha256 of :data:`RECIPE`, so a changed recipe builds anew.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any, Iterator

from clasflow.errors import ClasflowError
from clasflow.fsutil import replace_dir, write_text_atomic

log = logging.getLogger(__name__)

CACHE_ENV = "CLASFLOW_CACHE_DIR"
# Bump "version" when the generator or the training code changes what the recipe makes.
RECIPE: dict[str, Any] = {
    "version": 2,
    "source": {"source": "glyphs", "offset": 10, "classes": 26, "per_class": 60, "size": 30, "seed": 1},
    "image_size": 24,
    "batch_size": 16,  # small batches: more steps in the same time (2 cores train ~30 images/s either way)
    "crop_scale": [0.7, 1.0],
    # arch -> the quick-start config it trains with, epochs, base lr, the weights it starts from ("": a
    # zero-init residual start, see zero_residual_init). As on ImageNet (MobileNetV3 75.3 %, ResNet50_vd
    # 79.1 %, ResNet50_vd_ssld 82.4 %), the student's weights are the weakest, the teacher's the best:
    # distillation can only lift a student that its teacher outdoes. ~50 s, ~85 s, ~45 s on 2 cores.
    "models": {
        "ResNet50_vd": {"config": "ResNet50_vd", "epochs": 1, "lr": 0.01, "init": ""},
        "ResNet50_vd_ssld": {"config": "ResNet50_vd", "epochs": 2, "lr": 0.005, "init": "ResNet50_vd"},
        "MobileNetV3_large_x1_0": {"config": "MobileNetV3_large_x1_0_finetune", "epochs": 2, "lr": 0.02, "init": ""},
    },
}
NOTE = ("DEMO WEIGHTS, not ImageNet: pretrained by clasflow on a generated source task ({classes} letter glyph "
        "classes, {images} images, {size} px); source valid Top1 {top1}. For the offline demo profile only.")


def recipe_key(recipe: dict[str, Any] = RECIPE) -> str:
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]


def cache_dir() -> Path:
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "clasflow"


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """One builder per machine at a time (pipeline steps may ask for the zoo together)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def ensure_demo_zoo(recipe: dict[str, Any] = RECIPE) -> Path:
    """The demo zoo mirror of `recipe`, built now unless this machine already has it."""
    from clasflow.zoo import MIRROR_MANIFEST

    key = recipe_key(recipe)
    final = cache_dir() / "demo-zoo" / key
    with _locked(final.with_name(f"{key}.lock")):
        if (final / MIRROR_MANIFEST).is_file():
            log.info("demo zoo %s: cached at %s", key, final)
            return final
        log.warning("demo zoo %s not on this machine: pretraining it now on a generated source task "
                    "(a few minutes, once; cached at %s)", key, final)
        tmp = final.with_name(f".{key}.tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        build_demo_zoo(tmp, recipe)
        replace_dir(tmp, final)
    return final


def _pretrain_config(arch: str, spec: dict[str, Any], recipe: dict[str, Any], source: Path, out: Path, init: str):
    from clasflow.config import config_from_dict, load_raw
    from clasflow.steps import config_dir, set_image_size

    raw = load_raw(config_dir() / f"{spec['config']}.yaml")
    meta = json.loads((source / "dataset.json").read_text())
    raw.update(classes_num=meta["classes"], model_save_dir=str(out), epochs=spec["epochs"], pretrained_model=init,
               save_interval=spec["epochs"], valid_interval=spec["epochs"], print_interval=10, seed=0,
               total_images=meta["counts"]["train_extra_list.txt"])
    raw["LEARNING_RATE"] = {"function": "Cosine", "params": {"lr": spec["lr"]}}
    for section, file_list in (("TRAIN", "train_extra_list.txt"), ("VALID", "val_list.txt")):
        raw[section].update(file_list=str(source / file_list), data_dir=str(source), batch_size=recipe["batch_size"],
                            num_workers=0)
    set_image_size(raw, recipe["image_size"])
    # glyphs are not mirror-symmetric, and a crop must keep most of one
    raw["TRAIN"]["transforms"] = [t for t in raw["TRAIN"]["transforms"] if "RandFlipImage" not in t]
    for item in raw["TRAIN"]["transforms"]:
        if "RandCropImage" in item:
            item["RandCropImage"]["scale"] = recipe["crop_scale"]
    return config_from_dict(raw, f"demo zoo {arch} ({spec['config']}.yaml)", check_paths=True)


def zero_residual_init(arch: str, classes: int, prefix: Path) -> str:
    """Write fresh `arch` weights whose residual branches end in a zero BN scale; return the prefix."""
    import paddle

    from clasflow.models import build_model
    from clasflow.models.mobilenet_v3 import InvertedResidual
    from clasflow.models.resnet_vd import BasicBlock, BottleneckBlock

    model = build_model(arch, class_num=classes)
    zeroed = 0
    for layer in model.sublayers():
        last = {BottleneckBlock: "conv2", BasicBlock: "conv1"}.get(type(layer))
        if isinstance(layer, InvertedResidual) and layer.residual:
            last = "linear_conv"
        if last:
            bn = getattr(layer, last).bn
            bn.weight.set_value(paddle.zeros_like(bn.weight))
            zeroed += 1
    if not zeroed:
        raise ClasflowError(f"demo zoo: {arch} has no residual block to zero-initialise")
    prefix.parent.mkdir(parents=True, exist_ok=True)
    paddle.save(model.state_dict(), f"{prefix}.pdparams")
    return str(prefix)


def build_demo_zoo(out: str | os.PathLike, recipe: dict[str, Any] = RECIPE) -> Path:
    """Generate the source task, pretrain every model of `recipe` on it, write a zoo mirror to `out`."""
    import paddle

    from clasflow.data.fixture import build_fixture
    from clasflow.data.flowers102 import prepare_flowers102
    from clasflow.engine.trainer import train
    from clasflow.fsutil import file_digest
    from clasflow.models import build_model, load_pretrained
    from clasflow.zoo import MIRROR_MANIFEST, lookup

    out = Path(out)
    source = out / "source"
    build_fixture(source, **recipe["source"])
    report = prepare_flowers102(source, download=False, strict=True)
    write_text_atomic(source / "dataset.json", json.dumps({"classes": report.classes, "counts": report.counts}))
    files, results, trained = {}, {}, {}
    for arch, spec in recipe["models"].items():
        start = time.time()
        init = trained[spec["init"]] if spec["init"] else zero_residual_init(
            arch, report.classes, out / "train" / "init" / arch)
        cfg = _pretrain_config(arch, spec, recipe, source, out / "train" / arch, init)
        result = train(cfg, run_name=f"demo-zoo-{arch}", track=False)
        trained[arch] = str(Path(result.arch_dir) / str(cfg.epochs - 1) / "ppcls")
        results[arch] = {"source_valid_top1": round(result.final.get("valid_top1", 0.0), 4), "epochs": cfg.epochs,
                         "seconds": round(time.time() - start, 1)}
        log.warning("demo zoo: %s pretrained on the source task in %.0f s, source valid Top1 %.4f",
                    arch, results[arch]["seconds"], results[arch]["source_valid_top1"])
        # shaped like the official weights (a 1000-class head, left at its init: fine-tuning replaces it)
        model = build_model(cfg.ARCHITECTURE.name, class_num=1000)
        load_pretrained(model, trained[arch])
        state = model.state_dict()
        filename = lookup(arch).v2_pdparams.rsplit("/", 1)[1]
        paddle.save(state, str(out / f".{filename}.tmp"))
        os.replace(out / f".{filename}.tmp", out / filename)
        files[filename] = file_digest(out / filename)
    shutil.rmtree(out / "train")
    shutil.rmtree(source / "jpg")
    top1 = ", ".join(f"{a} {r['source_valid_top1']:.2f}" for a, r in results.items())
    src = recipe["source"]
    manifest = {
        "demo": True,
        "note": NOTE.format(classes=src["classes"], images=src["classes"] * src["per_class"], size=recipe["image_size"], top1=top1),
        "recipe": recipe, "recipe_key": recipe_key(recipe), "pretraining": results, "files": files,
    }
    write_text_atomic(out / MIRROR_MANIFEST, json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return out

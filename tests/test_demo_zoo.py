"""The demo zoo: pretrained by clasflow on a generated source task, marked demo, cached per machine by recipe."""

import copy
import json

import pytest

from clasflow import demo_zoo
from clasflow.zoo import LOCK_FILE, MIRROR_MANIFEST, QUICKSTART_ARCHS, download_weights, lookup

TINY = copy.deepcopy(demo_zoo.RECIPE)
TINY["source"].update(classes=3, per_class=5, size=20)
TINY.update(image_size=16, batch_size=4)
for spec in TINY["models"].values():
    spec["epochs"] = 1


def test_the_demo_source_task_has_other_classes_than_the_demo_target():
    from pipelines.flowers_quickstart import DEMO_ARGUMENTS
    from clasflow.data.fixture import GLYPHS
    from clasflow.steps import _fixture_spec

    target = _fixture_spec(DEMO_ARGUMENTS["dataset_source"])
    source = demo_zoo.RECIPE["source"]
    assert target["source"] == source["source"] == "glyphs"
    target_chars = set(GLYPHS[target["offset"]:target["offset"] + target["classes"]])
    source_chars = set(GLYPHS[source["offset"]:source["offset"] + source["classes"]])
    assert target_chars == set("0123456789") and source_chars == set("ABCDEFGHIJKLMNOPQRSTUVWXYZ")


def test_demo_zoo_is_pretrained_marked_cached_and_keyed_by_its_recipe(tmp_path, monkeypatch):
    import numpy as np
    import paddle

    from clasflow.models import build_model, load_pretrained

    monkeypatch.setenv(demo_zoo.CACHE_ENV, str(tmp_path / "cache"))
    zoo = demo_zoo.ensure_demo_zoo(TINY)
    assert zoo == tmp_path / "cache" / "demo-zoo" / demo_zoo.recipe_key(TINY)
    manifest = json.loads((zoo / MIRROR_MANIFEST).read_text())
    assert manifest["demo"] is True and manifest["note"].startswith("DEMO WEIGHTS, not ImageNet")
    assert manifest["recipe"] == TINY and manifest["recipe_key"] == demo_zoo.recipe_key(TINY)
    names = {lookup(a).v2_pdparams.rsplit("/", 1)[1]: a for a in QUICKSTART_ARCHS}
    assert set(manifest["files"]) == set(names)
    for arch in QUICKSTART_ARCHS:
        assert manifest["pretraining"][arch]["epochs"] == 1
        assert 0.0 <= manifest["pretraining"][arch]["source_valid_top1"] <= 1.0
    assert sorted(p.name for p in zoo.iterdir()) == sorted([MIRROR_MANIFEST, "source", *names])  # no checkpoints left

    # trained, shaped like the official weights; the ssld stand-in continues from ResNet50_vd
    r50 = paddle.load(str(zoo / "ResNet50_vd_pretrained.pdparams"))
    ssld = paddle.load(str(zoo / "ResNet50_vd_ssld_pretrained.pdparams"))
    paddle.seed(0)
    init = build_model("ResNet50_vd", class_num=1000).state_dict()
    assert r50["fc.weight"].shape == [2048, 1000]
    conv = "stem.0.conv.weight"
    assert not np.allclose(r50[conv].numpy(), init[conv].numpy())
    assert not np.allclose(r50[conv].numpy(), ssld[conv].numpy())

    # the pipeline's download marks them demo in the lock file, and they load under a new head
    result = download_weights("MobileNetV3_large_x1_0", tmp_path / "p", url_base=f"file://{zoo}")
    lock = json.loads((tmp_path / "p" / LOCK_FILE).read_text())["MobileNetV3_large_x1_0_pretrained.pdparams"]
    assert result.demo and lock["demo"] is True and "DEMO WEIGHTS" in lock["note"]
    report = load_pretrained(build_model("MobileNetV3_large_x1_0", class_num=10), str(tmp_path / "p" / "MobileNetV3_large_x1_0_pretrained"))
    assert report.skipped_head and len(report.loaded) > 100

    # built once: the same recipe is served from the cache
    monkeypatch.setattr(demo_zoo, "build_demo_zoo", lambda *a, **k: pytest.fail("the cached demo zoo was rebuilt"))
    assert demo_zoo.ensure_demo_zoo(TINY) == zoo

    # a changed recipe is another key, built anew
    built = []

    def fake_build(out, recipe):
        built.append(recipe)
        out.mkdir(parents=True)
        (out / MIRROR_MANIFEST).write_text("{}")

    monkeypatch.setattr(demo_zoo, "build_demo_zoo", fake_build)
    changed = copy.deepcopy(TINY)
    changed["models"]["ResNet50_vd"]["epochs"] = 2
    other = demo_zoo.ensure_demo_zoo(changed)
    assert built == [changed] and other != zoo and (zoo / MIRROR_MANIFEST).is_file()


def test_pretraining_starts_from_zero_init_residual_branches(tmp_path):
    """Every residual branch ends in a zero BN scale (each block starts as the identity); the
    rest keeps the model's own initialisation (BN scale 1)."""
    import paddle

    from clasflow.models import build_model

    for arch, last, other in (("ResNet50_vd", "conv2", "conv0"), ("MobileNetV3_large_x1_0", "linear_conv", "expand_conv")):
        prefix = demo_zoo.zero_residual_init(arch, 26, tmp_path / arch / "init")
        model = build_model(arch, class_num=26)
        model.set_state_dict(paddle.load(f"{prefix}.pdparams"))
        zeroed = [bool((getattr(b, last).bn.weight.numpy() == 0).all()) for b in model.blocks]
        assert zeroed == [getattr(b, "residual", True) for b in model.blocks], arch
        assert all((getattr(b, other).bn.weight.numpy() == 1).all() for b in model.blocks), arch
        assert any(zeroed)
    assert not all(zeroed)  # MobileNetV3: the blocks without a shortcut keep their scale

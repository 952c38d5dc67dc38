"""Config loading: the six quick-start configs, overrides, and every validation error path."""

import copy
from pathlib import Path

import pytest
import yaml

from clasflow.config import Config, DataSection, check_files, config_from_dict, load_config, load_raw, parse_override
from clasflow.errors import ConfigError

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "quick_start"

# (lr, l2 factor, pretrained, lr_mult_list, RandomErasing, distill) per FACTS.md
EXPECTED = {
    "ResNet50_vd.yaml": (0.0125, 1e-5, "", None, False, False),
    "ResNet50_vd_finetune.yaml": (0.00375, 1e-6, "./pretrained/ResNet50_vd_pretrained", None, False, False),
    "ResNet50_vd_ssld_finetune.yaml": (0.00375, 1e-6, "./pretrained/ResNet50_vd_ssld_pretrained", [0.2, 0.2, 0.4, 0.4, 0.6], False, False),
    "ResNet50_vd_ssld_random_erasing_finetune.yaml": (0.00375, 1e-6, "./pretrained/ResNet50_vd_ssld_pretrained", [0.2, 0.2, 0.4, 0.4, 0.6], True, False),
    "MobileNetV3_large_x1_0_finetune.yaml": (0.00375, 1e-6, "./pretrained/MobileNetV3_large_x1_0_pretrained", None, False, False),
    "R50_vd_distill_MV3_large_x1_0.yaml": (0.0125, 7e-5, ["./pretrained/flowers102_R50_vd_final/ppcls", "./pretrained/MobileNetV3_large_x1_0_pretrained"], None, False, True),
}


def test_exactly_the_six_quick_start_configs_exist():
    assert sorted(p.name for p in CONFIGS.glob("*.yaml")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_quick_start_config_matches_facts(name):
    lr, l2, pretrained, lr_mult, erasing, distill = EXPECTED[name]
    cfg = load_config(CONFIGS / name)
    assert isinstance(cfg, Config) and isinstance(cfg.TRAIN, DataSection)
    assert cfg.LEARNING_RATE.function == "Cosine" and cfg.LEARNING_RATE.params == {"lr": lr}
    assert cfg.OPTIMIZER.function == "Momentum" and cfg.OPTIMIZER.params == {"momentum": 0.9}
    assert cfg.OPTIMIZER.regularizer.function == "L2" and cfg.OPTIMIZER.regularizer.factor == pytest.approx(l2)
    assert cfg.pretrained_model == pretrained
    assert cfg.ARCHITECTURE.params.get("lr_mult_list") == lr_mult
    assert (cfg.classes_num, cfg.epochs, cfg.topk, cfg.image_shape) == (102, 20, 5, [3, 224, 224])
    assert (cfg.TRAIN.batch_size, cfg.VALID.batch_size, cfg.ls_epsilon, cfg.use_mix) == (32, 20, 0.0, False)
    train_ops = [t.name for t in cfg.TRAIN.transforms]
    assert train_ops[:4] == ["DecodeImage", "RandCropImage", "RandFlipImage", "NormalizeImage"]
    assert ("RandomErasing" in train_ops) == erasing
    assert [t.name for t in cfg.VALID.transforms] == ["DecodeImage", "ResizeImage", "CropImage", "NormalizeImage", "ToCHWImage"]
    assert cfg.VALID.transforms[1].args == {"resize_short": 256} and cfg.VALID.transforms[2].args == {"size": 224}
    assert cfg.use_distillation == distill
    assert cfg.total_images == (7169 if distill else 1020)
    assert cfg.TRAIN.file_list.endswith("train_extra_list.txt" if distill else "train_list.txt")


def test_overrides_are_typed_by_yaml_and_nested():
    cfg = load_config(
        CONFIGS / "ResNet50_vd_finetune.yaml",
        ["epochs=2", "TRAIN.batch_size=4", "use_mix=True", "LEARNING_RATE.params.lr=0.5",
         "image_shape=[3, 32, 32]", "ARCHITECTURE.params.lr_mult_list=[1, 1, 1, 1, 1]", "pretrained_model=x/y"],
    )
    assert (cfg.epochs, cfg.TRAIN.batch_size, cfg.use_mix, cfg.image_shape) == (2, 4, True, [3, 32, 32])
    assert cfg.LEARNING_RATE.params["lr"] == 0.5
    assert cfg.ARCHITECTURE.params["lr_mult_list"] == [1, 1, 1, 1, 1]
    assert cfg.pretrained_model == "x/y"


def test_override_into_a_transform_argument():
    cfg = load_config(CONFIGS / "ResNet50_vd.yaml", ["TRAIN.transforms.1.RandCropImage.size=32"])
    assert cfg.TRAIN.transforms[1].args["size"] == 32


@pytest.mark.parametrize("bad", ["epochs", "=3", "a.b=[unclosed"])
def test_malformed_override(bad):
    with pytest.raises(ConfigError, match="override"):
        parse_override(bad)


def _raw():
    return load_raw(CONFIGS / "ResNet50_vd_ssld_random_erasing_finetune.yaml")


def _error(mutate) -> str:
    raw = copy.deepcopy(_raw())
    mutate(raw)
    with pytest.raises(ConfigError) as info:
        config_from_dict(raw, "cfg.yaml")
    return str(info.value)


def test_unknown_top_level_key_suggests():
    msg = _error(lambda r: r.update(epoch=3))
    assert "cfg.yaml: unknown key 'epoch'; did you mean 'epochs'" in msg


def test_unknown_nested_key_has_dotted_path_and_suggestion():
    msg = _error(lambda r: r["TRAIN"].update(bacth_size=3))
    assert "unknown key 'TRAIN.bacth_size'; did you mean 'TRAIN.batch_size'" in msg
    msg = _error(lambda r: r["OPTIMIZER"]["regularizer"].update(factr=1))
    assert "'OPTIMIZER.regularizer.factr'; did you mean 'OPTIMIZER.regularizer.factor'" in msg


def test_wrong_types_name_key_and_value():
    assert "epochs" in (msg := _error(lambda r: r.update(epochs="twenty"))) and "'twenty'" in msg
    assert "TRAIN.batch_size" in (msg := _error(lambda r: r["TRAIN"].update(batch_size=0))) and "0" in msg
    assert "validate" in _error(lambda r: r.update(validate="maybe"))
    assert "image_shape" in _error(lambda r: r.update(image_shape=[224, 224]))
    assert "LEARNING_RATE.function" in (msg := _error(lambda r: r["LEARNING_RATE"].update(function="Cosin"))) and "'Cosin'" in msg
    assert "LEARNING_RATE.params" in _error(lambda r: r["LEARNING_RATE"]["params"].update(lr=-1))


def test_missing_required_key():
    msg = _error(lambda r: r["TRAIN"].pop("file_list"))
    assert "TRAIN.file_list: required key is missing" in msg


def test_bad_transform_name_and_arguments():
    msg = _error(lambda r: r["TRAIN"]["transforms"].__setitem__(2, {"RandFlipImg": {"flip_code": 1}}))
    assert "TRAIN.transforms[2].RandFlipImg: unknown transform 'RandFlipImg'; did you mean RandFlipImage" in msg
    msg = _error(lambda r: r["TRAIN"]["transforms"][1].__setitem__("RandCropImage", {"sise": 224}))
    assert "TRAIN.transforms[1].RandCropImage: bad arguments {'sise': 224}" in msg
    msg = _error(lambda r: r["TRAIN"]["transforms"].__setitem__(0, "DecodeImage"))
    assert "transforms[0] must be a one-key mapping" in msg


def test_transform_without_dali_mapping_fails_only_for_dali(monkeypatch):
    from clasflow.data import transforms

    monkeypatch.setattr(transforms, "DALI_SUPPORTED", transforms.DALI_SUPPORTED - {"RandomErasing"})
    msg = _error(lambda r: r["TRAIN"].update(loader="dali"))
    assert "TRAIN.transforms[5].RandomErasing: transform 'RandomErasing' has no DALI mapping; set TRAIN.loader=opencv" in msg
    raw = _raw()
    raw["TRAIN"]["loader"] = "opencv"
    assert config_from_dict(raw).TRAIN.loader == "opencv"


def test_dali_refuses_arguments_it_cannot_express():
    msg = _error(lambda r: r["VALID"].update(loader="dali") or r["VALID"]["transforms"][1]["ResizeImage"].update(interpolation="lanczos"))
    assert "VALID.transforms" in msg and "lanczos" in msg and "VALID.loader=opencv" in msg


def test_distillation_needs_teacher_and_student():
    msg = _error(lambda r: r.update(use_distillation=True))
    assert "pretrained_model: with use_distillation it must be a list [teacher, student]" in msg


def test_missing_files_are_named(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = load_config(CONFIGS / "ResNet50_vd.yaml")
    with pytest.raises(ConfigError, match=r"TRAIN.file_list: file './dataset/flowers102/train_list.txt' not found"):
        check_files(cfg)
    (tmp_path / "dataset/flowers102").mkdir(parents=True)
    for name in ("train_list.txt", "val_list.txt"):
        (tmp_path / "dataset/flowers102" / name).write_text("jpg/a.jpg 0\n")
    assert load_config(CONFIGS / "ResNet50_vd.yaml", check_paths=True).epochs == 20


def test_file_level_errors(tmp_path):
    with pytest.raises(ConfigError, match="config file '.*nope.yaml' not found"):
        load_config(tmp_path / "nope.yaml")
    (tmp_path / "bad.yaml").write_text("epochs: [1,\n")
    with pytest.raises(ConfigError, match="bad.yaml: not valid YAML"):
        load_config(tmp_path / "bad.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(tmp_path / "list.yaml")


def test_hash_and_flat_view():
    a = load_config(CONFIGS / "ResNet50_vd.yaml")
    b = load_config(CONFIGS / "ResNet50_vd.yaml", ["epochs=3"])
    assert a.hash() != b.hash() and len(a.hash()) == 16
    flat = a.flat()
    assert flat["LEARNING_RATE.params.lr"] == 0.0125 and flat["TRAIN.batch_size"] == 32
    assert yaml.safe_load(yaml.safe_dump(a.model_dump()))["epochs"] == 20


def test_hash_covers_the_training_not_where_files_live(tmp_path):
    """Same training from another folder, data copy and weights path: same hash; anything that
    changes the training (the list's contents included) changes it."""
    import shutil

    for d in ("a", "b"):
        (tmp_path / d).mkdir()
        for name in ("train_list.txt", "val_list.txt"):
            (tmp_path / d / name).write_text("jpg/image_00001.jpg 0\njpg/image_00002.jpg 1\n")

    def cfg(d, *extra):
        return load_config(CONFIGS / "ResNet50_vd_finetune.yaml", [
            f"model_save_dir={tmp_path / d / 'out'}", f"pretrained_model={tmp_path / d / 'w' / 'ppcls'}",
            f"TRAIN.file_list={tmp_path / d / 'train_list.txt'}", f"TRAIN.data_dir={tmp_path / d}",
            f"VALID.file_list={tmp_path / d / 'val_list.txt'}", f"VALID.data_dir={tmp_path / d}", *extra])

    base = cfg("a").hash()
    assert cfg("b", "checkpoints=elsewhere/3/ppcls", "print_interval=7").hash() == base
    changed = ["epochs=3", "TRAIN.batch_size=16", "use_amp=True", "seed=1", "classes_num=10", "LEARNING_RATE.params.lr=0.5",
               "LEARNING_RATE.function=Piecewise", "ARCHITECTURE.name=ResNet18_vd", "TRAIN.transforms.1.RandCropImage.size=200",
               "OPTIMIZER.regularizer.factor=0.001"]
    hashes = {o: cfg("b", o).hash() for o in changed}
    assert base not in hashes.values() and len(set(hashes.values())) == len(changed), hashes
    (tmp_path / "b" / "train_list.txt").write_text("jpg/image_00001.jpg 1\njpg/image_00002.jpg 0\n")
    assert cfg("b").hash() != base
    shutil.copy(tmp_path / "a" / "train_list.txt", tmp_path / "b" / "train_list.txt")
    assert cfg("b").hash() == base
    assert cfg("a").legacy_hash() != cfg("b").legacy_hash()  # the old hash did depend on the paths

"""Pipeline steps: profile overrides, the content cache on S3 and run-scoped publishing."""

import json

import pytest

from clasflow import steps, storage
from clasflow.errors import ConfigError


@pytest.fixture(scope="module")
def fixture_dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("ds")
    steps.prepare_dataset(root, "fixture:synthetic?classes=3&per_class=5&size=24")
    return root


def test_fixture_source_writes_lists_and_meta(fixture_dataset):
    meta = json.loads((fixture_dataset / steps.DATASET_META).read_text())
    assert meta["classes"] == 3 and meta["counts"]["train_list.txt"] == 6 and meta["bad_images"] == 0
    with pytest.raises(ConfigError, match="unknown option 'colour'"):
        steps.prepare_dataset(fixture_dataset / "x", "fixture:digits?colour=1")


def test_build_config_applies_the_profile(fixture_dataset, tmp_path):
    profile = steps.Profile("demo", image_size=48, epochs=2, batch_size=4, num_workers=0)
    cfg = steps.build_config("ResNet50_vd_ssld_random_erasing_finetune", fixture_dataset, tmp_path, profile, ["w/ResNet50_vd_ssld_pretrained"])
    assert (cfg.classes_num, cfg.epochs, cfg.image_shape, cfg.total_images) == (3, 2, [3, 48, 48], 6)
    assert cfg.TRAIN.batch_size == cfg.VALID.batch_size == 4 and cfg.TRAIN.num_workers == 0
    assert cfg.TRAIN.transforms[1].args["size"] == 48
    assert cfg.VALID.transforms[1].args["resize_short"] == 55 and cfg.VALID.transforms[2].args["size"] == 48
    assert cfg.TRAIN.file_list == str(fixture_dataset / "train_list.txt")
    assert cfg.pretrained_model == "w/ResNet50_vd_ssld_pretrained"
    assert cfg.ARCHITECTURE.params["lr_mult_list"] == [0.2, 0.2, 0.4, 0.4, 0.6]  # the config's own settings stay
    distill = steps.build_config("R50_vd_distill_MV3_large_x1_0", fixture_dataset, tmp_path, steps.Profile(), ["t", "s"])
    assert distill.pretrained_model == ["t", "s"] and distill.TRAIN.file_list.endswith("train_extra_list.txt")
    assert distill.total_images == 9  # train 6 + extra 3
    with pytest.raises(ConfigError, match="not a quick-start config"):
        steps.build_config("ResNet18", fixture_dataset, tmp_path, steps.Profile())


def test_weights_are_served_from_the_s3_cache_the_second_time(s3_env, tmp_path):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "MobileNetV3_large_x1_0_pretrained.pdparams").write_bytes(b"weights of a mirror " * 1000)
    cache = s3_env.uri("cache")
    first = steps.fetch_pretrained("MobileNetV3_large_x1_0", tmp_path / "a", f"file://{mirror}", cache)
    assert any("/sha256/" in uri for uri in storage.list(cache + "/"))
    for f in mirror.iterdir():  # the source is gone: only the cache can serve it now
        f.unlink()
    second = steps.fetch_pretrained("MobileNetV3_large_x1_0", tmp_path / "b", f"file://{mirror}", cache)
    assert second["sha256"] == first["sha256"]
    assert (tmp_path / "b" / "MobileNetV3_large_x1_0_pretrained.pdparams").read_bytes() == \
        (tmp_path / "a" / "MobileNetV3_large_x1_0_pretrained.pdparams").read_bytes()


def test_publish_uploads_under_the_pipeline_run(s3_env, tmp_path, monkeypatch):
    (tmp_path / "model" / "best_model").mkdir(parents=True)
    (tmp_path / "model" / "best_model" / "ppcls.pdparams").write_bytes(b"weights")
    (tmp_path / "bench.json").write_text("{}")
    monkeypatch.delenv(steps.ARTIFACT_ROOT_ENV, raising=False)
    assert steps.publish(tmp_path / "model", "models/x", steps.Profile(pipeline_run="run-1")) is None
    monkeypatch.setenv(steps.ARTIFACT_ROOT_ENV, s3_env.uri("artifacts"))
    prefix = steps.publish(tmp_path / "model", "models/x", steps.Profile(pipeline_run="run-1"))
    steps.publish(tmp_path / "bench.json", "benchmark.json", steps.Profile(pipeline_run="run-1"))
    assert prefix == s3_env.uri("artifacts/runs/run-1/models/x")
    assert storage.list(s3_env.uri("artifacts/runs/run-1/")) == [
        s3_env.uri("artifacts/runs/run-1/benchmark.json"), s3_env.uri("artifacts/runs/run-1/models/x/best_model/ppcls.pdparams")]

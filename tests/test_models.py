"""Models: registry, PaddleClas key layout, lr multipliers, distillation pair, pretrained loading."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
import paddle
import pytest

from clasflow.errors import ClasflowError
from clasflow.models import MODEL_NAMES, build_model, load_pretrained, model_params
from clasflow.models.v1_weights import (V1FormatError, encode_v1_var, parse_v1_var, read_v1_var,
                                        resnet_vd_v1_block_names, v1_names_for, write_v1_var)

# PaddleClas 2.6's state-dict key lists (written from paddleclas itself), kept with the tests
REFERENCE = Path(__file__).resolve().parent / "data"
DISTILL = "ResNet50_vd_distill_MobileNetV3_large_x1_0"


def _x(n=2, size=32, seed=0):
    return paddle.to_tensor(np.random.default_rng(seed).standard_normal((n, 3, size, size)).astype("float32"))


def _numpy_state(model):
    return {k: v.numpy().copy() for k, v in model.state_dict().items()}


def _randomize(model, seed=0):
    """Give every tensor distinct random values so a copy can be told from a fresh init."""
    rng = np.random.default_rng(seed)
    for k, t in model.state_dict().items():
        value = rng.standard_normal(t.shape).astype("float32")
        t.set_value(np.abs(value) + 0.5 if k.endswith("_variance") else value)


# ---------------------------------------------------------------- registry

def test_registry_lists_the_quick_start_models():
    expected = {f"ResNet{d}_vd" for d in (18, 34, 50, 101, 152, 200)}
    expected |= {f"MobileNetV3_{v}_x{s}" for v in ("large", "small") for s in ("0_35", "0_5", "0_75", "1_0", "1_25")}
    expected.add(DISTILL)
    assert set(MODEL_NAMES) == expected


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_every_name_builds(name):
    model = build_model(name, class_num=7)
    assert sum(int(np.prod(p.shape)) for p in model.parameters()) > 100_000
    if name in ("ResNet18_vd", "MobileNetV3_small_x0_35", "MobileNetV3_large_x0_5", DISTILL):
        model.eval()
        with paddle.no_grad():
            out = model(_x())
        outs = out if isinstance(out, tuple) else (out,)
        assert all(o.shape == [2, 7] and np.isfinite(o.numpy()).all() for o in outs)


def test_unknown_name_lists_close_matches():
    with pytest.raises(ClasflowError) as e:
        build_model("ResNet50vd")
    assert "'ResNet50vd'" in str(e.value) and "ResNet50_vd" in str(e.value)
    with pytest.raises(ClasflowError, match="MobileNetV3_large_x1_0"):
        build_model("MobileNetV3_large_x1")


def test_unknown_or_bad_parameters_are_rejected():
    with pytest.raises(ClasflowError, match="lr_mult_list"):  # PaddleClas would silently drop it
        build_model("MobileNetV3_large_x1_0", lr_mult_list=[1.0] * 5)
    with pytest.raises(ClasflowError, match="5 numbers"):  # PaddleClas would silently fall back
        build_model("ResNet18_vd", lr_mult_list=[0.1, 0.2])
    with pytest.raises(ClasflowError, match="class_num"):
        build_model("ResNet18_vd", class_num=0)
    assert set(model_params("ResNet50_vd")) == {"class_num", "lr_mult_list", "data_format"}


# ---------------------------------------------------------------- PaddleClas layout

def _reference(name):
    rows = [line.rstrip("\n").split("\t") for line in (REFERENCE / f"paddleclas-{name}-state-dict.tsv").open()
            if not line.startswith("#")]
    return [(key, [int(d) for d in shape.strip("[]").split(",")]) for key, shape in rows]


@pytest.mark.parametrize("name", ["ResNet50_vd", "MobileNetV3_large_x1_0"])
def test_state_dict_equals_paddleclas_keys_and_order(name):
    model = build_model(name, class_num=102)
    ours = [(k, list(v.shape)) for k, v in model.state_dict().items()]
    assert ours == _reference(name)


def test_lr_mult_list_per_stage():
    mults = [0.1, 0.2, 0.3, 0.4, 0.5]
    model = build_model("ResNet50_vd", class_num=102, lr_mult_list=mults)
    stage_of_block = [1] * 3 + [2] * 4 + [3] * 6 + [4] * 3
    seen = set()
    for name, p in model.named_parameters():
        lr = p.optimize_attr["learning_rate"]
        if name.endswith(("._mean", "._variance")):  # running statistics: not trained
            continue
        if name.startswith("fc."):
            want = 1.0
        elif name.startswith("stem."):
            want = mults[0]
        else:
            want = mults[stage_of_block[int(name.split(".")[1])]]
        assert lr == pytest.approx(want), name
        seen.add(want)
    assert seen == set(mults) | {1.0}
    assert all(p.optimize_attr["learning_rate"] == 1.0 for p in build_model("ResNet18_vd").parameters())


def test_resnet_nhwc_matches_nchw():
    nchw = build_model("ResNet18_vd", class_num=5)
    nhwc = build_model("ResNet18_vd", class_num=5, data_format="NHWC")  # takes NCHW input, computes in NHWC
    nhwc.set_state_dict(nchw.state_dict())
    nchw.eval()
    nhwc.eval()
    with paddle.no_grad():
        np.testing.assert_allclose(nhwc(_x(size=40)).numpy(), nchw(_x(size=40)).numpy(), atol=1e-5)


def test_mobilenet_bn_has_no_weight_decay():
    model = build_model("MobileNetV3_large_x1_0", class_num=102)
    for name, p in model.named_parameters():
        if name.endswith(("._mean", "._variance")):
            continue
        if ".bn." in name:
            assert p.regularizer is not None and p.regularizer._coeff == 0.0, name
        else:
            assert p.regularizer is None, name


def test_mobilenet_widths_follow_make_divisible():
    sd = build_model("MobileNetV3_small_x0_35", class_num=3).state_dict()
    assert list(sd["conv.conv.weight"].shape) == [8, 3, 3, 3]
    assert list(sd["last_second_conv.conv.weight"].shape) == [200, 32, 1, 1]  # 576*.35=201.6 -> 200, 96*.35 -> 32
    assert list(sd["last_conv.weight"].shape) == [1280, 200, 1, 1]


# ---------------------------------------------------------------- distillation

def test_distill_teacher_frozen_and_in_eval_mode():
    model = build_model(DISTILL, class_num=5)
    assert all(p.stop_gradient for p in model.teacher.parameters())
    student = [p for n, p in model.student.named_parameters() if not n.endswith(("._mean", "._variance"))]
    assert all(not p.stop_gradient for p in student)
    assert model.trainable_parameters() == student
    model.train()
    assert model.training and model.student.training
    assert not model.teacher.training and not any(layer.training for layer in model.teacher.sublayers())

    teacher_mean = model.teacher.stem[0].bn._mean.numpy().copy()
    student_mean = model.student.conv.bn._mean.numpy().copy()
    t, s = model(_x())
    assert t.shape == [2, 5] and s.shape == [2, 5]
    assert t.stop_gradient and not s.stop_gradient
    np.testing.assert_array_equal(model.teacher.stem[0].bn._mean.numpy(), teacher_mean)
    assert not np.array_equal(model.student.conv.bn._mean.numpy(), student_mean)  # student trains BN

    (s - t).square().mean().backward()
    assert all(p.grad is None for p in model.teacher.parameters())
    assert model.student.fc.weight.grad is not None


def test_distill_teacher_stays_in_eval_when_a_parent_trains():
    model = build_model(DISTILL, class_num=5)
    parent = paddle.nn.LayerList([model])
    parent.train()  # sets every sublayer's flag directly, bypassing model.train()
    before = model.teacher.stem[0].bn._mean.numpy().copy()
    model(_x())
    np.testing.assert_array_equal(model.teacher.stem[0].bn._mean.numpy(), before)


# ---------------------------------------------------------------- .pdparams loading

@pytest.fixture(scope="module")
def mv3_1000(tmp_path_factory):
    """A 1000-class MobileNetV3_large_x1_0 saved as PaddleClas does (``<dir>/ppcls.pdparams``)."""
    paddle.seed(1)
    model = build_model("MobileNetV3_large_x1_0", class_num=1000)
    _randomize(model, seed=1)
    out = tmp_path_factory.mktemp("mv3") / "19"
    out.mkdir()
    paddle.save(model.state_dict(), str(out / "ppcls.pdparams"))
    return out, _numpy_state(model)


def test_pdparams_1000_into_102_skips_and_reports_head(mv3_1000):
    folder, src = mv3_1000
    model = build_model("MobileNetV3_large_x1_0", class_num=102)
    fc_before = model.fc.weight.numpy().copy()
    report = load_pretrained(model, folder / "ppcls.pdparams")
    assert report.format == "pdparams" and report.source.endswith("ppcls.pdparams")
    assert report.skipped_head == ["fc.weight", "fc.bias"]
    assert report.head_shapes == {"fc.weight": ([1280, 1000], [1280, 102]), "fc.bias": ([1000], [102])}
    assert len(report.loaded) == 268 and "fc.weight" not in report.loaded
    assert "skipped classifier head" in report.summary()
    for k, v in model.state_dict().items():
        if not k.startswith("fc."):
            np.testing.assert_array_equal(v.numpy(), src[k], err_msg=k)
    np.testing.assert_array_equal(model.fc.weight.numpy(), fc_before)
    with pytest.raises(ClasflowError, match=r"fc\.weight \[1280, 1000\] vs model \[1280, 102\]"):
        load_pretrained(build_model("MobileNetV3_large_x1_0", class_num=102), folder / "ppcls.pdparams",
                        strict_head=True)


def test_pdparams_same_classes_loads_everything(mv3_1000):
    folder, src = mv3_1000
    model = build_model("MobileNetV3_large_x1_0", class_num=1000)
    report = load_pretrained(model, folder / "ppcls")  # PaddleClas prefix convention
    assert report.skipped_head == [] and len(report.loaded) == 270
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v.numpy(), src[k], err_msg=k)


def test_path_forms(mv3_1000, tmp_path):
    folder, _ = mv3_1000
    model = build_model("MobileNetV3_large_x1_0", class_num=102)
    assert load_pretrained(model, folder).source == str(folder / "ppcls.pdparams")  # folder with one .pdparams
    assert load_pretrained(model, str(folder / "ppcls")).source == str(folder / "ppcls.pdparams")
    with pytest.raises(ClasflowError) as e:
        load_pretrained(model, tmp_path / "nowhere" / "ppcls")
    assert "ppcls.pdparams" in str(e.value)
    two = tmp_path / "two"
    two.mkdir()
    (two / "a.pdparams").write_bytes((folder / "ppcls.pdparams").read_bytes())
    (two / "best_model.pdparams").write_bytes(b"")
    with pytest.raises(ClasflowError, match="several .pdparams"):
        load_pretrained(model, two)
    bad = tmp_path / "bad.pdparams"
    bad.write_bytes(b"not a pickle")
    with pytest.raises(ClasflowError, match="cannot read .pdparams"):
        load_pretrained(model, bad)


def _save_state(state, path):
    paddle.save({k: paddle.to_tensor(v) for k, v in state.items()}, str(path))
    return path


def test_missing_unexpected_or_misshapen_keys_raise_and_load_nothing(mv3_1000, tmp_path):
    _, src = mv3_1000
    model = build_model("MobileNetV3_large_x1_0", class_num=1000)
    before = _numpy_state(model)

    missing = {k: v for k, v in src.items() if k != "blocks.3.mid_se.conv1.bias"}
    with pytest.raises(ClasflowError, match=r"missing in file: blocks\.3\.mid_se\.conv1\.bias"):
        load_pretrained(model, _save_state(missing, tmp_path / "missing.pdparams"))

    extra = dict(src, **{"blocks.0.extra.weight": np.zeros(3, "float32")})
    with pytest.raises(ClasflowError, match=r"not in model: blocks\.0\.extra\.weight"):
        load_pretrained(model, _save_state(extra, tmp_path / "extra.pdparams"))

    wrong = dict(src, **{"conv.bn.weight": np.zeros(17, "float32")})
    with pytest.raises(ClasflowError, match=r"shape mismatch: conv\.bn\.weight \[17\] vs model \[16\]"):
        load_pretrained(model, _save_state(wrong, tmp_path / "wrong.pdparams"))

    for k, v in model.state_dict().items():  # all-or-nothing
        np.testing.assert_array_equal(v.numpy(), before[k], err_msg=k)


def test_prefixed_keys_get_a_hint(mv3_1000, tmp_path):
    _, src = mv3_1000
    path = _save_state({f"Student.{k}": v for k, v in src.items()}, tmp_path / "student.pdparams")
    with pytest.raises(ClasflowError, match=r"model\.student"):
        load_pretrained(build_model("MobileNetV3_large_x1_0", class_num=1000), path)


def test_distill_parts_load_separately(mv3_1000):
    folder, src = mv3_1000
    model = build_model(DISTILL, class_num=102)
    report = load_pretrained(model.student, folder / "ppcls")
    assert report.skipped_head == ["fc.weight", "fc.bias"]
    np.testing.assert_array_equal(model.student.conv.conv.weight.numpy(), src["conv.conv.weight"])
    assert all(p.stop_gradient for p in model.teacher.parameters())


# ---------------------------------------------------------------- v1 (seed) format

@pytest.mark.parametrize("array", [
    np.arange(24, dtype="float32").reshape(2, 3, 2, 2), np.array(3.5), np.arange(5, dtype="int64"),
    np.ones((2, 1), "float16"), np.array([True, False]), np.zeros((0, 4), "float32"),
], ids=["f32-4d", "f64-scalar", "i64", "f16", "bool", "empty"])
def test_v1_var_roundtrip(tmp_path, array):
    write_v1_var(tmp_path / "v", array)
    back = read_v1_var(tmp_path / "v")
    assert back.dtype == array.dtype and back.shape == array.shape
    np.testing.assert_array_equal(back, array)


def test_v1_bytes_match_paddle_save_vars(tmp_path):
    core = pytest.importorskip("paddle.base.core")
    if not hasattr(core, "save_dense_tensor"):
        pytest.skip("this Paddle build has no core.save_dense_tensor")
    for array in (np.arange(6, dtype="float32").reshape(2, 3), np.array(2.0), np.arange(3, dtype="int64")):
        t = core.DenseTensor()
        t.set(array, core.CPUPlace())
        core.save_dense_tensor(t, str(tmp_path / "p"))
        assert (tmp_path / "p").read_bytes() == encode_v1_var(array)


def test_v1_reads_lod_and_packed_dims():
    arr = np.arange(6, dtype="float32").reshape(3, 2)
    desc = b"\x08\x05" + b"\x12\x02\x03\x02"  # data_type FP32, dims packed [3, 2]
    lod = (1).to_bytes(8, "little") + (16).to_bytes(8, "little") + np.array([0, 3], "<u8").tobytes()
    data = (b"\0" * 4 + lod + b"\0" * 4 + len(desc).to_bytes(4, "little") + desc + arr.tobytes())
    np.testing.assert_array_equal(parse_v1_var(data), arr)


def test_v1_corrupt_files_give_clear_errors(tmp_path):
    good = encode_v1_var(np.ones((4, 4), "float32"))
    cases = {
        "truncated": good[:-5],
        "header": good[:10],
        "version": b"\x07" + good[1:],
        "dtype": good.replace(b"\x08\x05", b"\x08\x63", 1),
    }
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(V1FormatError) as e:
            read_v1_var(tmp_path / name)
        assert str(tmp_path / name) in str(e.value), name
        assert "v1" in str(e.value) or "needs" in str(e.value) or "data type" in str(e.value), name
    assert "truncated or corrupt" in str(pytest.raises(V1FormatError, read_v1_var, tmp_path / "truncated").value)


def _v1_tar(model, path, top="pretrained", extra=None, mutate=None):
    """Write every variable of ``model`` under its v1 name into a .tar, as the seed archives are."""
    names = v1_names_for(model)
    with tarfile.open(path, "w") as tar:
        def add(name, data):
            info = tarfile.TarInfo(f"{top}/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for key, value in model.state_dict().items():
            data = encode_v1_var(value.numpy())
            add(names[key][0], mutate(names[key][0], data) if mutate else data)
        for name, data in (extra or {}).items():
            add(name, data)
    return path


@pytest.mark.parametrize("name", ["ResNet50_vd", "MobileNetV3_large_x1_0"])
def test_v1_tar_converts_to_identical_weights(tmp_path, name):
    src = build_model(name, class_num=102)
    _randomize(src, seed=2)
    tar = _v1_tar(src, tmp_path / f"{name}_pretrained.tar",
                  extra={"@LR_DECAY_COUNTER@": encode_v1_var(np.zeros(1, "int64"))})
    dst = build_model(name, class_num=102)
    report = load_pretrained(dst, tar)
    assert report.format == "v1" and report.skipped_head == [] and report.ignored == ["@LR_DECAY_COUNTER@"]
    want = _numpy_state(src)
    for k, v in dst.state_dict().items():
        np.testing.assert_array_equal(v.numpy(), want[k], err_msg=k)
    src.eval()
    dst.eval()
    with paddle.no_grad():
        np.testing.assert_array_equal(src(_x()).numpy(), dst(_x()).numpy())


def test_v1_names_are_the_seed_names():
    r50 = set(n[0] for n in v1_names_for(build_model("ResNet50_vd", class_num=3)).values())
    assert {"conv1_1_weights", "bnv1_1_scale", "bnv1_1_offset", "bnv1_1_mean", "bnv1_1_variance",
            "res2a_branch2a_weights", "bn2a_branch2a_scale", "res2a_branch1_weights", "res5c_branch2c_weights",
            "bn5c_branch2c_variance", "res3a_branch1_weights", "fc_0.w_0", "fc_0.b_0"} <= r50
    assert len(r50) == 277
    mv3 = set(n[0] for n in v1_names_for(build_model("MobileNetV3_large_x1_0", class_num=3)).values())
    assert {"conv1_weights", "conv1_bn_scale", "conv2_expand_weights", "conv2_depthwise_weights",
            "conv5_se_1_weights", "conv5_se_1_offset", "conv5_se_2_weights", "conv2_linear_bn_mean",
            "conv_last_weights", "conv_last_bn_offset", "last_1x1_conv_weights", "fc_weights", "fc_offset"} <= mv3
    assert len(mv3) == 270
    deep = resnet_vd_v1_block_names(101, (3, 4, 23, 3))
    assert deep[7:9] == ["res4a", "res4b1"] and deep[29] == "res4b22" and deep[-1] == "res5c"
    assert len(set(resnet_vd_v1_block_names(200, (3, 12, 48, 3)))) == 66


def test_v1_folder_with_1000_classes_and_stem_alias(tmp_path):
    src = build_model("MobileNetV3_large_x1_0", class_num=1000)
    _randomize(src, seed=3)
    folder = tmp_path / "MobileNetV3_large_x1_0_pretrained"
    folder.mkdir()
    for key, names in v1_names_for(src).items():
        write_v1_var(folder / names[0], src.state_dict()[key].numpy())
    dst = build_model("MobileNetV3_large_x1_0", class_num=102)
    report = load_pretrained(dst, tmp_path)  # the folder the tar was extracted into
    assert report.format == "v1" and report.skipped_head == ["fc.weight", "fc.bias"]
    np.testing.assert_array_equal(dst.last_conv.weight.numpy(), src.last_conv.weight.numpy())

    r18 = build_model("ResNet18_vd", class_num=4)  # `bn_conv1_1_*` spelling of the stem BN is accepted too
    alias = tmp_path / "r18"
    alias.mkdir()
    for key, names in v1_names_for(r18).items():
        write_v1_var(alias / names[-1], r18.state_dict()[key].numpy())
    assert (alias / "bn_conv1_1_scale").exists()
    assert len(load_pretrained(build_model("ResNet18_vd", class_num=4), alias).loaded) == len(r18.state_dict())


def test_v1_problems_name_the_files(tmp_path):
    model = build_model("MobileNetV3_small_x0_35", class_num=3)
    corrupt = _v1_tar(model, tmp_path / "c.tar", mutate=lambda n, d: d[:-3] if n == "conv3_linear_weights" else d)
    with pytest.raises(ClasflowError, match="conv3_linear_weights.*truncated or corrupt"):
        load_pretrained(model, corrupt)
    stray = _v1_tar(model, tmp_path / "s.tar", extra={"conv99_weights": encode_v1_var(np.zeros(2, "float32"))})
    with pytest.raises(ClasflowError, match="conv99_weights"):
        load_pretrained(model, stray)
    wrong_model = _v1_tar(model, tmp_path / "w.tar")
    with pytest.raises(ClasflowError, match="missing .*conv1_1_weights"):
        load_pretrained(build_model("ResNet18_vd", class_num=3), wrong_model)
    with pytest.raises(ClasflowError, match="load .teacher and .student separately"):
        load_pretrained(build_model(DISTILL, class_num=3), wrong_model)
    (tmp_path / "broken.tar").write_bytes(b"x" * 2048)
    with pytest.raises(ClasflowError):
        load_pretrained(model, tmp_path / "broken.tar")

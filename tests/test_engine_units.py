"""Schedules, losses, lr_mult and checkpoints: values against closed forms and numpy references."""


import numpy as np
import paddle
import pytest

from clasflow.config import load_config
from clasflow.engine import checkpoint as ckpt
from clasflow.engine import losses
from clasflow.engine.schedules import build_lr, build_optimizer
from clasflow.errors import ClasflowError, ConfigError
from clasflow.models import build_model
from tests.conftest import CONFIGS


def _cfg(*overrides):
    return load_config(CONFIGS / "ResNet50_vd.yaml", ["epochs=4", *overrides])


def _values(sched, n):
    out = []
    for _ in range(n):
        out.append(sched.last_lr)
        sched.step()
    return np.array(out)


def test_cosine_is_per_iteration_closed_form():
    steps = 5
    got = _values(build_lr(_cfg("LEARNING_RATE.params.lr=0.1"), steps), 20)
    t = np.arange(20)
    np.testing.assert_allclose(got, 0.1 * (1 + np.cos(np.pi * t / 20)) / 2, rtol=1e-6, atol=1e-9)


def test_linear_decays_to_end_lr():
    got = _values(build_lr(_cfg("LEARNING_RATE.function=Linear", "LEARNING_RATE.params={lr: 0.2, end_lr: 0.02}"), 5), 21)
    t = np.minimum(np.arange(21), 20)
    np.testing.assert_allclose(got, (0.2 - 0.02) * (1 - t / 20) + 0.02, rtol=1e-6)


def test_piecewise_steps_by_gamma_at_epoch_boundaries():
    got = _values(build_lr(_cfg("LEARNING_RATE.function=Piecewise", "LEARNING_RATE.params={lr: 0.1, decay_epochs: [1, 3], gamma: 0.5}"), 5), 20)
    expected = np.array([0.1] * 5 + [0.05] * 10 + [0.025] * 5)
    np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_cosine_warmup_is_linear_then_cosine():
    got = _values(build_lr(_cfg("LEARNING_RATE.function=CosineWarmup", "LEARNING_RATE.params={lr: 0.1, warmup_epoch: 1}"), 5), 20)
    warm = 0.1 * np.arange(5) / 5
    t = np.arange(15)
    cos = 0.1 * (1 + np.cos(np.pi * t / 15)) / 2
    np.testing.assert_allclose(got, np.concatenate([warm, cos]), rtol=1e-6, atol=1e-9)


def test_lr_params_are_checked():
    with pytest.raises(ConfigError, match="Cosine does not take decay_epochs"):
        build_lr(_cfg("LEARNING_RATE.params={lr: 0.1, decay_epochs: [1]}"), 5)
    with pytest.raises(ConfigError, match="decay_epochs is required for Piecewise"):
        build_lr(_cfg("LEARNING_RATE.function=Piecewise"), 5)
    with pytest.raises(ConfigError, match="warmup_epoch must be below epochs"):
        build_lr(_cfg("LEARNING_RATE.function=CosineWarmup", "LEARNING_RATE.params={lr: 0.1, warmup_epoch: 4}"), 5)


def test_lr_mult_scales_stage_updates_and_fc_stays_1():
    paddle.seed(0)
    cfg = _cfg("ARCHITECTURE.params.lr_mult_list=[0.0, 1.0, 1.0, 1.0, 0.5]", "OPTIMIZER.regularizer.factor=0.0", "OPTIMIZER.params.momentum=0.0")
    model = build_model("ResNet18_vd", class_num=4, lr_mult_list=[0.0, 1.0, 1.0, 1.0, 0.5])
    ref = build_model("ResNet18_vd", class_num=4)
    ref.set_state_dict(model.state_dict())
    x = paddle.randn([2, 3, 32, 32])
    y = paddle.to_tensor([[1], [2]])
    for net in (model, ref):
        opt = build_optimizer(cfg, net.parameters(), build_lr(cfg, 1))
        losses.cross_entropy(net(x), y, 4).backward()
        opt.step()
    paddle.seed(0)
    init = {k: v.numpy() for k, v in build_model("ResNet18_vd", class_num=4).state_dict().items()}  # same init
    got, full = model.state_dict(), ref.state_dict()
    stem = "stem.0.conv.weight"
    np.testing.assert_array_equal(got[stem].numpy(), init[stem])  # lr_mult 0: frozen
    assert not np.allclose(full[stem].numpy(), init[stem])
    last = [k for k in got if k.startswith("blocks.") and k.endswith("conv.weight")][-1]
    np.testing.assert_allclose(got[last].numpy() - init[last], 0.5 * (full[last].numpy() - init[last]), rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(got["fc.weight"].numpy(), full["fc.weight"].numpy(), rtol=1e-5, atol=1e-7)


def test_mobilenetv3_bn_is_not_decayed_by_the_optimizer():
    """BN scale/offset carry L2Decay(0), which overrides the optimizer's L2: with zero gradient
    and a huge decay they stay put while conv weights shrink."""
    cfg = load_config(CONFIGS / "MobileNetV3_large_x1_0_finetune.yaml", ["OPTIMIZER.regularizer.factor=0.5", "OPTIMIZER.params.momentum=0.0", "LEARNING_RATE.params.lr=1.0"])
    model = build_model("MobileNetV3_small_x0_35", class_num=3)
    opt = build_optimizer(cfg, model.parameters(), build_lr(cfg, 1))
    before = {p.name: p.numpy().copy() for p in model.parameters()}
    for p in model.parameters():
        p.grad = paddle.zeros_like(p)  # only the decay moves a parameter
    opt.step()
    bn = {p.name for p in model.parameters() if p.regularizer is not None}
    assert bn
    for p in model.parameters():
        if p.stop_gradient:
            continue  # BN running statistics are not optimised
        moved = not np.allclose(p.numpy(), before[p.name])
        assert moved == (p.name not in bn and bool(np.any(before[p.name]))), p.name


def _np_softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_cross_entropy_with_label_smoothing_matches_numpy():
    rng = np.random.default_rng(0)
    logits, labels, eps, k = rng.normal(size=(6, 5)).astype("float32"), rng.integers(0, 5, (6, 1)), 0.1, 5
    soft = np.full((6, k), eps / k)
    soft[np.arange(6), labels[:, 0]] += 1 - eps
    expected = -(soft * np.log(_np_softmax(logits))).sum(-1).mean()
    got = float(losses.cross_entropy(paddle.to_tensor(logits), paddle.to_tensor(labels), k, eps))
    assert got == pytest.approx(expected, rel=1e-5)
    plain = -np.log(_np_softmax(logits)[np.arange(6), labels[:, 0]]).mean()
    assert float(losses.cross_entropy(paddle.to_tensor(logits), paddle.to_tensor(labels), k)) == pytest.approx(plain, rel=1e-5)


def test_mixup_mixes_images_and_losses():
    rng = np.random.default_rng(3)
    images = paddle.to_tensor(np.arange(4 * 3 * 2 * 2, dtype="float32").reshape(4, 3, 2, 2))
    labels = paddle.to_tensor([[0], [1], [2], [3]])
    mixed, la, lb, lam = losses.mixup(images, labels, 0.2, np.random.default_rng(3))
    lam_ref = np.random.default_rng(3).beta(0.2, 0.2)
    perm = np.random.default_rng(3)
    perm.beta(0.2, 0.2)
    perm = perm.permutation(4)
    assert lam == pytest.approx(lam_ref)
    np.testing.assert_allclose(mixed.numpy(), lam * images.numpy() + (1 - lam) * images.numpy()[perm], rtol=1e-6)
    np.testing.assert_array_equal(lb.numpy()[:, 0], perm)
    logits = paddle.to_tensor(rng.normal(size=(4, 4)).astype("float32"))
    expected = lam * float(losses.cross_entropy(logits, la, 4)) + (1 - lam) * float(losses.cross_entropy(logits, lb, 4))
    assert float(losses.mixup_loss(logits, la, lb, lam, 4)) == pytest.approx(expected, rel=1e-5)


def test_jsdiv_matches_numpy_reference():
    rng = np.random.default_rng(1)
    s, t = rng.normal(size=(4, 7)).astype("float32"), rng.normal(size=(4, 7)).astype("float32")
    ps, pt = _np_softmax(s), _np_softmax(t)
    kl = lambda p, q: p * np.log((p + 1e-10) / (q + 1e-10)) * 7  # noqa: E731
    expected = ((kl(ps, pt) + kl(pt, ps)) / 2).mean()
    assert float(losses.jsdiv(paddle.to_tensor(s), paddle.to_tensor(t))) == pytest.approx(expected, rel=1e-5)
    assert float(losses.jsdiv(paddle.to_tensor(s), paddle.to_tensor(s))) == pytest.approx(0.0, abs=1e-6)


def test_topk_correct():
    logits = paddle.to_tensor([[0.1, 0.9, 0.0], [0.8, 0.1, 0.2], [0.3, 0.2, 0.5]])
    labels = paddle.to_tensor([[1], [2], [0]])
    assert losses.topk_correct(logits, labels, 1) == 1
    assert losses.topk_correct(logits, labels, 2) == 3
    assert losses.topk_correct(logits, labels, 5) == 3


def test_checkpoint_roundtrip_and_atomic_replace(tmp_path, monkeypatch):
    model = build_model("MobileNetV3_small_x0_35", class_num=3)
    cfg = _cfg()
    opt = build_optimizer(cfg, model.parameters(), build_lr(cfg, 2))
    meta = ckpt.CheckpointMeta(epoch=1, step_in_epoch=0, global_step=4, config_hash="abc", metrics={"valid_top1": 0.5})
    folder = ckpt.save_checkpoint(tmp_path / "M" / "1", model, opt, meta)
    assert sorted(p.name for p in folder.iterdir()) == ["ppcls.json", "ppcls.pdopt", "ppcls.pdparams", "ppcls.pdstates"]
    # a write that dies midway leaves the previous checkpoint intact and no stray folder under the final name
    monkeypatch.setattr(ckpt.paddle, "save", lambda *a, **k: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError):
        ckpt.save_checkpoint(tmp_path / "M" / "1", model, opt, meta)
    assert ckpt.read_meta(tmp_path / "M" / "1" / "ppcls").global_step == 4
    assert [p.name for p in (tmp_path / "M").iterdir()] == ["1"]
    monkeypatch.undo()
    other = build_model("MobileNetV3_small_x0_35", class_num=3)
    opt2 = build_optimizer(cfg, other.parameters(), build_lr(cfg, 2))
    got = ckpt.load_checkpoint(tmp_path / "M" / "1" / "ppcls", other, opt2, "abc")
    assert got.next_position() == (2, 0)
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v.numpy(), other.state_dict()[k].numpy())
    with pytest.raises(ClasflowError, match="different config"):
        ckpt.load_checkpoint(tmp_path / "M" / "1", other, opt2, "other")
    assert ckpt.latest_checkpoint(tmp_path / "M") == tmp_path / "M" / "1"
    assert ckpt.latest_checkpoint(tmp_path / "none") is None


def _enabled_scaler(**state):
    """A paddle.amp.GradScaler in the state AMP training leaves it in. Paddle disables the scaler
    on a CPU place at construction (AMP itself is refused here, see test_amp_is_refused_on_cpu),
    so the enable flag is set as a GPU place would set it; the state then goes through Paddle's
    own load_state_dict/state_dict."""
    scaler = paddle.amp.GradScaler(init_loss_scaling=1024)
    scaler._enable = True
    scaler.load_state_dict({"scale": np.array([1024.0], "float32"), "incr_ratio": 2.0, "decr_ratio": 0.5,
                            "incr_every_n_steps": 1000, "decr_every_n_nan_or_inf": 2, "incr_count": 0, "decr_count": 0,
                            "use_dynamic_loss_scaling": True, **state})
    return scaler


def test_amp_grad_scaler_state_is_saved_and_restored(tmp_path, caplog):
    model = build_model("MobileNetV3_small_x0_35", class_num=3)
    cfg = _cfg()
    opt = build_optimizer(cfg, model.parameters(), build_lr(cfg, 2))
    meta = ckpt.CheckpointMeta(epoch=0, step_in_epoch=3, global_step=3, config_hash="h", complete=False)
    trained = _enabled_scaler(scale=np.array([256.0], "float32"), incr_count=37, decr_count=1)
    ckpt.save_checkpoint(tmp_path / "amp", model, opt, meta, scaler=trained)
    fresh = _enabled_scaler()
    ckpt.load_checkpoint(tmp_path / "amp", model, opt, "h", scaler=fresh)
    got = fresh.state_dict()
    assert float(got["scale"][0]) == 256.0 and got["incr_count"] == 37 and got["decr_count"] == 1
    assert float(fresh._scale.numpy()[0]) == 256.0  # the scale the next step multiplies the loss by
    # a checkpoint written before the scaler was saved (no state in ppcls.pdstates) still loads
    ckpt.save_checkpoint(tmp_path / "old", model, opt, meta)
    fresh = _enabled_scaler()
    caplog.set_level("WARNING", logger="clasflow")
    assert ckpt.load_checkpoint(tmp_path / "old", model, opt, "h", scaler=fresh).step_in_epoch == 3
    assert float(fresh.state_dict()["scale"][0]) == 1024.0 and "holds no AMP GradScaler state" in caplog.text
    # without AMP (a disabled scaler, or none) the scaler state is neither written nor needed
    ckpt.save_checkpoint(tmp_path / "fp32", model, opt, meta, scaler=paddle.amp.GradScaler(enable=False))
    import pickle

    assert ckpt.SCALER_KEY not in pickle.loads((tmp_path / "fp32" / "ppcls.pdstates").read_bytes())
    assert ckpt.SCALER_KEY in pickle.loads((tmp_path / "amp" / "ppcls.pdstates").read_bytes())


def test_checkpoint_with_the_legacy_hash_still_resumes(tmp_path):
    model = build_model("MobileNetV3_small_x0_35", class_num=3)
    cfg = _cfg()
    opt = build_optimizer(cfg, model.parameters(), build_lr(cfg, 2))
    ckpt.save_checkpoint(tmp_path / "c", model, opt, ckpt.CheckpointMeta(0, 0, 2, cfg.legacy_hash()))
    assert ckpt.load_checkpoint(tmp_path / "c", model, opt, (cfg.hash(), cfg.legacy_hash())).epoch == 0
    with pytest.raises(ClasflowError, match="different config"):
        ckpt.load_checkpoint(tmp_path / "c", model, opt, cfg.hash())

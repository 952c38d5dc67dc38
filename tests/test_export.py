"""Export -> inference model (+ ONNX) -> predict, at 32px with random-weight checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from clasflow.cli import main

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "quick_start"
SIZE = 32


def make_checkpoint(arch: str, folder: Path, class_num: int = 102, *, kaiming: bool = False, seed: int = 0) -> Path:
    """``paddle.save`` of a fresh model's state_dict as ``folder/ppcls.pdparams``; returns the prefix.

    ``kaiming`` redraws conv/fc weights with fan-in scaling so that the logits are O(1)
    (a fresh MobileNetV3's logits are ~1e-8, which would make top-k comparisons meaningless).
    """
    import paddle

    from clasflow.models import build_model

    paddle.seed(seed)
    model = build_model(arch, class_num=class_num)
    if kaiming:
        rng = np.random.default_rng(seed)
        for tensor in model.state_dict().values():
            a = tensor.numpy()
            if a.ndim == 4:
                tensor.set_value(rng.normal(0, np.sqrt(2.0 / a[0].size), a.shape).astype("float32"))
            elif a.ndim == 2:
                tensor.set_value(rng.normal(0, np.sqrt(1.0 / a.shape[0]), a.shape).astype("float32"))
    folder.mkdir(parents=True, exist_ok=True)
    paddle.save(model.state_dict(), str(folder / "ppcls.pdparams"))
    return folder / "ppcls"


def write_images(folder: Path, n: int = 3, seed: int = 0) -> list[Path]:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        h, w = int(rng.integers(40, 70)), int(rng.integers(40, 70))
        img = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
        path = folder / f"img_{i}.{'png' if i % 2 else 'jpg'}"
        cv2.imwrite(str(path), img)
        out.append(path)
    return out


def cli_json(capsys, argv: list[str]):
    capsys.readouterr()
    code = main(argv)
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return json.loads(captured.out)


def cli_error(capsys, argv: list[str]) -> str:
    capsys.readouterr()
    code = main(argv)
    captured = capsys.readouterr()
    assert code == 2, captured.out + captured.err
    return captured.err


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("ckpts")
    return {
        "ResNet50_vd": make_checkpoint("ResNet50_vd", root / "r50"),
        "MobileNetV3_large_x1_0": make_checkpoint("MobileNetV3_large_x1_0", root / "mv3", kaiming=True),
    }


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("images")
    write_images(folder)
    return folder


@pytest.fixture(scope="module")
def r50_export(tmp_path_factory, ckpts) -> Path:
    out = tmp_path_factory.mktemp("export") / "r50"
    code = main(["export", "--model", "ResNet50_vd", "--pretrained_model", str(ckpts["ResNet50_vd"]),
                 "--class_num", "102", "--image_size", str(SIZE), "--onnx", "--output_path", str(out)])
    assert code == 0
    return out


def test_resnet50_vd_export_onnx_and_predict_round_trip(r50_export, images, capsys):
    files = sorted(p.name for p in r50_export.iterdir())
    assert files == ["inference.json", "inference.pdiparams", "inference.yml", "model.onnx"]
    meta = yaml.safe_load((r50_export / "inference.yml").read_text())
    assert meta["architecture"] == "ResNet50_vd" and meta["class_num"] == 102
    assert meta["input"]["shape"] == [-1, 3, SIZE, SIZE]
    assert meta["label_source"] == "ids" and meta["label_names"][:3] == ["0", "1", "2"]
    check = meta["self_check"]
    assert set(check["max_abs_diff"]) == {"paddle_inference", "onnxruntime"}
    assert all(0 <= d <= check["allowed_abs_diff"] for d in check["max_abs_diff"].values())
    assert check["passed"] is True and check["tolerance"] == 1e-4
    assert meta["PreProcess"]["crop_size"] == [SIZE, SIZE] and meta["PreProcess"]["resize_short"] == 37
    assert meta["versions"]["paddlepaddle"] and meta["versions"]["onnxruntime"] and meta["versions"]["paddle2onnx"]
    assert not list(r50_export.parent.glob(".r50.*")), "temporary folders left behind"

    by_backend = {}
    for backend in ("paddle", "onnxruntime"):
        preds = cli_json(capsys, ["predict", "--model_dir", str(r50_export), "-i", str(images), "--topk", "0",
                                  "--backend", backend, "--json"])
        assert len(preds) == 3
        for p in preds:
            assert len(p["class_ids"]) == 102 and sorted(p["class_ids"]) == list(range(102))
            assert sum(p["scores"]) == pytest.approx(1.0, abs=1e-5)
            assert p["scores"] == sorted(p["scores"], reverse=True)
            assert p["label_names"] == [str(i) for i in p["class_ids"]]
        by_backend[backend] = preds
    for a, b in zip(by_backend["paddle"], by_backend["onnxruntime"]):
        assert a["image"] == b["image"]
        scores_a = dict(zip(a["class_ids"], a["scores"]))  # class by class, not as sorted lists
        scores_b = dict(zip(b["class_ids"], b["scores"]))
        assert np.allclose([scores_a[c] for c in range(102)], [scores_b[c] for c in range(102)], atol=1e-4)


def test_mobilenetv3_export_from_config_uses_valid_transforms_and_flowers_names(tmp_path, ckpts, images, capsys):
    out = tmp_path / "mv3"
    result = cli_json(capsys, [
        "export", "-c", str(CONFIGS / "MobileNetV3_large_x1_0_finetune.yaml"),
        "-o", f"pretrained_model={ckpts['MobileNetV3_large_x1_0']}", "-o", f"image_shape=[3, {SIZE}, {SIZE}]",
        "-o", "VALID.transforms.1.ResizeImage.resize_short=36", "-o", f"VALID.transforms.2.CropImage.size={SIZE}",
        "--output_path", str(out), "--json"])
    assert result["architecture"] == "MobileNetV3_large_x1_0" and result["class_num"] == 102
    assert result["max_abs_diff"]["paddle_inference"] < 1e-4
    meta = yaml.safe_load((out / "inference.yml").read_text())
    assert meta["label_source"] == "flowers102"
    assert meta["label_names"][0] == "pink primrose" and meta["label_names"][101] == "blackberry lily"
    pre = meta["PreProcess"]
    assert pre["resize_short"] == 36 and pre["crop_size"] == [SIZE, SIZE] and pre["channel_order"] == "RGB"
    assert pre["mean"] == [0.485, 0.456, 0.406] and pre["std"] == [0.229, 0.224, 0.225]
    assert meta["self_check"]["max_abs_logit"] > 0.1  # the check compared real logits, not ~0

    preds = cli_json(capsys, ["predict", "--model_dir", str(out), "-i", str(images / "img_0.jpg"), "--topk", "5", "--json"])
    names = (Path(__file__).resolve().parents[1] / "clasflow" / "data" / "flowers102_names.txt").read_text().splitlines()
    (p,) = preds
    assert len(p["class_ids"]) == 5 and p["label_names"] == [names[i] for i in p["class_ids"]]

    # the exported model computes what the checkpoint does on the preprocessed image
    import paddle

    from clasflow.models import build_model, load_pretrained
    from clasflow.predict import build_preprocess, load_image, softmax

    model = build_model("MobileNetV3_large_x1_0", class_num=102)
    load_pretrained(model, ckpts["MobileNetV3_large_x1_0"], strict_head=True)
    model.eval()
    x = load_image(images / "img_0.jpg", build_preprocess(meta))[None]
    with paddle.no_grad():
        probs = softmax(model(paddle.to_tensor(x)).numpy())[0]
    assert np.allclose(p["scores"], probs[p["class_ids"]], atol=1e-5)

    # human-readable output names the image and the flowers
    capsys.readouterr()
    assert main(["predict", "--model_dir", str(out), "-i", str(images / "img_0.jpg"), "--topk", "2"]) == 0
    line = capsys.readouterr().out
    assert "img_0.jpg" in line and names[p["class_ids"][0]] in line


def test_class_count_mismatch_fails_clearly(tmp_path, ckpts, capsys):
    out = tmp_path / "bad"
    err = cli_error(capsys, ["export", "--model", "MobileNetV3_large_x1_0", "--pretrained_model",
                             str(ckpts["MobileNetV3_large_x1_0"]), "--class_num", "1000", "--image_size", str(SIZE),
                             "--output_path", str(out)])
    assert "102 classes" in err and "1000" in err
    assert not out.exists() and not list(tmp_path.glob(".bad*"))
    err = cli_error(capsys, ["export", "-c", str(CONFIGS / "MobileNetV3_large_x1_0_finetune.yaml"),
                             "-o", f"pretrained_model={ckpts['MobileNetV3_large_x1_0']}", "-o", "classes_num=1000",
                             "--output_path", str(out)])
    assert "102 classes" in err and "classes_num=1000" in err


def test_distillation_checkpoint_exports_the_student(tmp_path, images, capsys):
    import paddle

    from clasflow.models import build_model
    from clasflow.predict import PaddleRunner, build_preprocess, load_image, load_meta

    paddle.seed(1)
    pair = build_model("ResNet50_vd_distill_MobileNetV3_large_x1_0", class_num=102)
    rng = np.random.default_rng(1)
    for tensor in pair.student.state_dict().values():  # O(1) student logits
        a = tensor.numpy()
        if a.ndim in (2, 4):
            fan_in = a.shape[0] if a.ndim == 2 else a[0].size
            tensor.set_value(rng.normal(0, np.sqrt(2.0 / fan_in), a.shape).astype("float32"))
    (tmp_path / "distill").mkdir()
    paddle.save(pair.state_dict(), str(tmp_path / "distill" / "ppcls.pdparams"))
    assert any(k.startswith("teacher.") for k in pair.state_dict())

    out = tmp_path / "student"
    result = cli_json(capsys, [
        "export", "-c", str(CONFIGS / "R50_vd_distill_MV3_large_x1_0.yaml"),
        "-o", f"pretrained_model={tmp_path / 'distill' / 'ppcls'}", "-o", f"image_shape=[3, {SIZE}, {SIZE}]",
        "-o", "VALID.transforms.1.ResizeImage.resize_short=36", "-o", f"VALID.transforms.2.CropImage.size={SIZE}",
        "--output_path", str(out), "--json"])
    assert result["architecture"] == "MobileNetV3_large_x1_0"
    meta = load_meta(out)
    assert meta["source_architecture"] == "ResNet50_vd_distill_MobileNetV3_large_x1_0"
    assert (out / "inference.pdiparams").stat().st_size < 40e6  # the student's ~21 MB, not the teacher's ~95 MB

    pair.eval()
    x = load_image(images / "img_1.png", build_preprocess(meta))[None]
    runner = PaddleRunner(out)
    got = runner.run(x)
    runner.close()
    with paddle.no_grad():
        teacher, student = pair(paddle.to_tensor(x))
    assert np.abs(got - student.numpy()).max() < 1e-4
    assert np.abs(got - teacher.numpy()).max() > 1e-3


def test_self_check_failure_leaves_nothing(tmp_path, ckpts, monkeypatch):
    import clasflow.export as export
    from clasflow.errors import ClasflowError

    real = export.paddle_inference_outputs
    monkeypatch.setattr(export, "paddle_inference_outputs", lambda d, b: real(d, b) + 0.5)
    with pytest.raises(ClasflowError, match="self-check failed"):
        export.export_model(arch="MobileNetV3_large_x1_0", output_path=tmp_path / "out",
                            pretrained_model=ckpts["MobileNetV3_large_x1_0"], image_size=SIZE)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_export_refuses_to_replace_a_foreign_folder(tmp_path, ckpts, capsys):
    (tmp_path / "precious").mkdir()
    (tmp_path / "precious" / "notes.txt").write_text("keep me")
    err = cli_error(capsys, ["export", "--model", "MobileNetV3_large_x1_0", "--pretrained_model",
                             str(ckpts["MobileNetV3_large_x1_0"]), "--image_size", str(SIZE),
                             "--output_path", str(tmp_path / "precious")])
    assert "not a clasflow export" in err
    assert (tmp_path / "precious" / "notes.txt").read_text() == "keep me"


def test_predict_errors_name_the_path(tmp_path, r50_export, capsys):
    missing = tmp_path / "nowhere"
    assert str(missing) in cli_error(capsys, ["predict", "--model_dir", str(missing), "-i", str(tmp_path)])
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"this is not a jpeg")
    err = cli_error(capsys, ["predict", "--model_dir", str(r50_export), "-i", str(bad)])
    assert str(bad) in err
    err = cli_error(capsys, ["predict", "--model_dir", str(r50_export), "-i", str(tmp_path / "none.jpg")])
    assert "none.jpg" in err
    partial = tmp_path / "partial"
    partial.mkdir()
    for name in ("inference.yml", "inference.json"):
        (partial / name).write_bytes((r50_export / name).read_bytes())
    err = cli_error(capsys, ["predict", "--model_dir", str(partial), "-i", str(bad)])
    assert "inference.pdiparams" in err
    err = cli_error(capsys, ["predict", "--model_dir", str(partial), "-i", str(bad), "--backend", "onnxruntime"])
    assert "--onnx" in err or "inference.pdiparams" in err


def test_label_names_file(tmp_path):
    from clasflow.errors import ClasflowError
    from clasflow.export import flowers102_names, read_label_names

    assert len(flowers102_names()) == 102 and len(set(flowers102_names())) == 102
    (tmp_path / "plain.txt").write_text("cat\ndog\n")
    (tmp_path / "ids.txt").write_text("1 dog\n0 cat\n")
    assert read_label_names(tmp_path / "plain.txt", 2) == ["cat", "dog"]
    assert read_label_names(tmp_path / "ids.txt", 2) == ["cat", "dog"]
    assert read_label_names("flowers102", 102)[1] == "hard-leaved pocket orchid"
    with pytest.raises(ClasflowError, match="2 names for 3 classes"):
        read_label_names(tmp_path / "plain.txt", 3)


def _first_activation_scale(int8_prefix: Path) -> float:
    """The range the quantized program holds for its input image (the first conv's input)."""
    import paddle

    from clasflow.quantize import program_ops

    ops = program_ops(int8_prefix.with_suffix(".pdmodel"))
    (feed,) = [op["outputs"]["Out"][0] for op in ops if op["type"] == "feed"]
    (first,) = [op for op in ops if op["type"] == "quantize_linear" and op["inputs"]["X"] == [feed]]
    paddle.enable_static()
    try:
        with paddle.pir_utils.OldIrGuard():
            scope = paddle.static.Scope()
            with paddle.static.scope_guard(scope):
                paddle.static.load_inference_model(str(int8_prefix), paddle.static.Executor(paddle.CPUPlace()))
                return float(np.array(scope.find_var(first["inputs"]["Scale"][0]).get_tensor()).reshape(-1)[0])
    finally:
        paddle.disable_static()


def test_int8_export_is_calibrated_on_the_real_images(tmp_path, ckpts, capsys):
    from clasflow.predict import PaddleRunner, load_image_list, load_meta
    from clasflow.quantize import quantized_op_counts

    data = tmp_path / "data"
    (data / "png").mkdir(parents=True)
    rng = np.random.default_rng(7)
    for i in range(12):  # image i spans pixel values 0..(140 + 10 i): every image has its own max
        cv2.imwrite(str(data / "png" / f"{i:02d}.png"), rng.integers(0, 141 + 10 * i, (40, 48, 3), dtype=np.uint8))
    (data / "train_list.txt").write_text("".join(f"png/{i:02d}.png {i % 3}\n" for i in range(12)))
    out = tmp_path / "mv3"
    result = cli_json(capsys, ["export", "--model", "MobileNetV3_large_x1_0", "--pretrained_model",
                               str(ckpts["MobileNetV3_large_x1_0"]), "--image_size", str(SIZE), "--output_path", str(out),
                               "--int8_calib", str(data / "train_list.txt"), "--int8_images", "6", "--json"])
    assert result["files"][-3:] == ["int8/inference.pdmodel", "int8/inference.pdiparams", "inference.yml"]
    meta = load_meta(out)
    int8 = meta["int8"]
    assert result["int8"] == int8["self_check"]
    assert int8["files"] == {"model": "int8/inference.pdmodel", "params": "int8/inference.pdiparams"}
    assert int8["quantized_ops"] == quantized_op_counts(out / "int8" / "inference.pdmodel")
    assert int8["quantized_ops"]["quantize_linear"] > 50  # every conv/linear input of MobileNetV3
    assert int8["calibration"]["images"] == 6 and int8["calibration"]["source"] == str(data / "train_list.txt")
    # each calibration file's sha256, so the benchmark can hold these images out of its agreement
    hashes = int8["calibration"]["files_sha256"]
    assert len(hashes) == 6 and len(set(hashes)) == 6 and all(len(h) == 64 for h in hashes)
    check = int8["self_check"]
    assert check["images"] == 6 and check["held_out"] is True
    assert check["max_abs_diff_vs_quantized_dygraph"] <= check["allowed_abs_diff"]

    # the ranges come from the calibration images: the input's range is their max |pixel|
    images, _ = load_image_list(data / "train_list.txt", None, meta, limit=12)
    calib, held_out = images[0::2], images[1::2]
    assert _first_activation_scale(out / "int8" / "inference") == pytest.approx(float(np.abs(calib).max()), rel=1e-6)
    assert float(np.abs(held_out).max()) != pytest.approx(float(np.abs(calib).max()), rel=1e-6)

    # the recorded top-1 agreement is what the two exported models give on the held-out images
    fp32 = PaddleRunner(out).run(held_out)
    q = PaddleRunner(out / "int8", onednn=False,
                     meta={"files": {"model": "inference.pdmodel", "params": "inference.pdiparams"}}).run(held_out)
    agreement = float((fp32.argmax(1) == q.argmax(1)).mean())
    assert check["top1_agreement_vs_fp32"] == agreement
    assert agreement >= 0.5  # chance is 1/102; a broken quantization agrees on ~nothing
    assert 0 < np.abs(q - fp32).max() < np.abs(fp32).max()  # quantized: close to fp32, not equal

    # the benchmark finds it: paddle-trt int8 converts int8/ (here it gets as far as needing a GPU build)
    import paddle

    entry = _bench_paddle_trt_int8(out, tmp_path, capsys)
    if paddle.is_compiled_with_cuda():
        assert entry["status"] != "failed", entry
        if entry["status"] == "ok":
            assert entry["options"]["source_model"].endswith("int8/inference.pdmodel")
    else:
        assert entry["status"] == "skipped" and "CPU build" in entry["reason"]
    # an int8 model that inference.yml names but that is gone is a failure, not a skip
    (out / "int8" / "inference.pdiparams").unlink()
    entry = _bench_paddle_trt_int8(out, tmp_path, capsys)
    assert entry["status"] == "failed" and "int8/inference.pdiparams" in entry["reason"]


def _bench_paddle_trt_int8(model_dir: Path, tmp_path: Path, capsys) -> dict:
    bench = tmp_path / "bench.json"
    capsys.readouterr()
    main(["benchmark", "--model_dir", str(model_dir), "--backend", "paddle-trt", "--device", "gpu", "--precision", "int8",
          "--json", str(bench)])
    (entry,) = json.loads(bench.read_text())["results"]
    return entry


def test_pipeline_export_keeps_fp32_when_int8_fails(tmp_path, ckpts, images, monkeypatch, capsys):
    import clasflow.quantize as quantize
    from clasflow.export import export_model
    from clasflow.predict import load_meta

    def broken(net, images):
        raise RuntimeError("observer exploded")

    monkeypatch.setattr(quantize, "calibrate", broken)
    kwargs = dict(arch="MobileNetV3_large_x1_0", pretrained_model=ckpts["MobileNetV3_large_x1_0"], image_size=SIZE,
                  int8_calib=images)
    with pytest.raises(RuntimeError, match="observer exploded"):  # asked for on the command line: an error
        export_model(output_path=tmp_path / "strict", **kwargs)
    assert not (tmp_path / "strict").exists()
    result = export_model(output_path=tmp_path / "out", int8_required=False, **kwargs)  # the pipeline's export step
    meta = load_meta(tmp_path / "out")
    assert meta["int8"] == {"error": "RuntimeError: observer exploded"} and not (tmp_path / "out" / "int8").exists()
    assert meta["self_check"]["passed"] and "no int8 model: RuntimeError" in result.summary()
    entry = _bench_paddle_trt_int8(tmp_path / "out", tmp_path, capsys)
    assert entry["status"] == "failed" and "could not build the int8 model" in entry["reason"]


def test_int8_export_bad_input_names_the_option(tmp_path, ckpts, capsys):
    base = ["export", "--model", "MobileNetV3_large_x1_0", "--pretrained_model", str(ckpts["MobileNetV3_large_x1_0"]),
            "--image_size", str(SIZE), "--output_path", str(tmp_path / "out")]
    err = cli_error(capsys, base + ["--int8_calib", str(tmp_path / "missing.txt")])
    assert "--int8_calib" in err and "missing.txt" in err
    err = cli_error(capsys, base + ["--int8_data_dir", str(tmp_path)])
    assert "--int8_data_dir needs --int8_calib" in err
    err = cli_error(capsys, base + ["--int8_images", "8"])
    assert "--int8_images needs --int8_calib" in err
    (tmp_path / "list.txt").write_text("a.jpg 0\n")
    err = cli_error(capsys, base + ["--int8_calib", str(tmp_path / "list.txt"), "--int8_data_dir", str(tmp_path / "gone")])
    assert "--int8_data_dir" in err and "gone" in err
    (tmp_path / "empty.txt").write_text("")
    err = cli_error(capsys, base + ["--int8_calib", str(tmp_path / "empty.txt")])
    assert "empty.txt" in err
    write_images(tmp_path / "imgs", n=2)
    err = cli_error(capsys, base + ["--int8_calib", str(tmp_path / "imgs"), "--int8_images", "0"])
    assert "--int8_images" in err
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out*"))

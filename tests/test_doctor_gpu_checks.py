"""The doctor's TensorRT checks on this machine (no GPU, no TensorRT): the libraries are imported
before a GPU is needed, so the GPU image's build (no GPU) proves they load, and Paddle's
compiled-in TensorRT major is compared with the one it loads; the DALI check hands its batch to
Paddle as training does."""

from __future__ import annotations

import importlib.machinery
import sys
import types

import pytest

from clasflow import doctor

pytestmark = pytest.mark.skipif(doctor.gpu_count() > 0, reason="a GPU is present: these are the no-GPU answers")


def _fake_tensorrt(root, body: str):
    (root / "tensorrt").mkdir()
    (root / "tensorrt" / "__init__.py").write_text(body)


def test_a_tensorrt_that_fails_to_import_fails_without_a_gpu(tmp_path, monkeypatch):
    _fake_tensorrt(tmp_path, 'raise ImportError("libnvinfer.so.10: cannot open shared object file")\n')
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    row = doctor.run_check("tensorrt")  # its own subprocess, as the doctor runs it
    assert row.status == "failed" and row.detail == "ImportError: libnvinfer.so.10: cannot open shared object file"


def test_a_tensorrt_that_imports_is_not_applicable_without_a_gpu(tmp_path, monkeypatch):
    _fake_tensorrt(tmp_path, '__version__ = "10.13.3.9"\n')
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    row = doctor.run_check("tensorrt")
    assert row.status == "n/a"
    assert row.detail == "TensorRT 10.13.3.9 imports (libnvinfer loads); no GPU: the CUDA driver reports no device"


def test_without_tensorrt_installed_the_row_is_not_applicable():
    assert doctor.run_check("tensorrt").detail == "no GPU, and TensorRT is not installed"
    assert doctor.run_check("paddle-trt").detail == "no GPU, and Paddle is a build without paddle.tensorrt"


@pytest.fixture
def paddle_tensorrt(tmp_path, monkeypatch):
    """A `paddle.tensorrt` package as Paddle's CUDA builds have it; its export module written by the test."""
    import paddle  # noqa: F401 (the fake's parent)

    package = types.ModuleType("paddle.tensorrt")
    package.__spec__ = importlib.machinery.ModuleSpec("paddle.tensorrt", None, is_package=True)
    package.__spec__.submodule_search_locations = package.__path__ = [str(tmp_path)]
    monkeypatch.setitem(sys.modules, "paddle.tensorrt", package)
    monkeypatch.delitem(sys.modules, "paddle.tensorrt.export", raising=False)
    return tmp_path / "export.py"


def _trt_versions(monkeypatch, compiled, runtime):
    import paddle.inference

    monkeypatch.setattr(paddle.inference, "get_trt_compile_version", lambda: compiled)
    monkeypatch.setattr(paddle.inference, "get_trt_runtime_version", lambda: runtime)


def test_paddle_trt_import_fails_the_row_without_a_gpu(paddle_tensorrt, monkeypatch):
    paddle_tensorrt.write_text('raise OSError("libnvinfer_plugin.so: cannot open shared object file")\n')
    _trt_versions(monkeypatch, (10, 13, 3), (10, 13, 3))
    assert doctor.run_one("paddle-trt") == {"status": "failed",
                                            "detail": "OSError: libnvinfer_plugin.so: cannot open shared object file"}


def test_paddle_trt_compares_the_tensorrt_majors(paddle_tensorrt, monkeypatch):
    paddle_tensorrt.write_text("")
    _trt_versions(monkeypatch, (10, 13, 3), (8, 6, 1))
    assert doctor.run_one("paddle-trt") == {
        "status": "failed", "detail": "RuntimeError: Paddle was built with TensorRT 10.13.3 but loads TensorRT 8.6.1: "
                                      "install TensorRT 10 (the major Paddle was built with)"}
    _trt_versions(monkeypatch, (10, 5, 0), (10, 13, 3))  # same major: fine
    assert doctor.run_one("paddle-trt") == {
        "status": "n/a", "detail": "paddle.tensorrt loads; Paddle built with TensorRT 10.5.0, runs 10.13.3; "
                                   "no GPU: the CUDA driver reports no device"}
    _trt_versions(monkeypatch, (10, 13, 3), (0, 0, 0))  # what Paddle answers when it cannot open libnvinfer.so
    assert doctor.run_one("paddle-trt")["detail"] == "RuntimeError: Paddle (built with TensorRT 10.13.3) cannot open libnvinfer.so"


def test_trt_versions():
    assert doctor.trt_versions((10, 13, 3), (10, 13, 3)) == "Paddle built with TensorRT 10.13.3, runs 10.13.3"
    with pytest.raises(RuntimeError, match=r"built with TensorRT 8\.6\.1 but loads TensorRT 10\.13\.3: install TensorRT 8 "):
        doctor.trt_versions((8, 6, 1), (10, 13, 3))


def test_dali_check_hands_the_batch_to_paddle_as_training_does(monkeypatch):
    """The DALI check goes through the loader's DLPack hand-off (on a GPU: the GPU batch itself,
    no copy to the host), the same function training batches take."""
    from clasflow.data import dali_pipeline

    handed = []
    real = dali_pipeline._to_paddle
    monkeypatch.setattr(dali_pipeline, "_to_paddle", lambda batch: handed.append(real(batch)) or handed[-1])
    result = doctor.run_one("dali")
    assert result["status"] == "ok" and result["detail"].endswith("handed to Paddle through DLPack (Place(cpu))")
    assert [tuple(t.shape) for t in handed] == [(1, 48, 64, 3)]

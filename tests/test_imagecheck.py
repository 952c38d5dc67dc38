"""One CUDA major across the GPU image, read from the pinned wheels themselves
(clasflow.imagecheck): metadata Requires-Dist and the ELF NEEDED entries of their libraries.

The wheels are downloaded once from PyPI into $CLASFLOW_WHEEL_CACHE (default
~/.cache/clasflow/wheels, about 0.8 GB); later runs read the cache.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from clasflow import imagecheck

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheels() -> imagecheck.Result:
    return imagecheck.check_wheels(imagecheck.read_recipe(), imagecheck.default_cache())


def facts(result: imagecheck.Result, package: str) -> list[str]:
    return [e.what for e in result.evidence if e.package.lower() == package]


@pytest.mark.slow
def test_the_gpu_image_is_one_cuda_major(wheels):
    recipe = wheels.recipe
    assert recipe.cuda_major == 12 and recipe.tensorrt_major == 10
    assert wheels.problems == []
    assert {"paddlepaddle-gpu", "onnxruntime-gpu", "tensorrt-cu12-bindings", "nvidia-dali-cuda120",
            "cuda-bindings"} <= set(recipe.pins)
    ort = facts(wheels, "onnxruntime-gpu")  # the libraries that failed with the CUDA 13 build
    assert "onnxruntime/capi/libonnxruntime_providers_cuda.so NEEDED libcudart.so.12" in ort
    assert "onnxruntime/capi/libonnxruntime_providers_tensorrt.so NEEDED libnvinfer.so.10" in ort
    assert any(f.startswith("Requires-Dist nvidia-cuda-runtime-cu12") for f in ort)
    assert any(f.startswith("Requires-Dist nvidia-nvimgcodec-cu12") for f in facts(wheels, "nvidia-dali-cuda120"))
    bindings = facts(wheels, "tensorrt-cu12-bindings")
    assert "tensorrt_bindings/tensorrt.so NEEDED libnvinfer_plugin.so.10" in bindings
    # not on PyPI as wheels: named, and checked by the image build (clasflow.imagecheck installed)
    assert set(wheels.build_only) == {"paddlepaddle-gpu", "tensorrt-cu12", "tensorrt-cu12-libs"}
    assert facts(wheels, "paddlepaddle-gpu") == ["index https://www.paddlepaddle.org.cn/packages/stable/cu126/"]
    assert recipe.trt_links == {"libnvinfer.so": "libnvinfer.so.10", "libnvinfer_plugin.so": "libnvinfer_plugin.so.10"}


@pytest.mark.slow
def test_another_cuda_major_is_refused(wheels, tmp_path):
    cuda13 = dataclasses.replace(wheels.recipe, cuda_image="nvidia/cuda:13.0.1-cudnn-runtime-ubuntu24.04",
                                 cuda_version="13.0.1")
    problems = imagecheck.mismatches(cuda13, wheels.evidence)
    assert any("onnxruntime-gpu 1.26.0: onnxruntime/capi/libonnxruntime_providers_cuda.so NEEDED libcudart.so.12 "
               "-> CUDA 12, but the image is CUDA 13.0.1" in p for p in problems)
    assert {p.split(" ")[0] for p in problems} >= {"onnxruntime-gpu", "nvidia-dali-cuda120", "cuda-bindings",
                                                   "paddlepaddle-gpu"}
    # paddlepaddle-gpu has no wheel on PyPI: the cuNNN of the only index it is installed from says its CUDA
    assert ("paddlepaddle-gpu 3.3.1: index https://www.paddlepaddle.org.cn/packages/stable/cu126/ -> CUDA 12, but the "
            "image is CUDA 13.0.1 (nvidia/cuda:13.0.1-cudnn-runtime-ubuntu24.04); pin a build for CUDA 13") in problems
    source = (REPO / "images" / "gpu.Dockerfile").read_text()
    assert "ARG PADDLE_INDEX=https://www.paddlepaddle.org.cn/packages/stable/cu126/\n" in source
    cu130 = tmp_path / "gpu.Dockerfile"  # Paddle's CUDA 13 builds in the CUDA 12 image
    cu130.write_text(source.replace("/stable/cu126/", "/stable/cu130/"))
    recipe = imagecheck.read_recipe(cu130)
    assert imagecheck.mismatches(recipe, imagecheck.index_evidence(recipe)) == [
        f"paddlepaddle-gpu 3.3.1: index https://www.paddlepaddle.org.cn/packages/stable/cu130/ -> CUDA 13, but the image "
        f"is CUDA {recipe.cuda_version} ({recipe.cuda_image}); pin a build for CUDA 12"]
    trt8 = dataclasses.replace(wheels.recipe, tensorrt_version="8.6.1")
    assert any("libnvinfer.so.10 -> TensorRT 10, but the image pins TensorRT 8.6.1" in p
               for p in imagecheck.mismatches(trt8, wheels.evidence))


def test_the_recipe_is_read_from_the_dockerfile(tmp_path):
    recipe = imagecheck.read_recipe()
    assert recipe.cuda_image.startswith("nvidia/cuda:12.") and recipe.tensorrt_version.startswith("10.")
    assert recipe.pins["onnxruntime-gpu"] == "1.26.0" and "nvidia-dali-cuda120" in recipe.pins
    assert imagecheck.link_problems(recipe, {"libnvinfer.so.10", "libnvinfer_plugin.so.10"}) == []
    source = (REPO / "images" / "gpu.Dockerfile").read_text()
    without = tmp_path / "gpu.Dockerfile"
    without.write_text(source.replace(" \\\n && ln -s libnvinfer_plugin.so.10 libnvinfer_plugin.so", "")
                       .replace("ln -s libnvinfer.so.10 libnvinfer.so", "ln -s libnvinfer.so.8 libnvinfer.so"))
    problems = imagecheck.link_problems(imagecheck.read_recipe(without), set())
    assert len(problems) == 2
    assert "links libnvinfer.so -> libnvinfer.so.8; expected libnvinfer.so.10" in problems[0]
    assert "creates no libnvinfer_plugin.so" in problems[1] and "ln -s libnvinfer_plugin.so.10" in problems[1]
    broken = tmp_path / "bad.Dockerfile"
    broken.write_text(source.replace("ARG CUDA_IMAGE=nvidia/cuda:", "ARG CUDA_IMAGE=ubuntu:"))
    with pytest.raises(imagecheck.ImageCheckError, match="CUDA_IMAGE"):
        imagecheck.read_recipe(broken)


def test_metadata_and_names_say_the_cuda_major():
    meta = ("Name: x\nRequires-Dist: numpy\nRequires-Dist: nvidia-cuda-runtime~=13.0; extra == \"cuda\"\n"
            "Requires-Dist: nvidia-cudnn-cu13~=9.0; extra == \"cudnn\"\n")
    found = imagecheck.package_evidence("onnxruntime-gpu", "1.31.1", meta, [])
    assert [(e.what, e.cuda) for e in found] == [
        ('Requires-Dist nvidia-cuda-runtime~=13.0; extra == "cuda"', 13),
        ('Requires-Dist nvidia-cudnn-cu13~=9.0; extra == "cudnn"', 13)]
    assert [e.cuda for e in imagecheck.package_evidence("nvidia-dali-cuda130", "2.4.0", "", [])] == [13]
    assert [e.cuda for e in imagecheck.package_evidence("cuda-bindings", "12.9.10", "", [])] == [12]
    assert imagecheck.package_evidence("numpy", "2.4.6", "Requires-Dist: packaging\n", []) == []


def test_installed_packages_here():
    """This venv: DALI, its codecs and cuda-bindings are CUDA 12; TensorRT is not installed."""
    here = imagecheck.check_installed("12.6.3", "10.13.3.9")
    assert here.problems == ["no TensorRT libraries installed (tensorrt-cuNN-libs)"]
    assert {"nvidia-dali-cuda120", "cuda-bindings"} <= set(here.recipe.pins)
    wrong = imagecheck.check_installed("13.0.1", "10.13.3.9")
    assert any(p.startswith("nvidia-dali-cuda120 2.4.0: name -> CUDA 12, but the image is CUDA 13.0.1") for p in wrong.problems)


def test_cli_exit_codes(capsys):
    assert imagecheck.main(["installed", "--cuda", "12.6.3", "--tensorrt", "10.13.3.9"]) == 1
    assert "no TensorRT libraries installed" in capsys.readouterr().err
    assert imagecheck.main(["wheels", "--dockerfile", str(REPO / "missing.Dockerfile")]) == 2

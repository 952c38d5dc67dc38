"""One CUDA major across the GPU image, read from the packages' own files, not from a table.

The recipe (images/gpu.Dockerfile) names a CUDA base image and pins the GPU wheels; the
packages themselves say which CUDA they are built for:

* their metadata: ``Requires-Dist`` on ``nvidia-*-cu12`` / ``nvidia-cuda-runtime~=13.0`` (any extra);
* their name when the vendor puts the CUDA build in it (``nvidia-dali-cuda120``, ``tensorrt-cu12-libs``);
* the ELF ``NEEDED`` entries of the libraries they ship (``libcudart.so.12``, ``libcublas.so.12``,
  ``libnvrtc``/``libnvJitLink``; and ``libnvinfer*.so.10`` for the TensorRT major);
* the ``cuNNN`` of the only index the recipe installs them from (``--index-url`` of Paddle's
  ``.../stable/cu126/``: paddlepaddle-gpu is built for CUDA 12).

Two ways to run it:

``python -m clasflow.imagecheck wheels`` (CI, no Docker): the recipe's pins and the lock's CUDA
packages are downloaded once (``pip download --no-deps``, cached in ``--cache``) and read. A pin
with no wheel on PyPI (paddlepaddle-gpu is on Paddle's index, TensorRT's libraries on NVIDIA's)
is reported as ``build-only``: its files are read by the image build, its index's ``cuNNN`` here.

``python -m clasflow.imagecheck installed --cuda 12.6.3 --tensorrt 10.13.3.9`` (the image build):
the same reading of every installed CUDA package, plus every CUDA/TensorRT library they need must
resolve in this image, and the unversioned TensorRT names Paddle dlopens (``libnvinfer.so``,
``libnvinfer_plugin.so``) must exist and point at the pinned TensorRT major.

Either fails (exit 1) on any mismatch, naming the package, the file and what it needs.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import asdict, dataclass, field
from email.parser import Parser
from pathlib import Path
from typing import Iterable, Iterator

from clasflow.fsutil import read_utf8, write_text_atomic

REPO = Path(__file__).resolve().parents[1]
# the image is Ubuntu 24.04 (glibc 2.39), x86_64
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_24_x86_64", "manylinux2014_x86_64")
PYTHON = "3.11"
# The unversioned names Paddle opens: dlopen("libnvinfer.so") in paddle/phi/backends/dynload/tensorrt.cc,
# ctypes.CDLL('libnvinfer_plugin.so') in python/paddle/tensorrt/converter.py.
PADDLE_TRT_NAMES = ("libnvinfer.so", "libnvinfer_plugin.so")
# sonames whose number is the CUDA major (libcufft.so.11, libcurand.so.10 are not: their own majors)
CUDA_SONAME = re.compile(r"^lib(cudart|cublas|cublasLt|nvrtc|nvJitLink)\.so\.(\d+)$")
TRT_SONAME = re.compile(r"^lib(nvinfer|nvinfer_plugin|nvonnxparser)\.so\.(\d+)$")
# nvidia-cudnn-cu12, tensorrt-cu12-libs, nvidia-dali-cuda120, cuda-bindings-cu12 (the CUDA build in the name)
NAME_CUDA = re.compile(r"-cu(?:da)?(\d{2})\d?(?=-|$)")
# an index of builds for one CUDA: Paddle's https://www.paddlepaddle.org.cn/packages/stable/cu126/
INDEX_CUDA = re.compile(r"/cu(\d{2})\d(?:/|$)")
# nvidia-cuda-runtime~=13.0 (CUDA 13's unsuffixed wheels)
UNSUFFIXED = re.compile(r"^(nvidia-cuda-runtime|nvidia-cuda-nvrtc|nvidia-cublas|nvidia-nvjitlink)\s*[~=]=\s*(\d+)")


class ImageCheckError(Exception):
    pass


@dataclass
class Evidence:
    package: str
    version: str
    what: str  # "Requires-Dist nvidia-cuda-runtime-cu12~=12.0", "name", "onnxruntime/capi/x.so NEEDED libcudart.so.12"
    cuda: int | None = None
    tensorrt: int | None = None


@dataclass
class Recipe:
    """What images/gpu.Dockerfile asks for."""

    cuda_image: str
    cuda_version: str
    tensorrt_version: str
    pins: dict[str, str]  # package -> version, the Dockerfile's pins and the lock's CUDA packages
    trt_links: dict[str, str] = field(default_factory=dict)  # link name -> target, in tensorrt_libs
    indexes: dict[str, str] = field(default_factory=dict)  # package -> the --index-url it comes from

    @property
    def cuda_major(self) -> int:
        return int(self.cuda_version.split(".")[0])

    @property
    def tensorrt_major(self) -> int:
        return int(self.tensorrt_version.split(".")[0])


@dataclass
class Result:
    recipe: Recipe
    evidence: list[Evidence]
    build_only: dict[str, str]  # package -> why it is checked at the image build only
    problems: list[str]
    downloaded_bytes: int = 0

    def as_dict(self) -> dict:
        return {"ok": not self.problems, "problems": self.problems, "recipe": asdict(self.recipe),
                "build_only": self.build_only, "downloaded_bytes": self.downloaded_bytes,
                "evidence": [asdict(e) for e in self.evidence]}


# ------------------------------------------------------------------ the recipe


def _is_cuda_package(name: str) -> bool:
    name = name.lower()
    return bool(NAME_CUDA.search(name)) or name in ("cuda-bindings", "onnxruntime-gpu", "paddlepaddle-gpu")


def read_lock(path: Path) -> dict[str, str]:
    pins = {}
    for line in read_utf8(path, ImageCheckError, "the lock file").splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, version = line.split("==", 1)
            pins[name.strip().lower()] = version.strip()
    return pins


def read_recipe(dockerfile: Path = REPO / "images" / "gpu.Dockerfile",
                lock: Path = REPO / "requirements.lock") -> Recipe:
    """The CUDA base image, TensorRT version, pinned GPU packages and TensorRT links of the recipe."""
    text = read_utf8(dockerfile, ImageCheckError, "the GPU image recipe")
    args = dict(re.findall(r"^ARG (\w+)=(\S+)$", text, re.M))
    image = args.get("CUDA_IMAGE", "")
    m = re.match(r"nvidia/cuda:(\d+\.\d+(?:\.\d+)?)-", image)
    if not m:
        raise ImageCheckError(f"{dockerfile}: ARG CUDA_IMAGE={image!r} is not an nvidia/cuda:<version>-... image")
    if "TENSORRT_VERSION" not in args:
        raise ImageCheckError(f"{dockerfile}: no ARG TENSORRT_VERSION=<version>")
    pins = {name: version for name, version in read_lock(lock).items() if _is_cuda_package(name)}
    for name, var in re.findall(r'"([A-Za-z0-9_.-]+)==\$\{(\w+)\}"', text):
        if var not in args:
            raise ImageCheckError(f"{dockerfile}: {name}==${{{var}}} but ARG {var} has no default")
        pins[name.lower()] = args[var]
    links: dict[str, str] = {}
    indexes: dict[str, str] = {}
    for run in re.findall(r"^RUN (.*?)(?<!\\)$", text, re.M | re.S):
        if "tensorrt_libs" in run:
            links.update({link: target for target, link in re.findall(r"ln -sf? (\S+) (\S+)", run)})
        index = re.search(r'--index-url[ =]"?([^"\s]+)"?', run)
        if index:
            url = re.sub(r"\$\{(\w+)\}", lambda v: args.get(v.group(1), v.group(0)), index.group(1))
            indexes.update({name.lower(): url for name, _ in re.findall(r'"([A-Za-z0-9_.-]+)==\$\{(\w+)\}"', run)})
    return Recipe(image, m.group(1), args["TENSORRT_VERSION"], dict(sorted(pins.items())), links, indexes)


# ------------------------------------------------------------------ reading a package's files


def needed(data: bytes) -> list[str]:
    """The DT_NEEDED entries of an ELF shared object (pyelftools); [] when it is not ELF."""
    from elftools.common.exceptions import ELFError
    from elftools.elf.dynamic import DynamicSection
    from elftools.elf.elffile import ELFFile

    try:
        elf = ELFFile(io.BytesIO(data))
        return [t.needed for s in elf.iter_sections() if isinstance(s, DynamicSection)
                for t in s.iter_tags() if t.entry.d_tag == "DT_NEEDED"]
    except (ELFError, ValueError, OSError):
        return []


def soname(data: bytes) -> str | None:
    from elftools.common.exceptions import ELFError
    from elftools.elf.dynamic import DynamicSection
    from elftools.elf.elffile import ELFFile

    try:
        elf = ELFFile(io.BytesIO(data))
        for s in elf.iter_sections():
            if isinstance(s, DynamicSection):
                for t in s.iter_tags():
                    if t.entry.d_tag == "DT_SONAME":
                        return t.soname
    except (ELFError, ValueError, OSError):
        return None
    return None


def is_library(path: str) -> bool:
    return bool(re.search(r"\.so(\.\d+)*$", path))


def package_evidence(name: str, version: str, metadata: str, libraries: Iterable[tuple[str, bytes]]) -> list[Evidence]:
    """What one package says about its CUDA (and TensorRT) major: name, Requires-Dist, NEEDED."""
    out: list[Evidence] = []
    m = NAME_CUDA.search(name.lower())
    if m:
        out.append(Evidence(name, version, "name", cuda=int(m.group(1))))
    if name.lower() == "cuda-bindings":
        out.append(Evidence(name, version, "version (cuda-bindings N.x is built for CUDA N)", cuda=int(version.split(".")[0])))
    for req in Parser().parsestr(metadata).get_all("Requires-Dist") or []:
        dist = re.split(r"[\s;\[<>=~!]", req, maxsplit=1)[0].lower()
        tag = NAME_CUDA.search(dist) if dist.startswith("nvidia-") else None
        bare = UNSUFFIXED.match(req.lower())
        if tag:
            out.append(Evidence(name, version, f"Requires-Dist {req}", cuda=int(tag.group(1))))
        elif bare:
            out.append(Evidence(name, version, f"Requires-Dist {req}", cuda=int(bare.group(2))))
    for path, data in libraries:
        for lib in needed(data):
            if (c := CUDA_SONAME.match(lib)):
                out.append(Evidence(name, version, f"{path} NEEDED {lib}", cuda=int(c.group(2))))
            elif (t := TRT_SONAME.match(lib)):
                out.append(Evidence(name, version, f"{path} NEEDED {lib}", tensorrt=int(t.group(2))))
    return out


def index_evidence(recipe: Recipe) -> list[Evidence]:
    """What the recipe's indexes say: a package installed only from a ``.../cuNNN/`` index is built for CUDA NN."""
    return [Evidence(name, recipe.pins.get(name, "?"), f"index {url}", cuda=int(m.group(1)))
            for name, url in recipe.indexes.items() if (m := INDEX_CUDA.search(url))]


def wheel_contents(wheel: Path) -> tuple[str, list[str], Iterator[tuple[str, bytes]]]:
    """(METADATA text, every file name, the shared libraries as (name, bytes), read lazily)."""
    z = zipfile.ZipFile(wheel)
    names = z.namelist()
    meta = next((n for n in names if n.endswith(".dist-info/METADATA")), None)
    if meta is None:
        raise ImageCheckError(f"{wheel}: no .dist-info/METADATA")
    libs = ((n, z.read(n)) for n in names if is_library(n))
    return z.read(meta).decode("utf-8", "replace"), names, libs


def mismatches(recipe: Recipe, evidence: list[Evidence]) -> list[str]:
    problems = []
    for e in evidence:
        if e.cuda is not None and e.cuda != recipe.cuda_major:
            problems.append(f"{e.package} {e.version}: {e.what} -> CUDA {e.cuda}, but the image is CUDA "
                            f"{recipe.cuda_version} ({recipe.cuda_image}); pin a build for CUDA {recipe.cuda_major}")
        if e.tensorrt is not None and e.tensorrt != recipe.tensorrt_major:
            problems.append(f"{e.package} {e.version}: {e.what} -> TensorRT {e.tensorrt}, but the image pins TensorRT "
                            f"{recipe.tensorrt_version}")
    return problems


def link_problems(recipe: Recipe, trt_sonames: set[str]) -> list[str]:
    """The recipe links every name Paddle opens to a TensorRT library of the pinned major."""
    problems = []
    for name in PADDLE_TRT_NAMES:
        target = recipe.trt_links.get(name)
        expected = f"{name}.{recipe.tensorrt_major}"
        if target is None:
            problems.append(f"the recipe creates no {name} in tensorrt_libs (Paddle opens it by that name): "
                            f"add `ln -s {expected} {name}` after installing TensorRT")
        elif target != expected:
            problems.append(f"the recipe links {name} -> {target}; expected {expected} (TensorRT {recipe.tensorrt_version})")
        elif trt_sonames and target not in trt_sonames:
            problems.append(f"{name} -> {target}, but TensorRT's libraries are {sorted(trt_sonames)}")
    return problems


# ------------------------------------------------------------------ CI: the wheels


def default_cache() -> Path:
    """$CLASFLOW_WHEEL_CACHE, else ~/.cache/clasflow/wheels (kept between CI runs on one machine)."""
    if os.environ.get("CLASFLOW_WHEEL_CACHE"):
        return Path(os.environ["CLASFLOW_WHEEL_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "clasflow" / "wheels"


def download(name: str, version: str, cache: Path) -> Path | None:
    """The wheel of name==version for the image's platform, downloaded once into ``cache``; None when
    the index has no wheel of it (only an sdist, or the package lives on a vendor index)."""
    marker = cache / f"{name.lower()}=={version}.wheel"  # holds the wheel's file name once downloaded
    if marker.is_file() and (cache / marker.read_text().strip()).is_file():
        return cache / marker.read_text().strip()
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache, prefix=".download-") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--python-version", PYTHON,
               "--implementation", "cp", *[a for p in PLATFORMS for a in ("--platform", p)],
               "--disable-pip-version-check", "-q", "-d", tmp, f"{name}=={version}"]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            if "No matching distribution" in proc.stderr:
                return None
            raise ImageCheckError(f"pip download {name}=={version} failed: {proc.stderr.strip()[-800:]}")
        wheels = list(Path(tmp).glob("*.whl"))
        if len(wheels) != 1:
            raise ImageCheckError(f"pip download {name}=={version} gave {[p.name for p in Path(tmp).iterdir()]}")
        os.replace(wheels[0], cache / wheels[0].name)
    write_text_atomic(marker, wheels[0].name + "\n")
    return cache / wheels[0].name


def check_wheels(recipe: Recipe, cache: Path, progress=lambda text: None) -> Result:
    evidence = index_evidence(recipe)
    build_only: dict[str, str] = {}
    before = sum(p.stat().st_size for p in cache.glob("*.whl")) if cache.is_dir() else 0
    trt_sonames: set[str] = set()
    for name, version in recipe.pins.items():
        progress(f"{name}=={version}")
        wheel = download(name, version, cache)
        if wheel is None:
            build_only[name] = f"no {name}=={version} wheel on PyPI (a vendor index): checked when the image is built"
            evidence += package_evidence(name, version, "", [])  # its name still says its CUDA
            continue
        metadata, _, libs = wheel_contents(wheel)
        found = package_evidence(name, version, metadata, libs)
        evidence += found
        trt_sonames |= {e.what.rsplit(" ", 1)[1] for e in found if e.tensorrt is not None}
    after = sum(p.stat().st_size for p in cache.glob("*.whl"))
    problems = mismatches(recipe, evidence) + link_problems(recipe, trt_sonames)
    return Result(recipe, evidence, build_only, problems, downloaded_bytes=after - before)


# ------------------------------------------------------------------ the image build: installed packages


def library_dirs() -> list[Path]:
    dirs = [Path(d) for d in os.environ.get("LD_LIBRARY_PATH", "").split(":") if d]
    try:
        out = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True, timeout=30).stdout
        dirs += sorted({Path(line.rsplit("=>", 1)[1].strip()).parent for line in out.splitlines() if "=>" in line})
    except (OSError, subprocess.SubprocessError):
        pass
    return dirs


def check_installed(cuda_version: str, tensorrt_version: str, cuda_image: str = "(this image)") -> Result:
    """Every installed CUDA package read from its files; their CUDA/TensorRT libraries must resolve here."""
    from importlib import metadata as md

    recipe = Recipe(cuda_image, cuda_version, tensorrt_version, {})
    evidence: list[Evidence] = []
    problems: list[str] = []
    dirs = library_dirs()
    for dist in md.distributions():
        name = dist.metadata["Name"]
        if not _is_cuda_package(name):
            continue
        recipe.pins[name.lower()] = dist.version
        files = [Path(str(dist.locate_file(f))) for f in (dist.files or []) if is_library(str(f))]
        libs = [(str(f), f.read_bytes()) for f in files if f.is_file() and not f.is_symlink()]
        found = package_evidence(name, dist.version, dist.read_text("METADATA") or "", libs)
        evidence += found
        for path, data in libs:
            for lib in needed(data):
                if (CUDA_SONAME.match(lib) or TRT_SONAME.match(lib) or lib.startswith("libcudnn")) and not any(
                        (d / lib).exists() for d in [Path(path).parent, *dirs]):
                    problems.append(f"{name}: {path} needs {lib}, which this image does not provide "
                                    f"(searched its folder, LD_LIBRARY_PATH and ldconfig)")
    trt_dir = next((Path(str(d.locate_file("tensorrt_libs"))) for d in md.distributions()
                    if (d.metadata["Name"] or "").lower().startswith("tensorrt") and d.metadata["Name"].lower().endswith("-libs")), None)
    if trt_dir is None or not trt_dir.is_dir():
        problems.append("no TensorRT libraries installed (tensorrt-cuNN-libs)")
    else:
        for name in PADDLE_TRT_NAMES:
            link = trt_dir / name
            if not link.exists():
                problems.append(f"{link} is missing: Paddle opens {name} by that name")
                continue
            recipe.trt_links[name] = os.readlink(link) if link.is_symlink() else name
            target_soname = soname(link.read_bytes())
            if target_soname != f"{name}.{recipe.tensorrt_major}":
                problems.append(f"{link} is {target_soname}, expected {name}.{recipe.tensorrt_major}")
    problems = mismatches(recipe, evidence) + problems
    return Result(recipe, evidence, {}, sorted(set(problems), key=problems.index))


# ------------------------------------------------------------------ CLI


def print_result(result: Result) -> None:
    r = result.recipe
    print(f"GPU image: {r.cuda_image} (CUDA {r.cuda_version}), TensorRT {r.tensorrt_version}")
    by_package: dict[str, list[Evidence]] = {}
    for e in result.evidence:
        by_package.setdefault(e.package.lower(), []).append(e)
    for name, version in r.pins.items():
        found = by_package.get(name, [])
        majors = sorted({f"CUDA {e.cuda}" for e in found if e.cuda} | {f"TensorRT {e.tensorrt}" for e in found if e.tensorrt})
        note = f"  [{result.build_only[name]}]" if name in result.build_only else ""
        print(f"  {name}=={version}: {', '.join(majors) or 'no CUDA dependency found'} ({len(found)} facts){note}")
    for link, target in r.trt_links.items():
        print(f"  tensorrt_libs/{link} -> {target}")
    if result.downloaded_bytes:
        print(f"downloaded {result.downloaded_bytes / 1e6:.0f} MB")
    for p in result.problems:
        print(f"PROBLEM: {p}", file=sys.stderr)
    print("ok: one CUDA major" if not result.problems else f"{len(result.problems)} problem(s)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m clasflow.imagecheck", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    w = sub.add_parser("wheels", help="download the recipe's pinned wheels (cached) and read them")
    w.add_argument("--dockerfile", type=Path, default=REPO / "images" / "gpu.Dockerfile")
    w.add_argument("--lock", type=Path, default=REPO / "requirements.lock")
    w.add_argument("--cache", type=Path, default=None, help=f"wheel cache (default {default_cache()})")
    i = sub.add_parser("installed", help="read the installed packages of this image")
    i.add_argument("--cuda", required=True, help="the image's CUDA version (nvidia/cuda sets $CUDA_VERSION)")
    i.add_argument("--tensorrt", required=True, help="the pinned TensorRT version")
    for p in (w, i):
        p.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args(argv)
    try:
        if args.mode == "wheels":
            result = check_wheels(read_recipe(args.dockerfile, args.lock), args.cache or default_cache())
        else:
            result = check_installed(args.cuda, args.tensorrt)
    except ImageCheckError as exc:
        print(f"clasflow.imagecheck: error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result.as_dict(), indent=2))
    else:
        print_result(result)
    return 1 if result.problems else 0


if __name__ == "__main__":
    sys.exit(main())

"""Container image references: one setting shared by `make images`, the Helm chart and the pipeline.

The names and the tag live in ``images/images.env`` (plain ``KEY=VALUE`` lines, also read by
make). The pipeline compile step calls :func:`image` for its ``base_image``::

    image("gpu")           -> "ghcr.io/clasflow/clasflow-gpu:0.1.0"
    image("clasflow-cpu")  -> "ghcr.io/clasflow/clasflow-cpu:0.1.0"

``CLASFLOW_IMAGE_REGISTRY`` and ``CLASFLOW_IMAGE_TAG`` in the environment win over the file, and
``CLASFLOW_IMAGES_ENV`` points at another file. Inside an installed package (a container) where
the repository's file is absent, the built-in defaults below apply; a test keeps them equal to
the file.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

ENV_FILE_VAR = "CLASFLOW_IMAGES_ENV"
REGISTRY_VAR = "CLASFLOW_IMAGE_REGISTRY"
TAG_VAR = "CLASFLOW_IMAGE_TAG"

REPO_ENV_FILE = Path(__file__).resolve().parents[1] / "images" / "images.env"

# Same values as images/images.env (tests/test_dockerfiles.py checks they agree).
DEFAULTS: dict[str, str] = {
    "IMAGE_REGISTRY": "ghcr.io/clasflow",
    "IMAGE_TAG": "0.1.0",
    "IMAGE_GPU": "clasflow-gpu",
    "IMAGE_CPU": "clasflow-cpu",
    "IMAGE_MLFLOW": "clasflow-mlflow",
}

# Short names accepted by image(): "gpu" -> IMAGE_GPU, ...
_KINDS = {"gpu": "IMAGE_GPU", "cpu": "IMAGE_CPU", "mlflow": "IMAGE_MLFLOW"}


def parse_env_file(text: str) -> dict[str, str]:
    """Parses ``KEY=VALUE`` lines; blank lines and ``#`` comments are skipped, quotes stripped."""
    values: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key:
            raise ValueError(f"line {number}: expected KEY=VALUE, got {raw!r}")
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key] = value
    return values


def settings(env_file: str | os.PathLike[str] | None = None) -> dict[str, str]:
    """The effective settings: defaults, then the env file, then the environment overrides."""
    path = Path(env_file or os.environ.get(ENV_FILE_VAR) or REPO_ENV_FILE)
    values = dict(DEFAULTS)
    if path.is_file():
        values.update(parse_env_file(path.read_text(encoding="utf-8")))
    elif env_file or os.environ.get(ENV_FILE_VAR):
        raise FileNotFoundError(f"image settings file not found: {path}")
    if os.environ.get(REGISTRY_VAR):
        values["IMAGE_REGISTRY"] = os.environ[REGISTRY_VAR]
    if os.environ.get(TAG_VAR):
        values["IMAGE_TAG"] = os.environ[TAG_VAR]
    return values


def image(name: str, env_file: str | os.PathLike[str] | None = None) -> str:
    """The full reference ``REGISTRY/NAME:TAG`` of image ``name``.

    ``name`` is a kind ("gpu", "cpu", "mlflow") or an image name ("clasflow-gpu"); any other
    name is taken as a bare image name in the same registry with the same tag.
    """
    if not name or any(c in name for c in ":@ \t/"):
        raise ValueError(f"not an image name: {name!r}")
    values = settings(env_file)
    key = _KINDS.get(name.lower())
    image_name = values[key] if key else name
    registry = values["IMAGE_REGISTRY"].rstrip("/")
    return f"{registry}/{image_name}:{values['IMAGE_TAG']}"


PINNED = re.compile(r"^(?P<repo>[a-z0-9][a-z0-9._\-/:]*[a-z0-9])@sha256:[0-9a-f]{64}$")


def image_name(ref: str) -> str:
    """The bare image name of a reference: ``reg.io/ml/clasflow-gpu@sha256:...`` -> ``clasflow-gpu``."""
    last = ref.split("@", 1)[0].rsplit("/", 1)[-1]
    return last.split(":", 1)[0]


def pinned_ref(name: str, ref: str) -> str:
    """``ref`` when it is ``REGISTRY/<name>@sha256:<64 hex>``; otherwise a ValueError saying why."""
    if not PINNED.match(ref):
        raise ValueError(f"image {name}: {ref!r} is not pinned by digest (expected REGISTRY/{name}@sha256:<64 hex>)")
    if image_name(ref) != name:
        raise ValueError(f"image {name}: {ref!r} names another image ({image_name(ref)})")
    return ref


def read_pins(path: str | os.PathLike[str]) -> dict[str, str]:
    """The ``NAME=REGISTRY/NAME@sha256:...`` lines `make release` writes, each checked by pinned_ref."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image pins file not found: {path} (written by `make release`)")
    try:
        pins = parse_env_file(path.read_text(encoding="utf-8"))
        return {name: pinned_ref(name, ref) for name, ref in pins.items()}
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None


if __name__ == "__main__":  # `python -m clasflow.images gpu` prints the reference
    import sys

    for arg in sys.argv[1:] or list(_KINDS):
        print(image(arg))

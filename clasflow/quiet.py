"""Keep Paddle's import-time noise out of every command's and step's output.

Importing paddle prints a block about ``OMP_NUM_THREADS`` whenever it is above 1 (clasflow sets
it to the core count on purpose) and warns "No ccache found" (only relevant when compiling C++
extensions, which clasflow never does). Both are silenced; everything else Paddle prints passes.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
import warnings

NOISE = ("WARNING: OMP_NUM_THREADS set to", "PLEASE USE OMP_NUM_THREADS WISELY.")


class _DropNoise:
    """A stderr that drops Paddle's OMP_NUM_THREADS lines and writes the rest through."""

    def __init__(self, stream):
        self.stream = stream

    def write(self, text: str) -> int:
        if text.startswith(NOISE):
            return len(text)
        return self.stream.write(text)

    def __getattr__(self, name):
        return getattr(self.stream, name)


class _QuietPaddle(importlib.abc.MetaPathFinder):
    """Finds ``paddle`` once and runs its import with the noise filtered from stderr."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "paddle":
            return None
        sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None:
            return spec
        exec_module = spec.loader.exec_module

        def quiet_exec(module):
            real, sys.stderr = sys.stderr, _DropNoise(sys.stderr)
            try:
                exec_module(module)
            finally:
                sys.stderr = real

        spec.loader.exec_module = quiet_exec
        return spec


def quiet_paddle_import() -> None:
    """Install the filters (idempotent; nothing to do when paddle is already imported)."""
    warnings.filterwarnings("ignore", message="No ccache found", category=UserWarning)
    if "paddle" not in sys.modules and not any(isinstance(f, _QuietPaddle) for f in sys.meta_path):
        sys.meta_path.insert(0, _QuietPaddle())

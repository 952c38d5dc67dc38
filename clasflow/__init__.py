"""clasflow: PaddleClas's flowers102 quick start as reproducible, containerized stages."""

from clasflow.quiet import quiet_paddle_import

__version__ = "0.1.0"

quiet_paddle_import()

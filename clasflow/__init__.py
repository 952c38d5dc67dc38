"""clasflow: PaddleClas's flowers102 quick start as reproducible, containerized stages."""

__version__ = "0.1.0"

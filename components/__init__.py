"""KFP v2 lightweight components, one per stage. Each body only calls into `clasflow.steps`.

Every component runs in the project's image (`clasflow.images.image`), which has clasflow
installed, so `install_kfp_package=False` and no pip installs happen at run time.
"""

from components.benchmark import benchmark
from components.dataset import prepare_dataset
from components.doctor import doctor
from components.download import download_weights
from components.evaluate import evaluate
from components.export import export
from components.parity import parity
from components.report import report
from components.train import distill, finetune, train_from_scratch

__all__ = ["benchmark", "distill", "doctor", "download_weights", "evaluate", "export", "finetune", "parity", "prepare_dataset",
           "report", "train_from_scratch"]

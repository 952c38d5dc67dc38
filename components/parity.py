from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Metrics, Model, Output

from components.image import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def parity(config: str, dataset: Input[Dataset], model: Input[Model], inference_model: Input[Model], profile: str,
           image_size: int, backends: str, precisions: str, parity_fp32: float, parity_fp16: float, parity_int8: float,
           experiment: str, pipeline_run: str, result: Output[Artifact], metrics: Output[Metrics],
           mlflow_journal: Output[Artifact]):
    """The export scored through every backend and precision on the validation list, gated against the
    dygraph top-1 of the same checkpoint (fails beyond parity_fp32/fp16/int8 points; skips only warn)."""
    from clasflow.steps import Profile, check_parity, parity_step

    report, step_metrics = parity_step(config, dataset.path, model.path, inference_model.path, result.path,
                                       Profile(profile, image_size, experiment=experiment, pipeline_run=pipeline_run),
                                       {"fp32": parity_fp32, "fp16": parity_fp16, "int8": parity_int8}, backends, precisions,
                                       journal_dir=mlflow_journal.path)
    for key, value in step_metrics.items():
        metrics.log_metric(key, value)
    check_parity(report)

from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Model, Output

from components.image import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def evaluate(config: str, dataset: Input[Dataset], model: Input[Model], profile: str, image_size: int,
             experiment: str, pipeline_run: str, metrics: Output[Metrics]):
    """Valid top1/top5 of a trained model's best checkpoint."""
    from clasflow.steps import Profile, eval_step

    prof = Profile(profile, image_size, experiment=experiment, pipeline_run=pipeline_run)
    for key, value in eval_step(config, dataset.path, model.path, prof).items():
        metrics.log_metric(f"valid_{key}", value)

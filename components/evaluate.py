from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Metrics, Model, Output

from components.image import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def evaluate(config: str, dataset: Input[Dataset], model: Input[Model], profile: str, image_size: int,
             experiment: str, pipeline_run: str, metrics: Output[Metrics], mlflow_journal: Output[Artifact]):
    """Valid top1/top5 of a trained model's best checkpoint (and its MLflow journal)."""
    from clasflow.steps import Profile, eval_step, task_metrics

    prof = Profile(profile, image_size, experiment=experiment, pipeline_run=pipeline_run)
    for key, value in task_metrics(eval_step(config, dataset.path, model.path, prof, mlflow_journal.path)).items():
        metrics.log_metric(key, value)

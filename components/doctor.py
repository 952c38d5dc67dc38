from kfp import dsl
from kfp.dsl import Artifact, Metrics, Output

from components.image import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def doctor(require_gpu: bool, pipeline_run: str, result: Output[Artifact], metrics: Output[Metrics],
           mlflow_journal: Output[Artifact]):
    """`clasflow doctor` on the GPU node before any training (fails the run when a check fails)."""
    from clasflow.steps import Profile, doctor_step, task_metrics

    step_metrics = doctor_step(result.path, require_gpu, Profile(pipeline_run=pipeline_run), journal_dir=mlflow_journal.path)
    for key, value in task_metrics(step_metrics).items():
        metrics.log_metric(key, value)

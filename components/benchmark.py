from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Metrics, Model, Output

from components.image import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def benchmark(inference_model: Input[Model], dataset: Input[Dataset], backends: str, precisions: str, batch_sizes: str,
              profile: str, experiment: str, pipeline_run: str, result: Output[Artifact], metrics: Output[Metrics],
              mlflow_journal: Output[Artifact]):
    """Latency/throughput per backend, precision and batch size (TensorRT where there is a GPU);
    fails when nothing useful was measured (its counts and reasons are recorded first)."""
    from clasflow.steps import Profile, benchmark_step, task_metrics

    step_metrics = benchmark_step(inference_model.path, result.path, dataset.path, backends, precisions, batch_sizes,
                                  profile=Profile(profile, experiment=experiment, pipeline_run=pipeline_run),
                                  journal_dir=mlflow_journal.path)
    for key, value in task_metrics(step_metrics).items():
        metrics.log_metric(key, value)

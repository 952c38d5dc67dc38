from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Model, Output

from components.image import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def benchmark(inference_model: Input[Model], dataset: Input[Dataset], backends: str, precisions: str, batch_sizes: str,
              pipeline_run: str, result: Output[Artifact]):
    """Latency/throughput per backend, precision and batch size (TensorRT where there is a GPU)."""
    from clasflow.steps import Profile, benchmark_step

    benchmark_step(inference_model.path, result.path, dataset.path, backends, precisions, batch_sizes,
                   profile=Profile(pipeline_run=pipeline_run))

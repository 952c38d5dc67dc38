from kfp import dsl
from kfp.dsl import Artifact, Output

from components.image import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def doctor(require_gpu: bool, pipeline_run: str, result: Output[Artifact]):
    """`clasflow doctor` on the GPU node before any training (fails the run when a check fails)."""
    from clasflow.steps import Profile, doctor_step

    doctor_step(result.path, require_gpu, profile=Profile(pipeline_run=pipeline_run))

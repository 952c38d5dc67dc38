from kfp import dsl
from kfp.dsl import Dataset, Input, Model, Output

from components.image import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def export(config: str, dataset: Input[Dataset], model: Input[Model], profile: str, image_size: int,
           pipeline_run: str, inference_model: Output[Model]):
    """Paddle inference model + ONNX + inference.yml (the student, for distillation), and int8/
    calibrated on training images."""
    from clasflow.steps import Profile, export_step

    result = export_step(config, dataset.path, model.path, inference_model.path, Profile(profile, image_size, pipeline_run=pipeline_run))
    inference_model.metadata["max_abs_diff"] = result["max_abs_diff"]
    int8 = result["meta"].get("int8")
    if int8:
        inference_model.metadata["int8_top1_agreement_vs_fp32"] = int8["self_check"]["top1_agreement_vs_fp32"]

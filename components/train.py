"""Training components: from scratch, fine-tuning from pretrained weights, and distillation.

Input names differ from the config's keys (``profile_epochs``, not ``epochs``): Kubeflow's MLflow
plugin logs a task's inputs as parameters of the run clasflow logs the config into, and MLflow
refuses a parameter logged twice with two values. Output metrics are ``task.*`` (`task_metrics`).
"""

from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Model, Output

from components.image import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def train_from_scratch(config: str, dataset: Input[Dataset], profile: str, image_size: int, profile_epochs: int, batch_size: int,
                       num_workers: int, experiment: str, pipeline_run: str, model: Output[Model], metrics: Output[Metrics],
                       gpus: int = 1, training_seed: int = 0):
    from clasflow.steps import Profile, task_metrics, train_step

    prof = Profile(profile, image_size, profile_epochs, batch_size, num_workers, experiment, pipeline_run, training_seed)
    for key, value in task_metrics(train_step(config, dataset.path, model.path, prof, gpus=gpus)).items():
        metrics.log_metric(key, value)


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def finetune(config: str, dataset: Input[Dataset], pretrained: Input[Model], profile: str, image_size: int, profile_epochs: int,
             batch_size: int, num_workers: int, experiment: str, pipeline_run: str, model: Output[Model],
             metrics: Output[Metrics], gpus: int = 1, training_seed: int = 0):
    from clasflow.steps import Profile, task_metrics, train_step

    prof = Profile(profile, image_size, profile_epochs, batch_size, num_workers, experiment, pipeline_run, training_seed)
    for key, value in task_metrics(train_step(config, dataset.path, model.path, prof, [pretrained.path], gpus=gpus)).items():
        metrics.log_metric(key, value)


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def distill(config: str, dataset: Input[Dataset], teacher: Input[Model], student: Input[Model], profile: str,
            image_size: int, profile_epochs: int, batch_size: int, num_workers: int, experiment: str, pipeline_run: str,
            model: Output[Model], metrics: Output[Metrics], gpus: int = 1, training_seed: int = 0):
    from clasflow.steps import Profile, task_metrics, train_step

    prof = Profile(profile, image_size, profile_epochs, batch_size, num_workers, experiment, pipeline_run, training_seed)
    for key, value in task_metrics(train_step(config, dataset.path, model.path, prof, [teacher.path, student.path], gpus=gpus)).items():
        metrics.log_metric(key, value)

"""The flowers102 quick-start DAG: dataset -> weights -> five trainings -> distillation -> eval
-> export -> benchmark and the parity gate -> report.

One pipeline serves the full GPU run (the defaults) and the small demo (`make quickstart`):
parameters choose the profile (image size, epochs, batch size), the data and zoo sources, and
which configs run. `build_pipeline(cluster=True)` is what gets compiled: it adds the cluster
settings (GPU resource, node selector and tolerations, CPU/memory requests, the Secret and
ConfigMap names, an image pull secret: all run parameters, see CLUSTER_PARAMETERS; only the
image references are fixed at compile time); the local run uses `cluster=False`.

    python -m pipelines.flowers_quickstart compile   # writes pipelines/flowers_quickstart.yaml
    python -m pipelines.flowers_quickstart compile --images images/release.env   # digests (make release)
    python -m pipelines.flowers_quickstart local     # runs it here with kfp.local (see --help)
"""


import argparse
import json
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import yaml
from kfp import compiler, dsl, kubernetes

import components as c
from clasflow.fsutil import write_text_atomic
from clasflow.images import image_name, pinned_ref, read_pins

PACKAGE = Path(__file__).with_suffix(".yaml")
RELEASE_PINS = Path(__file__).resolve().parents[1] / "images" / "release.env"  # written by `make release`
PIPELINE_NAME = "flowers-quickstart"
STUDENT_ARCH = "MobileNetV3_large_x1_0"
ARCHS = ("ResNet50_vd", "ResNet50_vd_ssld", STUDENT_ARCH)
FINETUNES = (  # (config, pretrained weights, pipeline flag)
    ("ResNet50_vd_finetune", "ResNet50_vd", "run_finetune"),
    ("ResNet50_vd_ssld_finetune", "ResNet50_vd_ssld", "run_ssld"),
    ("MobileNetV3_large_x1_0_finetune", STUDENT_ARCH, "run_mobilenetv3"),
)
TEACHER_CONFIG = "ResNet50_vd_ssld_random_erasing_finetune"
DISTILL_CONFIG = "R50_vd_distill_MV3_large_x1_0"

# The demo profile: what `make quickstart` passes. The target task is 10 classes of generated
# digit glyphs split per class like flowers102 (10 train, 10 valid, the rest the unlabeled extra
# data of the distillation: here 30); the demo zoo (clasflow.demo_zoo, built once per machine) is
# pretrained on 26 letter glyphs, so fine-tuning starts from features that transfer and the
# report's lesson rows can check what the quick start teaches.
DEMO_ARGUMENTS = {
    "profile": "demo", "image_size": 24, "epochs": 5, "batch_size": 16, "num_workers": 0,
    "dataset_source": "fixture:glyphs?classes=10&per_class=50&size=30&train=10&valid=10", "zoo_url": "demo",
    "benchmark_backends": "paddle,onnxruntime,tensorrt", "benchmark_precisions": "fp32", "benchmark_batch_sizes": "1,4",
}


# Cluster settings that differ between clusters are run parameters (defaults below), so a cluster
# needs no recompile: `kfp run create ... gpu_node_selector='{"pool": "a100"}' gpu_task_memory=48Gi`.
# The defaults fit a common GPU node (8 vCPU, 32 GiB, one GPU) with room for the kubelet and the
# GPU Operator's daemons. The label nvidia.com/gpu.present=true is set by the GPU Operator
# (GPU feature discovery), not by the device plugin alone.
CLUSTER_PARAMETERS: dict[str, object] = {
    "gpu_resource": "nvidia.com/gpu",
    "gpu_node_selector": {"nvidia.com/gpu.present": "true"},
    "gpu_tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
    "gpu_task_cpu": "6",
    "gpu_task_memory": "24Gi",
    # The GPU task's memory limit, which is also what bounds its /dev/shm: a memory-backed emptyDir
    # with no size of its own (kfp-kubernetes' empty_dir_mount and KFP's driver take only a constant
    # size there), whose pages count against the container's memory limit. Same or above the request.
    "gpu_task_memory_limit": "28Gi",
    "cpu_task_cpu": "1",
    "cpu_task_memory": "4Gi",
    "credentials_secret": "clasflow-credentials",
    "config_map": "clasflow-config",
    # None: no pull secret. Not "": KFP's driver refuses an empty secret name; a null optional
    # parameter is what it skips (kfp-kubernetes set_image_pull_secrets with a parameter).
    "image_pull_secret": None,
}


@dataclass(frozen=True)
class ClusterSettings:
    """What the compile step fixes (kfp-kubernetes takes no run parameter for these).

    ``images`` maps an image name (``clasflow-gpu``) to the reference the executors use, e.g. a
    digest from `make release`; empty: ``clasflow.images.image(name)``.
    """

    secret_env: tuple[str, ...] = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
    optional_secret_env: tuple[str, ...] = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")
    config_env: tuple[str, ...] = ("MLFLOW_TRACKING_URI", "CLASFLOW_S3_ENDPOINT", "CLASFLOW_ARTIFACT_ROOT", "AWS_DEFAULT_REGION")
    images: tuple[tuple[str, str], ...] = ()
    retries: int = 3  # GPU tasks: a preempted or evicted pod is retried, resuming from the stored checkpoint
    retry_backoff: str = "60s"  # the first wait, multiplied by retry_backoff_factor each time, for at most retry_backoff_max
    retry_backoff_factor: float = 2.0
    retry_backoff_max: str = "3600s"


@dataclass(frozen=True)
class _Cluster:
    settings: ClusterSettings
    params: dict  # CLUSTER_PARAMETERS name -> pipeline parameter channel


def _apply(task: dsl.PipelineTask, cluster: _Cluster | None, gpu: bool, gpus=1) -> dsl.PipelineTask:
    """`gpus`: the GPU request of a GPU task (an int or the `gpus` pipeline parameter)."""
    if cluster is None:
        return task
    s, p = cluster.settings, cluster.params
    task.container_spec.image = dict(s.images).get(image_name(task.container_spec.image), task.container_spec.image)
    kubernetes.use_secret_as_env(task, p["credentials_secret"], {k: k for k in s.secret_env})
    kubernetes.use_secret_as_env(task, p["credentials_secret"], {k: k for k in s.optional_secret_env}, optional=True)
    kubernetes.use_config_map_as_env(task, p["config_map"], {k: k for k in s.config_env})
    kubernetes.set_image_pull_secrets(task, [p["image_pull_secret"]])
    if gpu:
        task.set_env_variable("CLASFLOW_REQUIRE_GPU", "1")  # a task whose GPU is not visible fails instead of using the CPU
        task.set_accelerator_type(p["gpu_resource"]).set_accelerator_limit(gpus)
        task.set_retry(s.retries, backoff_duration=s.retry_backoff, backoff_factor=s.retry_backoff_factor,
                       backoff_max_duration=s.retry_backoff_max)
        kubernetes.add_node_selector_json(task, p["gpu_node_selector"])
        kubernetes.add_toleration_json(task, p["gpu_tolerations"])
        # No size_limit: /dev/shm is bounded by the memory limit below, a run parameter (see CLUSTER_PARAMETERS).
        kubernetes.empty_dir_mount(task, volume_name="dshm", mount_path="/dev/shm", medium="Memory")
        task.set_cpu_request(p["gpu_task_cpu"]).set_memory_request(p["gpu_task_memory"])
        task.set_memory_limit(p["gpu_task_memory_limit"])
    else:
        task.set_cpu_request(p["cpu_task_cpu"]).set_memory_request(p["cpu_task_memory"])
    return task


DEFAULT_CLUSTER = ClusterSettings()


def build_pipeline(cluster: bool, settings: ClusterSettings = DEFAULT_CLUSTER):
    """The pipeline function; with `cluster`, tasks carry the GPU/secret/shm/resource settings."""
    c_ = CLUSTER_PARAMETERS

    @dsl.pipeline(name=PIPELINE_NAME, description="PaddleClas flowers102 quick start: six experiments, distillation, export, TensorRT benchmark")
    def flowers_quickstart(
        profile: str = "full",
        image_size: int = 224,
        epochs: int = 20,
        batch_size: int = 0,
        num_workers: int = -1,
        dataset_source: str = "official",
        zoo_url: str = "",
        cache_root: str = "",
        experiment: str = "flowers102-quickstart",
        seed: int = 0,
        run_scratch: bool = True,
        run_finetune: bool = True,
        run_ssld: bool = True,
        run_mobilenetv3: bool = True,
        run_random_erasing_and_distill: bool = True,
        benchmark_backends: str = "paddle,paddle-trt,onnxruntime,onnxruntime-trt,tensorrt",
        benchmark_precisions: str = "fp32,fp16,int8",
        benchmark_batch_sizes: str = "1,4",
        tolerance: float = 0.01,
        gpus: int = 1,
        parity_fp32: float = 0.3,
        parity_fp16: float = 0.5,
        parity_int8: float = 1.0,
        gpu_resource: str = c_["gpu_resource"],
        gpu_node_selector: dict = c_["gpu_node_selector"],
        gpu_tolerations: list = c_["gpu_tolerations"],
        gpu_task_cpu: str = c_["gpu_task_cpu"],
        gpu_task_memory: str = c_["gpu_task_memory"],
        gpu_task_memory_limit: str = c_["gpu_task_memory_limit"],
        cpu_task_cpu: str = c_["cpu_task_cpu"],
        cpu_task_memory: str = c_["cpu_task_memory"],
        credentials_secret: str = c_["credentials_secret"],
        config_map: str = c_["config_map"],
        image_pull_secret: Optional[str] = c_["image_pull_secret"],
    ):
        params = dict(gpu_resource=gpu_resource, gpu_node_selector=gpu_node_selector, gpu_tolerations=gpu_tolerations,
                      gpu_task_cpu=gpu_task_cpu, gpu_task_memory=gpu_task_memory,
                      gpu_task_memory_limit=gpu_task_memory_limit, cpu_task_cpu=cpu_task_cpu,
                      cpu_task_memory=cpu_task_memory, credentials_secret=credentials_secret, config_map=config_map,
                      image_pull_secret=image_pull_secret)
        k8s = _Cluster(settings, params) if cluster else None
        run_id = dsl.PIPELINE_JOB_ID_PLACEHOLDER
        # The report runs last, after everything else, also when a training failed (it then shows
        # what finished); it reads the runs from MLflow, so it needs no artifacts.
        report = _apply(c.report(profile=profile, experiment=experiment, pipeline_run=run_id, tolerance=tolerance), k8s, gpu=False)
        with dsl.ExitHandler(report, name="quickstart"):
            data = _apply(c.prepare_dataset(source=dataset_source, cache_root=cache_root), k8s, gpu=False)
            dataset = data.outputs["dataset"]
            weights = {}
            for arch in ARCHS:
                task = c.download_weights(architecture=arch, zoo_url=zoo_url, cache_root=cache_root)
                weights[arch] = _apply(task.set_display_name(f"weights {arch}"), k8s, gpu=False).outputs["weights"]
            # The node's stack checked before any GPU hour is spent; every GPU task waits for it. It gets
            # the trainings' GPU count, so its NCCL all-reduce runs over as many GPUs as they will use.
            check = _apply(c.doctor(require_gpu=cluster, pipeline_run=run_id).set_display_name("doctor"), k8s, gpu=True,
                           gpus=gpus)
            sizes = dict(profile=profile, image_size=image_size, profile_epochs=epochs, batch_size=batch_size,
                         num_workers=num_workers, experiment=experiment, pipeline_run=run_id, training_seed=seed)
            flags = {"run_finetune": run_finetune, "run_ssld": run_ssld, "run_mobilenetv3": run_mobilenetv3}
            with dsl.If(run_scratch == True, name="scratch"):  # noqa: E712 (a KFP condition, not a Python test)
                task = c.train_from_scratch(config="ResNet50_vd", dataset=dataset, gpus=gpus, **sizes)
                _apply(task.set_display_name("ResNet50_vd").after(check), k8s, gpu=True, gpus=gpus)
            for config, arch, flag in FINETUNES:
                with dsl.If(flags[flag] == True, name=flag.removeprefix("run_")):  # noqa: E712
                    task = c.finetune(config=config, dataset=dataset, pretrained=weights[arch], gpus=gpus, **sizes)
                    _apply(task.set_display_name(config).after(check), k8s, gpu=True, gpus=gpus)
            with dsl.If(run_random_erasing_and_distill == True, name="random-erasing-and-distill"):  # noqa: E712
                teacher = c.finetune(config=TEACHER_CONFIG, dataset=dataset, pretrained=weights["ResNet50_vd_ssld"], gpus=gpus,
                                     **sizes)
                teacher = _apply(teacher.set_display_name(TEACHER_CONFIG).after(check), k8s, gpu=True, gpus=gpus)
                student = c.distill(config=DISTILL_CONFIG, dataset=dataset, teacher=teacher.outputs["model"],
                                    student=weights[STUDENT_ARCH], gpus=gpus, **sizes)
                student = _apply(student.set_display_name(DISTILL_CONFIG), k8s, gpu=True, gpus=gpus)
                evaluation = c.evaluate(config=DISTILL_CONFIG, dataset=dataset, model=student.outputs["model"],
                                        profile=profile, image_size=image_size, experiment=experiment, pipeline_run=run_id)
                _apply(evaluation, k8s, gpu=True)
                exported = c.export(config=DISTILL_CONFIG, dataset=dataset, model=student.outputs["model"],
                                    profile=profile, image_size=image_size, pipeline_run=run_id)
                _apply(exported.after(evaluation), k8s, gpu=False)
                bench = c.benchmark(inference_model=exported.outputs["inference_model"], dataset=dataset,
                                    backends=benchmark_backends, precisions=benchmark_precisions, batch_sizes=benchmark_batch_sizes,
                                    profile=profile, experiment=experiment, pipeline_run=run_id)
                _apply(bench, k8s, gpu=True)
                gated = c.parity(config=DISTILL_CONFIG, dataset=dataset, model=student.outputs["model"],
                                 inference_model=exported.outputs["inference_model"], profile=profile, image_size=image_size,
                                 backends=benchmark_backends, precisions=benchmark_precisions, parity_fp32=parity_fp32,
                                 parity_fp16=parity_fp16, parity_int8=parity_int8, experiment=experiment, pipeline_run=run_id)
                _apply(gated.set_display_name("export parity"), k8s, gpu=True)

    return flowers_quickstart


def release_pins() -> dict[str, str]:
    """The digests of the last `make release` (images/release.env), or {} before any release."""
    return read_pins(RELEASE_PINS) if RELEASE_PINS.is_file() else {}


def compile_package(path: Path = PACKAGE, images: dict[str, str] | None = None) -> Path:
    """Compile the cluster pipeline to `path` (deterministic: same code, same bytes).

    ``images`` (image name -> pinned reference ``REGISTRY/NAME@sha256:...``; default: the last
    release's, see release_pins) replaces the executors' tag references.
    """
    images = release_pins() if images is None else images
    pinned = tuple(sorted((name, pinned_ref(name, ref)) for name, ref in images.items()))
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp.yaml")
    compiler.Compiler().compile(build_pipeline(cluster=True, settings=ClusterSettings(images=pinned)), str(tmp))
    write_text_atomic(path, _stable_header(tmp.read_text(encoding="utf-8")))
    tmp.unlink()
    return path


def _stable_header(text: str) -> str:
    """The compiler's header comment prints dict/list defaults in protobuf map order, which changes
    from one process to the next; print them as sorted JSON (the YAML body is sorted already)."""
    params = next(yaml.safe_load_all(text))["root"]["inputDefinitions"]["parameters"]

    def line(match: re.Match) -> str:
        return f"#    {match[1]}: {match[2]} [Default: {json.dumps(params[match[1]]['defaultValue'], sort_keys=True)}]"

    head, sep, body = text.partition("\ncomponents:")
    return re.sub(r"^#    (\w+): (dict|list) \[Default: .*\]$", line, head, flags=re.M) + sep + body


def run_local(root: Path, arguments: dict) -> object:
    """Run the pipeline on this machine with kfp.local (one subprocess per task, this Python)."""
    import warnings

    from kfp import local

    warnings.filterwarnings("ignore", message=".*non-Python base image.*")
    warnings.filterwarnings("ignore", message=".*have no effect in the current local runner.*")
    root = root.resolve()
    os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root / "artifacts"),
               workspace_root=str(root / "workspace"), raise_on_error=True)
    # kfp.local cannot read a null default (executor_output_utils.pb2_value_to_python); the local
    # run uses no cluster parameter, so any value does for the pull secret.
    return build_pipeline(cluster=False)(**{"image_pull_secret": "", **arguments})


def parameter_values(items: list[str]) -> dict[str, object]:
    """`--arg NAME=VALUE` items as pipeline arguments of the parameter's type (seed=1 -> 1)."""
    inputs = build_pipeline(cluster=False).component_spec.inputs
    parse = {"Integer": int, "Double": float, "String": str,
             "Boolean": lambda v: {"true": True, "false": False}[v.lower()]}
    values = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or name not in inputs:
            raise SystemExit(f"--arg {item!r}: expected NAME=VALUE, NAME one of {', '.join(inputs)}")
        kind = inputs[name].type
        try:
            values[name] = parse.get(kind, json.loads)(value)
        except (KeyError, ValueError):
            raise SystemExit(f"--arg {name}={value!r}: not a {kind} value") from None
    return values


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.flowers_quickstart", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    comp = sub.add_parser("compile", help="write the compiled package")
    comp.add_argument("--output", type=Path, default=PACKAGE)
    comp.add_argument("--images", type=Path, metavar="FILE",
                      help="NAME=REGISTRY/NAME@sha256:... lines: executors use these digests "
                           "(default: images/release.env of the last `make release`, if any)")
    loc = sub.add_parser("local", help="run with kfp.local; the demo profile unless --full")
    loc.add_argument("--root", type=Path, default=Path("runs"), help="artifacts, workspace and the MLflow database")
    loc.add_argument("--full", action="store_true", help="the full profile (needs the internet and a GPU to be sensible)")
    loc.add_argument("--arg", action="append", default=[], metavar="NAME=VALUE", help="override a pipeline parameter")
    args = parser.parse_args(argv)
    if args.command == "compile":
        images = read_pins(args.images) if args.images else release_pins()
        out = compile_package(args.output, images)
        pins = f" with the digests of {args.images or RELEASE_PINS}" if images else " with the tags of images/images.env"
        print(f"compiled {out}{pins}")
        return 0
    arguments = {} if args.full else dict(DEMO_ARGUMENTS)
    arguments.update(parameter_values(args.arg))
    run_local(args.root, arguments)
    print(summary(args.root, arguments))
    return 0


def summary(root: Path, arguments: dict) -> str:
    """Where a local run left its results."""
    runs = sorted((root / "artifacts").glob(f"{PIPELINE_NAME}-*"), key=lambda p: p.stat().st_mtime)
    if not runs:
        return f"no run folder under {root / 'artifacts'}"
    run = runs[-1]
    lines = [f"pipeline finished ({arguments.get('profile', 'full')} profile); results in {run}:"]
    for label, pattern in (("report", "report/html"), ("report (Markdown)", "report/markdown"),
                           ("exported model", "export/inference_model"), ("benchmark", "benchmark/result")):
        found = sorted(run.glob(pattern))
        lines.append(f"  {label:18s} {found[0] if found else '(not produced)'}")
    lines.append(f"  MLflow runs        {os.environ.get('MLFLOW_TRACKING_URI')}  (make mlflow-ui)")
    if arguments.get("profile") == "demo":
        lines.append("  DEMO: generated data and demo weights pretrained here on generated letters (not ImageNet); "
                     "the report's lesson rows say whether the quick start's lessons hold on it.")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())

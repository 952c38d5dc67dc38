"""The pipeline: compiled package up to date and carrying the cluster settings; report; local run."""

import json
from pathlib import Path

import pytest
import yaml

from pipelines import flowers_quickstart as fq

ROOT = Path(__file__).resolve().parents[1]


def test_compiled_package_is_up_to_date_and_deterministic(tmp_path):
    first, second = tmp_path / "a.yaml", tmp_path / "b.yaml"
    fq.compile_package(first)
    fq.compile_package(second)
    assert first.read_bytes() == second.read_bytes()
    assert first.read_text() == fq.PACKAGE.read_text(), "pipelines/flowers_quickstart.yaml is stale: run `make compile`"


def _docs():
    return list(yaml.safe_load_all(fq.PACKAGE.read_text()))


def test_compiled_package_loads_and_has_the_parameters():
    from kfp import components

    pipeline = components.load_component_from_file(str(fq.PACKAGE))
    assert pipeline.name == fq.PIPELINE_NAME
    params = _docs()[0]["root"]["inputDefinitions"]["parameters"]
    for name in ("profile", "image_size", "epochs", "batch_size", "dataset_source", "zoo_url", "run_scratch",
                 "run_random_erasing_and_distill", "benchmark_backends"):
        assert name in params
    assert params["image_size"]["defaultValue"] == 224 and params["epochs"]["defaultValue"] == 20
    assert params["gpus"]["defaultValue"] == 1  # GPUs per training task


def _platform_executors(docs):
    return docs[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]


def _dag_tasks(spec):
    """Every task of the root DAG and of its sub-DAGs (dsl.If, ExitHandler), by executor label."""
    tasks = {}
    for component in [spec["root"], *spec["components"].values()]:
        for task in component.get("dag", {}).get("tasks", {}).values():
            executor = spec["components"][task["componentRef"]["name"]].get("executorLabel")
            if executor:
                tasks[executor] = task
    return tasks


GPU_EXECUTORS = ("exec-doctor", "exec-train-from-scratch", "exec-finetune", "exec-finetune-2", "exec-finetune-3",
                 "exec-finetune-4", "exec-distill", "exec-evaluate", "exec-benchmark", "exec-parity")


def test_cluster_settings_are_run_parameters():
    """Every cluster setting is a pipeline parameter with today's default, and reaches each task's
    platform spec (or its container resources) through that parameter, not as a constant."""
    spec, platform = _docs()
    params = spec["root"]["inputDefinitions"]["parameters"]
    for name, default in fq.CLUSTER_PARAMETERS.items():
        assert params[name].get("defaultValue") == default and params[name]["isOptional"], name
    # No pull secret by default: a null optional parameter (the driver skips it), never "" (it refuses that).
    assert "defaultValue" not in params["image_pull_secret"] and params["image_pull_secret"]["parameterType"] == "STRING"
    assert params["gpu_node_selector"]["parameterType"] == "STRUCT" and params["gpu_tolerations"]["parameterType"] == "LIST"
    executors, containers, tasks = _platform_executors(_docs()), spec["deploymentSpec"]["executors"], _dag_tasks(spec)
    assert set(executors) == set(containers) and set(GPU_EXECUTORS) < set(executors)

    def param(ref):  # a platform-spec parameter reference -> the pipeline parameter it reads
        name = ref["componentInputParameter"]
        return name.removeprefix("pipelinechannel--")

    def placeholder(value):  # '{{$.inputs.parameters['pipelinechannel--x']}}' -> x
        return value.removeprefix("{{$.inputs.parameters['pipelinechannel--").removesuffix("']}}")

    for name, e in executors.items():
        gpu = name in GPU_EXECUTORS
        assert [param(s["secretNameParameter"]) for s in e["secretAsEnv"]] == ["credentials_secret"] * 2, name
        assert "secretName" not in e["secretAsEnv"][0], name  # no constant name beside the parameter
        assert {kv["envVar"] for kv in e["secretAsEnv"][0]["keyToEnv"]} == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
        assert e["secretAsEnv"][0]["optional"] is False and e["secretAsEnv"][1]["optional"] is True
        assert {kv["envVar"] for kv in e["secretAsEnv"][1]["keyToEnv"]} == {"MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"}
        assert [param(c["configMapNameParameter"]) for c in e["configMapAsEnv"]] == ["config_map"], name
        assert e["configMapAsEnv"][0]["optional"] is False
        assert [param(s["secretNameParameter"]) for s in e["imagePullSecret"]] == ["image_pull_secret"], name
        resources = containers[name]["container"]["resources"]
        kind = "gpu" if gpu else "cpu"
        assert placeholder(resources["resourceCpuRequest"]) == f"{kind}_task_cpu", name
        assert placeholder(resources["resourceMemoryRequest"]) == f"{kind}_task_memory", name
        # The task passes the pipeline parameter into the placeholder it uses.
        inputs = tasks[name]["inputs"]["parameters"]
        for used in (f"{kind}_task_cpu", f"{kind}_task_memory") + (("gpu_resource", "gpu_task_memory_limit") if gpu else ()):
            assert inputs[f"pipelinechannel--{used}"]["componentInputParameter"] in (used, f"pipelinechannel--{used}"), name
        env = {v["name"]: v["value"] for v in containers[name]["container"].get("env", [])}
        assert env.get("CLASFLOW_REQUIRE_GPU") == ("1" if gpu else None), name  # GPU tasks refuse to run on the CPU
        if gpu:
            assert param(e["nodeSelector"]["nodeSelectorJson"]) == "gpu_node_selector", name
            assert [param(t["tolerationJson"]) for t in e["tolerations"]] == ["gpu_tolerations"], name
            assert placeholder(resources["accelerator"]["resourceType"]) == "gpu_resource", name
            # training tasks request the `gpus` pipeline parameter's GPUs (one process each), and so does the
            # doctor (its NCCL all-reduce over the trainings' GPU count); eval, benchmark and parity one
            training = name.startswith(("exec-train", "exec-finetune", "exec-distill"))
            assert resources["accelerator"]["resourceCount"] == (
                "{{$.inputs.parameters['pipelinechannel--gpus']}}" if training or name == "exec-doctor" else "1"), name
            if training:
                assert tasks[name]["inputs"]["parameters"]["gpus"] == {"componentInputParameter": "pipelinechannel--gpus"}
            # a preempted or evicted GPU pod is retried (a training resumes from its stored checkpoint)
            assert tasks[name]["retryPolicy"] == {"maxRetryCount": 3, "backoffDuration": "60s", "backoffFactor": 2.0,
                                                  "backoffMaxDuration": "3600s"}, name
            # /dev/shm: memory-backed with no size of its own (the driver takes only a constant there), so
            # the memory limit bounds it, and that limit is the gpu_task_memory_limit run parameter.
            assert e["emptyDirMounts"] == [{"medium": "Memory", "mountPath": "/dev/shm", "volumeName": "dshm"}], name
            assert placeholder(resources["resourceMemoryLimit"]) == "gpu_task_memory_limit", name
            assert "memoryLimit" not in resources, name  # no constant beside the parameter
        else:
            assert "nodeSelector" not in e and "tolerations" not in e and "accelerator" not in resources, name
            assert "emptyDirMounts" not in e and "resourceMemoryLimit" not in resources, name
            assert "retryPolicy" not in tasks[name], name
    from clasflow.images import image

    assert {c["container"]["image"] for c in containers.values()} == {image("clasflow-gpu")}


def test_defaults_fit_a_common_gpu_node():
    """8 vCPU / 32 GiB: the GPU task's requests leave room for the kubelet's reservations and the GPU
    Operator's daemons; its memory limit (which also bounds its memory-backed /dev/shm) is at or above
    the request, so the pod is valid, and within what such a node can give."""
    p = fq.CLUSTER_PARAMETERS
    gib = {"Gi": 1, "Mi": 1 / 1024}

    def size(text):
        return float(text[:-2]) * gib[text[-2:]]

    assert float(p["gpu_task_cpu"]) <= 8 - 1
    assert size(p["gpu_task_memory"]) <= size(p["gpu_task_memory_limit"]) <= 32 - 4
    assert size(p["gpu_task_memory_limit"]) - size(p["gpu_task_memory"]) >= 4  # room for /dev/shm above the request


def test_compile_with_pinned_images(tmp_path):
    """`make release` compiles with digests: every executor then runs NAME@sha256:..., and a tag
    or another image's name is refused."""
    digest = "sha256:" + "ab" * 32
    ref = f"registry.example.com/ml/clasflow-gpu@{digest}"
    pins = tmp_path / "release.env"
    pins.write_text(f"clasflow-gpu={ref}\n")
    out = tmp_path / "pinned.yaml"
    assert fq.main(["compile", "--output", str(out), "--images", str(pins)]) == 0
    docs = list(yaml.safe_load_all(out.read_text()))
    assert {e["container"]["image"] for e in docs[0]["deploymentSpec"]["executors"].values()} == {ref}
    assert docs[1] == _docs()[1]  # the platform spec does not change
    for bad, message in ((f"clasflow-gpu=registry.example.com/ml/clasflow-gpu:0.1.0", "not pinned by digest"),
                         (f"clasflow-gpu=registry.example.com/ml/clasflow-cpu@{digest}", "names another image"),
                         (f"clasflow-gpu=registry.example.com/ml/clasflow-gpu@sha256:abc", "not pinned by digest")):
        pins.write_text(bad + "\n")
        with pytest.raises(ValueError, match=message) as err:
            fq.main(["compile", "--output", str(tmp_path / "bad.yaml"), "--images", str(pins)])
        assert str(pins) in str(err.value)
    assert not (tmp_path / "bad.yaml").exists()


def test_after_a_release_make_compile_keeps_its_digests(tmp_path, monkeypatch):
    """`make release` leaves images/release.env; later compiles (make compile, the freshness test)
    use it, so the checked-in package and the chart's copy keep the released digests."""
    ref = "registry.example.com/ml/clasflow-gpu@sha256:" + "12" * 32
    pins = tmp_path / "release.env"
    pins.write_text(f"clasflow-gpu={ref}\n")
    monkeypatch.setattr(fq, "RELEASE_PINS", pins)
    out = fq.compile_package(tmp_path / "p.yaml")
    assert {e["container"]["image"] for e in next(yaml.safe_load_all(out.read_text()))["deploymentSpec"]["executors"].values()} == {ref}
    monkeypatch.setattr(fq, "RELEASE_PINS", tmp_path / "absent.env")
    assert fq.release_pins() == {}


def test_components_do_not_install_packages():
    for name, executor in _docs()[0]["deploymentSpec"]["executors"].items():
        command = " ".join(executor["container"]["command"])
        assert "pip install" not in command, name
        assert "from clasflow.steps import" in command, name


def _record_experiment(uri, runs):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    exp = client.create_experiment("recorded")
    for name, curve in runs.items():
        run = client.create_run(exp, tags={"mlflow.runName": name, "clasflow.stage": "train", "clasflow.pipeline_run": "p1"})
        for step, value in enumerate(curve):
            client.log_metric(run.info.run_id, "valid_top1", value, step=step)
        client.set_terminated(run.info.run_id)
    other = client.create_run(exp, tags={"mlflow.runName": "ResNet50_vd", "clasflow.stage": "train", "clasflow.pipeline_run": "p0"})
    client.log_metric(other.info.run_id, "valid_top1", 0.99, step=0)


def test_report_checks_the_lessons_on_the_runs_figures(tmp_path, monkeypatch):
    from clasflow.cli import main
    from clasflow.report import compare

    uri = f"sqlite:///{tmp_path / 'm.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    _record_experiment(uri, {"ResNet50_vd": [0.2, 0.3], "ResNet50_vd_finetune": [0.5, 0.7], "ResNet50_vd_ssld_finetune": [0.3, 0.3],
                             "MobileNetV3_large_x1_0_finetune": [0.4, 0.6], "R50_vd_distill_MV3_large_x1_0": [0.5, 0.6]})
    compare(tmp_path / "out", experiment="recorded", pipeline_run="p1", profile="demo")
    md = (tmp_path / "out" / "report.md").read_text()
    assert md.index("| config |") < md.index("## The lessons")  # under the Top1 table
    assert "| fine-tuned ResNet50_vd_finetune beats ResNet50_vd from scratch | 0.7000 | 0.3000 | PASS |" in md
    assert "| fine-tuned ResNet50_vd_ssld_finetune beats ResNet50_vd from scratch | 0.3000 | 0.3000 | FAIL |" in md  # a tie is no win
    assert ("| fine-tuned ResNet50_vd_ssld_random_erasing_finetune beats ResNet50_vd from scratch | - | 0.3000 | "
            "n/a (ResNet50_vd_ssld_random_erasing_finetune did not run) |") in md
    assert "| distilled MobileNetV3 (R50_vd_distill_MV3_large_x1_0) >= MobileNetV3_large_x1_0_finetune | 0.6000 | 0.6000 | PASS |" in md
    lessons = json.loads((tmp_path / "out" / "lessons.json").read_text())
    assert [x["verdict"] for x in lessons] == ["PASS", "FAIL", "n/a (ResNet50_vd_ssld_random_erasing_finetune did not run)", "PASS"]
    assert "<td class='fail'>FAIL</td>" in (tmp_path / "out" / "report.html").read_text()
    assert main(["compare", "--experiment", "recorded", "--pipeline-run", "p1", "--out", str(tmp_path / "r"), "--profile", "demo"]) == 1


@pytest.mark.slow
def test_the_demo_profile_end_to_end_with_the_lesson_rows(tmp_path, monkeypatch):
    """What `make quickstart` runs (exactly DEMO_ARGUMENTS) through kfp.local on a machine without
    the demo zoo: the zoo is pretrained on the way and marked demo, six MLflow runs with per-epoch
    history, an exported model, the benchmark JSON, and a report whose lesson rows all PASS."""
    from mlflow.tracking import MlflowClient

    from clasflow import demo_zoo
    from clasflow.steps import fetch_pretrained

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv(demo_zoo.CACHE_ENV, str(tmp_path / "cache"))  # inherited by the steps: a fresh machine
    monkeypatch.delenv("CLASFLOW_ARTIFACT_ROOT", raising=False)
    fq.run_local(tmp_path, dict(fq.DEMO_ARGUMENTS))
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("flowers102-quickstart").experiment_id])
    trains = {r.data.tags["mlflow.runName"]: r for r in runs if r.data.tags.get("clasflow.stage") in ("train", "distill")}
    assert set(trains) == set(fq_configs())
    epochs = list(range(fq.DEMO_ARGUMENTS["epochs"]))
    for name, run in trains.items():
        assert run.data.tags["clasflow.profile"] == "demo"
        assert [m.step for m in sorted(client.get_metric_history(run.info.run_id, "valid_top1"), key=lambda m: m.step)] == epochs, name
    assert len({r.data.tags["clasflow.pipeline_run"] for r in trains.values()}) == 1
    # no KFP MLflow plugin here: the steps build its shape, one parent run with every stage nested under it
    parents = [r for r in runs if r.data.tags.get("clasflow.stage") == "pipeline"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"  # ended by the report
    children = [r for r in runs if r.data.tags.get("clasflow.stage") != "pipeline"]
    assert {r.data.tags.get("mlflow.parentRunId") for r in children} == {parents[0].info.run_id}
    assert sorted(r.data.tags["clasflow.stage"] for r in children) == sorted(["benchmark", "distill", "doctor", "eval", "parity"]
                                                                              + ["train"] * 5)
    artifacts = tmp_path / "artifacts"

    # the demo zoo was built once on the way, and every weights step says its weights are demo weights
    zoo = tmp_path / "cache" / "demo-zoo" / demo_zoo.recipe_key()
    assert json.loads((zoo / "ZOO_MIRROR.json").read_text())["demo"] is True
    locks = list(artifacts.rglob("zoo.lock.json"))
    assert len(locks) == 3
    for lock in locks:
        (entry,) = json.loads(lock.read_text()).values()
        assert entry["demo"] is True and entry["note"].startswith("DEMO WEIGHTS, not ImageNet")
    monkeypatch.setattr(demo_zoo, "build_demo_zoo", lambda *a, **k: pytest.fail("the cached demo zoo was rebuilt"))
    assert fetch_pretrained("ResNet50_vd", tmp_path / "again", "demo")["demo"]

    exported = list(artifacts.rglob("inference.yml"))
    assert len(exported) == 1
    meta = yaml.safe_load(exported[0].read_text())
    assert meta["architecture"] == "MobileNetV3_large_x1_0" and meta["class_num"] == 10 and meta["self_check"]["passed"]
    int8 = meta["int8"]  # calibrated on the training images, for paddle-trt int8 on a GPU
    assert int8["calibration"]["source"].endswith("train_list.txt") and int8["calibration"]["images"] >= 8
    assert (exported[0].parent / int8["files"]["model"]).is_file() and int8["quantized_ops"]["quantize_linear"] > 0
    bench = [p for p in artifacts.rglob("result") if p.is_file()]
    report = next(json.loads(p.read_text()) for p in bench if json.loads(p.read_text()).get("schema") == "clasflow.benchmark/1")
    assert any(r.get("status") == "ok" or "latency_ms" in json.dumps(r) for r in report["results"])
    parity = [json.loads(p.read_text()) for p in bench if json.loads(p.read_text()).get("schema") == "clasflow.parity/1"]
    assert len(parity) == 1 and parity[0]["gate"]["passed"]  # the export classifies like the dygraph model
    assert {(r["backend"], r["status"]) for r in parity[0]["results"]} >= {("paddle", "ok"), ("onnxruntime", "ok")}
    files = [p for p in artifacts.rglob("files") if p.is_dir()]
    assert len(files) == 1 and (files[0] / "top1_curves.png").is_file() and "](top1_curves.png)" in (files[0] / "report.md").read_text()

    # the report checks the lessons on the run's own figures, and on the demo every lesson holds
    (markdown,) = [p for p in artifacts.rglob("markdown") if p.is_file()]
    text = markdown.read_text()
    best = {name: max(m.value for m in client.get_metric_history(run.info.run_id, "valid_top1")) for name, run in trains.items()}
    print("demo best Top1:", json.dumps(best, sort_keys=True))
    scratch = best["ResNet50_vd"]
    for name in ("ResNet50_vd_finetune", "ResNet50_vd_ssld_finetune", "ResNet50_vd_ssld_random_erasing_finetune"):
        assert best[name] > scratch, f"{name} {best[name]:.4f} does not beat ResNet50_vd from scratch {scratch:.4f}"
        assert f"| fine-tuned {name} beats ResNet50_vd from scratch | {best[name]:.4f} | {scratch:.4f} | PASS |" in text
    distilled, student = best["R50_vd_distill_MV3_large_x1_0"], best["MobileNetV3_large_x1_0_finetune"]
    assert distilled >= student, f"distilled MobileNetV3 {distilled:.4f} below the MobileNetV3 fine-tune {student:.4f}"
    assert (f"| distilled MobileNetV3 (R50_vd_distill_MV3_large_x1_0) >= MobileNetV3_large_x1_0_finetune | "
            f"{distilled:.4f} | {student:.4f} | PASS |") in text
    assert "FAIL" not in text.split("## The lessons")[1].split("\n## ")[0]
    html = list(artifacts.rglob("html"))
    assert html and "R50_vd_distill_MV3_large_x1_0" in html[0].read_text() and "The lessons" in html[0].read_text()


def fq_configs():
    from clasflow.steps import QUICK_START

    return QUICK_START


def test_tracked_task_inputs_do_not_share_a_name_with_the_config():
    """Kubeflow's MLflow plugin logs a task's inputs as parameters of the run clasflow logs the
    config into; MLflow refuses a parameter logged twice with two values (e.g. epochs 0 vs 20)."""
    from clasflow.config import load_config
    from clasflow.steps import QUICK_START, config_dir

    keys = set().union(*(load_config(config_dir() / f"{name}.yaml", []).flat() for name in QUICK_START))
    components = _docs()[0]["components"]
    for name in ("comp-train-from-scratch", "comp-finetune", "comp-distill", "comp-evaluate"):
        inputs = set(components[name]["inputDefinitions"]["parameters"])
        assert inputs and not inputs & keys, (name, inputs & keys)


def test_every_training_waits_for_the_doctor():
    """The GPU node is checked (`clasflow doctor --require gpu`) before any training starts: each
    condition holding a training (KFP moves the dependency onto it) runs after the doctor."""
    spec = _docs()[0]
    tasks = {name: task for component in [spec["root"], *spec["components"].values()]
             for name, task in component.get("dag", {}).get("tasks", {}).items()}
    assert tasks["doctor"]["inputs"]["parameters"]["require_gpu"]["runtimeValue"]["constant"] is True
    trainings = {"comp-train-from-scratch", "comp-finetune", "comp-finetune-2", "comp-finetune-3", "comp-finetune-4"}
    holders = {name for name, c in spec["components"].items()
               if any(t["componentRef"]["name"] in trainings for t in c.get("dag", {}).get("tasks", {}).values())}
    assert len(holders) == 5
    for name, task in tasks.items():
        if task["componentRef"]["name"] in holders:
            assert "doctor" in task.get("dependentTasks", []), name


def test_the_documented_kfp_cli_quoting_gives_string_parameters():
    """docs/gpu-cluster.md (Quoting numbers for the kfp CLI): `kfp run create key=value` turns 8 into a
    number, while the resource parameters are STRING; the documented forms reach KFP as text."""
    from kfp.cli.utils.parsing import parse_parameter_value

    spec, _ = _docs()
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert {params[n]["parameterType"] for n in ("gpu_task_cpu", "gpu_task_memory", "cpu_task_cpu")} == {"STRING"}
    assert parse_parameter_value("8") == 8  # what gpu_task_cpu=8 sends
    # gpu_task_cpu='"8"' (the shell hands kfp "8"), gpu_task_cpu=8000m, gpu_task_memory=48Gi
    assert [parse_parameter_value(v) for v in ('"8"', "8000m", "48Gi")] == ["8", "8000m", "48Gi"]
    doc = (Path(__file__).resolve().parents[1] / "docs" / "gpu-cluster.md").read_text()
    assert "gpu_task_cpu='\"8\"' gpu_task_memory=48Gi" in doc and "gpu_task_cpu=8000m" in doc


def test_local_run_arguments_take_the_parameters_types():
    """`make quickstart QUICKSTART_ARGS="--arg seed=1"`: values arrive as the parameter's type; a
    misspelled name or a bad value is a clear error."""
    assert fq.parameter_values(["seed=1", "run_ssld=false", "tolerance=0.5", "experiment=12"]) == {
        "seed": 1, "run_ssld": False, "tolerance": 0.5, "experiment": "12"}
    with pytest.raises(SystemExit, match="'sed=1': expected NAME=VALUE, NAME one of profile"):
        fq.parameter_values(["sed=1"])
    with pytest.raises(SystemExit, match="seed='x': not a Integer value"):
        fq.parameter_values(["seed=x"])

"""The Top1 report (`clasflow compare`): curves of every run and best Top1 against the published figures.

Reads the runs of an MLflow experiment (optionally one pipeline run's, by tag), draws their
per-epoch ``valid_top1`` curves into ``top1_curves.png`` (like the seed's all_acc.png) and writes
``report.md`` and ``report.html``: best Top1 per config side by side with the figures PaddleClas
published, the delta, and pass/fail against a tolerance when the profile is the full one (a demo
run on fixture data is not comparable and says so), then the lessons of the quick start checked
on the run's own figures (``clasflow.lessons``: PASS/FAIL rows, also in ``lessons.json``).
"""

from __future__ import annotations

import base64
import html
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from clasflow.errors import ClasflowError
from clasflow.fsutil import atomic_write, write_text_atomic
from clasflow.lessons import check_lessons, lessons_html, lessons_markdown
from clasflow.tracking import DEFAULT_EXPERIMENT, tracking_uri

# Published val Top1 of the quick start (PaddleClas docs; FACTS.md).
PUBLISHED_TOP1 = {
    "ResNet50_vd": 0.2735,
    "ResNet50_vd_finetune": 0.9402,
    "ResNet50_vd_ssld_finetune": 0.9500,
    "ResNet50_vd_ssld_random_erasing_finetune": 0.9627,
    "MobileNetV3_large_x1_0_finetune": 0.9000,
    "R50_vd_distill_MV3_large_x1_0": 0.9647,
}
PIPELINE_TAG = "clasflow.pipeline_run"
PROFILE_TAG = "clasflow.profile"


@dataclass
class Row:
    config: str
    run_id: str
    best_top1: float
    published: float | None
    delta: float | None
    verdict: str  # "pass", "fail" or "n/a (demo)"
    curve: list[tuple[int, float]]


def collect(experiment: str = DEFAULT_EXPERIMENT, pipeline_run: str | None = None, client=None) -> list[Row]:
    from mlflow.tracking import MlflowClient

    client = client or MlflowClient(tracking_uri())
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        raise ClasflowError(f"MLflow experiment {experiment!r} not found at {tracking_uri()}; train something first")
    query = f"tags.`{PIPELINE_TAG}` = '{pipeline_run}'" if pipeline_run else ""
    runs = client.search_runs([exp.experiment_id], filter_string=query, order_by=["attributes.start_time DESC"])
    latest: dict[str, object] = {}
    for run in runs:  # newest first: keep the latest run per config
        name = run.data.tags.get("clasflow.run_name") or run.data.tags.get("mlflow.runName", run.info.run_id)
        if run.data.tags.get("clasflow.stage") in ("train", "distill") and name not in latest:
            latest[name] = run
    rows = []
    for name, run in sorted(latest.items()):
        history = sorted(client.get_metric_history(run.info.run_id, "valid_top1"), key=lambda m: m.step)
        curve = [(m.step, m.value) for m in history]
        best = max((v for _, v in curve), default=0.0)
        rows.append(Row(name, run.info.run_id, best, PUBLISHED_TOP1.get(name), None, "", curve))
    return rows


def run_warnings(experiment: str, pipeline_run: str | None = None, client=None) -> list[str]:
    """What a pipeline run's MLflow runs say went another way than asked: loader fallbacks, and the
    benchmark's ok/skipped/failed counts with the reasons (tags and metrics set by the steps)."""
    from mlflow.tracking import MlflowClient

    client = client or MlflowClient(tracking_uri())
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    query = f"tags.`{PIPELINE_TAG}` = '{pipeline_run}'" if pipeline_run else ""
    lines = []
    for run in client.search_runs([exp.experiment_id], filter_string=query, order_by=["attributes.start_time ASC"]):
        name, tags, metrics = run.data.tags.get("clasflow.run_name", run.info.run_name), run.data.tags, run.data.metrics
        for key, reason in sorted(tags.items()):
            if key.startswith("clasflow.loader.") and key.endswith(".fallback"):
                lines.append(f"{name}: {key.split('.')[2]} loader fell back to {tags.get(key.removesuffix('.fallback'))}: {reason}")
        if tags.get("clasflow.stage") == "benchmark":
            counts = ", ".join(f"{metrics.get(f'benchmark/{s}', 0):.0f} {s}" for s in ("ok", "skipped", "failed"))
            lines.append(f"{name} on {tags.get('clasflow.device', '?')}: {counts}")
            lines += [f"{name}: {k.removeprefix('clasflow.benchmark.')}: {v}" for k, v in sorted(tags.items())
                      if k.startswith(("clasflow.benchmark.failed.", "clasflow.benchmark.skipped."))]
    return lines


def judge(rows: list[Row], profile: str, tolerance: float = 0.01) -> list[Row]:
    for row in rows:
        if row.published is None:
            row.verdict = "n/a (not a quick-start config)"
        else:
            row.delta = row.best_top1 - row.published
            if profile != "full":
                row.verdict = "n/a (demo)"
            else:
                row.verdict = "pass" if row.delta >= -tolerance else "fail"
    return rows


def plot(rows: list[Row], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(8, 5), dpi=100)
    for row in rows:
        if row.curve:
            ax.plot([s for s, _ in row.curve], [v for _, v in row.curve], marker="o", markersize=3, label=row.config)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel("valid Top1")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    ax.set_title("flowers102 quick start: valid Top1 per epoch")
    fig.tight_layout()
    with atomic_write(path) as fh:
        fig.savefig(fh, format="png")
    plt.close(fig)


def _fmt(v: float | None, signed: bool = False) -> str:
    if v is None:
        return "-"
    return f"{v:+.4f}" if signed else f"{v:.4f}"


def markdown(rows: list[Row], profile: str, tolerance: float, warnings: list[str] = ()) -> str:
    head = [f"# flowers102 quick start: best valid Top1 ({profile} profile)", ""]
    if profile != "full":
        head += ["> Demo profile: generated data, DEMO weights pretrained by clasflow on another generated task (not",
                 "> ImageNet), small images and few epochs. The figures are not comparable with the published ones;",
                 "> the lessons below are checked on them.", ""]
    else:
        head += [f"Pass: best Top1 within {tolerance * 100:.1f} points of the published figure, or above it.", ""]
    lines = head + ["| config | best Top1 | published | delta | verdict |", "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r.config} | {_fmt(r.best_top1)} | {_fmt(r.published)} | {_fmt(r.delta, True)} | {r.verdict} |")
    lines += lessons_markdown(check_lessons({r.config: r.best_top1 for r in rows}))
    lines += ["", "![Top1 curves](top1_curves.png)", ""]
    if warnings:
        lines += ["## Warnings", ""] + [f"- {w}" for w in warnings] + [""]
    return "\n".join(lines)


def to_html(rows: list[Row], profile: str, tolerance: float, image_src: str = "top1_curves.png", warnings: list[str] = ()) -> str:
    """One self-contained page (the curves are embedded, as KFP's UI shows a single file)."""
    cells = "".join(
        f"<tr><td>{html.escape(r.config)}</td><td>{_fmt(r.best_top1)}</td><td>{_fmt(r.published)}</td>"
        f"<td>{_fmt(r.delta, True)}</td><td class='{r.verdict.split()[0]}'>{html.escape(r.verdict)}</td></tr>"
        for r in rows
    )
    note = ("<p><b>Demo profile</b>: generated data and DEMO weights pretrained by clasflow on another generated "
            "task (not ImageNet); not comparable with the published figures. The lessons are checked on them.</p>"
            if profile != "full" else f"<p>Pass: within {tolerance * 100:.1f} points of the published Top1, or above.</p>")
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>clasflow Top1 report</title>"
        "<style>body{font-family:sans-serif}td,th{padding:4px 10px;border-bottom:1px solid #ddd}"
        ".pass{color:green}.fail{color:#b00}</style></head><body>"
        f"<h1>flowers102 quick start: best valid Top1 ({html.escape(profile)} profile)</h1>{note}"
        "<table><tr><th>config</th><th>best Top1</th><th>published</th><th>delta</th><th>verdict</th></tr>"
        f"{cells}</table>{lessons_html(check_lessons({r.config: r.best_top1 for r in rows}))}"
        f"<p><img src='{image_src}' alt='Top1 curves'></p>"
        + ("<h2>Warnings</h2><ul>" + "".join(f"<li>{html.escape(w)}</li>" for w in warnings) + "</ul>" if warnings else "")
        + "</body></html>"
    )


def compare(out_dir: str | os.PathLike, *, experiment: str | None = None, pipeline_run: str | None = None,
            profile: str = "full", tolerance: float = 0.01, warnings: list[str] = ()) -> list[Row]:
    """Write top1_curves.png, report.md, report.html and report.json into `out_dir`."""
    experiment = experiment or os.environ.get("MLFLOW_EXPERIMENT_NAME") or DEFAULT_EXPERIMENT
    rows = judge(collect(experiment, pipeline_run), profile, tolerance)
    if not rows:
        raise ClasflowError(f"no train runs in MLflow experiment {experiment!r}" + (f" for pipeline run {pipeline_run}" if pipeline_run else ""))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    plot(rows, out / "top1_curves.png")
    write_text_atomic(out / "report.md", markdown(rows, profile, tolerance, warnings))
    png = base64.b64encode((out / "top1_curves.png").read_bytes()).decode()
    write_text_atomic(out / "report.html", to_html(rows, profile, tolerance, f"data:image/png;base64,{png}", warnings))
    write_text_atomic(out / "report.json", json.dumps([asdict(r) for r in rows], indent=2))
    lessons = check_lessons({r.config: r.best_top1 for r in rows})
    write_text_atomic(out / "lessons.json", json.dumps([asdict(x) for x in lessons], indent=2))
    return rows

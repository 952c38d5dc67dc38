"""One report per pipeline run (`clasflow compare`, the pipeline's report step).

Reads the MLflow runs of an experiment (optionally one pipeline run's, by tag) and writes into one
folder ``top1_curves.png`` (every run's per-epoch ``valid_top1``, like the seed's all_acc.png),
``report.md`` (linking the PNG beside it), ``report.html`` (the PNG embedded: one self-contained
page) and ``report.json``. The report is a list of sections (`SECTIONS`), each rendered to
Markdown and HTML:

* Top1: per config the best and last-epoch Top1 beside the figure PaddleClas published, the delta
  and pass/fail against a tolerance on the full profile (a demo run is not comparable, and says so);
* export parity: backend x precision top-1 and delta vs the dygraph eval (the parity step's
  result), beside the benchmark's p50 latency at batch 1 and images/s at the largest batch;
* machine: the benchmark's device and versions;
* warnings: skipped or failed backends, MLflow points left pending, loader fallbacks.
"""

from __future__ import annotations

import base64
import html
import json
import logging
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from clasflow.errors import ClasflowError
from clasflow.fsutil import atomic_write, write_text_atomic
from clasflow.tracking import DEFAULT_EXPERIMENT, tracking_uri

log = logging.getLogger(__name__)

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
CURVES = "top1_curves.png"
STEP_RESULTS = {"parity": "parity.json", "benchmark": "benchmark.json"}  # stage -> the JSON its run carries


@dataclass
class Row:
    config: str
    run_id: str
    best_top1: float
    last_top1: float | None
    published: float | None
    delta: float | None
    verdict: str  # "pass", "fail" or "n/a (...)"
    curve: list[tuple[int, float]]
    device: str | None = None  # the run's clasflow.device tag, when recorded
    loaders: str | None = None  # its clasflow.loader.* tags


@dataclass
class Report:
    """Everything the sections render."""

    rows: list[Row]
    profile: str
    tolerance: float
    parity: dict[str, Any] | None = None
    benchmark: dict[str, Any] | None = None
    warnings: list[str] = field(default_factory=list)
    parent_run: str | None = None


@dataclass
class Section:
    title: str
    markdown: str
    html: str


# ------------------------------------------------------------------ reading MLflow


def _client(client=None):
    from mlflow.tracking import MlflowClient

    return client or MlflowClient(tracking_uri())


def _runs(client, experiment: str, pipeline_run: str | None) -> list:
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        raise ClasflowError(f"MLflow experiment {experiment!r} not found at {tracking_uri()}; train something first")
    query = f"tags.`{PIPELINE_TAG}` = '{pipeline_run}'" if pipeline_run else ""
    return client.search_runs([exp.experiment_id], filter_string=query, order_by=["attributes.start_time DESC"])


def _name(run) -> str:
    """A step's name: clasflow.run_name (set when KFP's MLflow plugin names the run), else the run's name."""
    return run.data.tags.get("clasflow.run_name") or run.data.tags.get("mlflow.runName", run.info.run_id)


def _latest(runs: list, stages: tuple[str, ...]) -> dict[str, Any]:
    """The newest run per run name among the runs of these stages (runs come newest first)."""
    out: dict[str, Any] = {}
    for run in runs:
        name = _name(run)
        if run.data.tags.get("clasflow.stage") in stages and name not in out:
            out[name] = run
    return out


def collect(experiment: str = DEFAULT_EXPERIMENT, pipeline_run: str | None = None, client=None) -> list[Row]:
    client = _client(client)
    rows = []
    for name, run in sorted(_latest(_runs(client, experiment, pipeline_run), ("train", "distill")).items()):
        history = sorted(client.get_metric_history(run.info.run_id, "valid_top1"), key=lambda m: m.step)
        curve = [(m.step, m.value) for m in history]
        tags = run.data.tags
        loaders = ", ".join(f"{k.rsplit('.', 1)[1]} {v}" for k, v in sorted(tags.items())
                            if k.startswith("clasflow.loader.") and k.count(".") == 2)
        rows.append(Row(name, run.info.run_id, max((v for _, v in curve), default=0.0), curve[-1][1] if curve else None,
                        PUBLISHED_TOP1.get(name), None, "", curve, tags.get("clasflow.device"), loaders or None))
    return rows


def _step_result(client, run, name: str) -> dict[str, Any] | None:
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = client.download_artifacts(run.info.run_id, name, tmp)
        except Exception as exc:  # the run exists but its result never arrived
            log.warning("MLflow run %s has no %s (%s)", run.info.run_id, name, exc.__class__.__name__)
            return None
        return json.loads(Path(path).read_text(encoding="utf-8"))


def step_warnings(runs: list) -> list[str]:
    """What the steps' MLflow runs say went another way: pending points, loader fallbacks, and each
    benchmark's ok/skipped/failed counts (the reasons come with its result, see result_warnings)."""
    out = []
    for run in runs:
        name = _name(run)
        if run.data.tags.get("clasflow.stage") == "benchmark":
            counts = ", ".join(f"{run.data.metrics.get(f'benchmark/{s}', 0):.0f} {s}" for s in ("ok", "skipped", "failed"))
            out.append(f"{name} on {run.data.tags.get('clasflow.device', '?')}: {counts}")
        pending = run.data.metrics.get("mlflow_pending")
        if pending:
            out.append(f"{name}: {int(pending)} MLflow records were still pending when the step ended "
                       "(their journal is kept with the step's artifacts; `clasflow tracking sync` sends it)")
        for key, value in sorted(run.data.tags.items()):
            if key.startswith("clasflow.loader.") and key.endswith(".fallback"):
                out.append(f"{name}: {key.split('.')[2]} loader fell back: {value}")
    return out


def result_warnings(result: dict[str, Any] | None, what: str) -> list[str]:
    """One line per backend/device/precision that was skipped or failed in a parity or benchmark result."""
    seen: dict[str, str] = {}
    for r in (result or {}).get("results", []):
        if r.get("status") in ("skipped", "failed"):
            seen.setdefault(f"{what}: {r['backend']}/{r['device']}/{r['precision']} {r['status']}", r.get("reason", ""))
    return [f"{k}: {v}" for k, v in seen.items()]


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


def runs_profile(runs: list) -> str:
    """The profile the runs were made with (their ``clasflow.profile`` tag); ``full`` when untagged."""
    found = {r.data.tags.get(PROFILE_TAG) for r in runs} - {None, ""}
    if len(found) > 1:
        raise ClasflowError(f"the runs mix the profiles {', '.join(sorted(found))}: pick one pipeline run "
                            "(--pipeline_run) or say which to judge by (--profile)")
    return found.pop() if found else "full"


def gather(experiment: str, pipeline_run: str | None, profile: str | None, tolerance: float, client=None) -> Report:
    """``profile`` None: the runs' own (see runs_profile)."""
    client = _client(client)
    runs = _runs(client, experiment, pipeline_run)
    profile = profile or runs_profile(runs)
    rows = judge(collect(experiment, pipeline_run, client), profile, tolerance)
    report = Report(rows, profile, tolerance)
    for stage, name in STEP_RESULTS.items():
        found = _latest(runs, (stage,))
        if found:
            setattr(report, stage, _step_result(client, next(iter(found.values())), name))
        if getattr(report, stage) is None:
            report.warnings.append(f"no {stage} result in MLflow for this run (the step did not run or did not finish)")
    report.warnings += step_warnings(runs)
    report.warnings += result_warnings(report.parity, "parity") + result_warnings(report.benchmark, "benchmark")
    parents = {r.data.tags.get("mlflow.parentRunId") for r in runs} - {None}
    report.parent_run = os.environ.get("MLFLOW_PARENT_RUN_ID") or (parents.pop() if len(parents) == 1 else None)
    return report


# ------------------------------------------------------------------ rendering


def plot(rows: list[Row], path: Path, published: bool = True) -> None:
    """The Top1 curves; with `published`, each config's published figure as a dotted line of its colour."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(9, 5.5), dpi=110)
    for row in rows:
        if row.curve:
            line, = ax.plot([s for s, _ in row.curve], [v for _, v in row.curve], marker="o", markersize=3,
                            label=f"{row.config} (best {row.best_top1:.3f})")
            if published and row.published is not None:
                ax.axhline(row.published, color=line.get_color(), linestyle=":", linewidth=1)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel("valid Top1")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title("flowers102 quick start: valid Top1 per epoch" + (" (dotted: published)" if published else ""))
    fig.tight_layout()
    with atomic_write(path) as fh:
        fig.savefig(fh, format="png")
    plt.close(fig)


def _fmt(v: float | None, signed: bool = False, digits: int = 4) -> str:
    if v is None:
        return "-"
    return f"{v:+.{digits}f}" if signed else f"{v:.{digits}f}"


def _table(head: list[str], rows: list[list[str]], classes: list[str | None] | None = None) -> tuple[str, str]:
    """A Markdown table and the same as HTML (``classes``: a CSS class per row's last cell)."""
    md = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)] + ["| " + " | ".join(r) + " |" for r in rows]
    cells = ""
    for i, r in enumerate(rows):
        css = (classes or [None] * len(rows))[i]
        tds = [f"<td>{html.escape(c)}</td>" for c in r]
        if css:
            tds[-1] = f"<td class='{css}'>{html.escape(r[-1])}</td>"
        cells += "<tr>" + "".join(tds) + "</tr>"
    return "\n".join(md), "<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + f"</tr>{cells}</table>"


def top1_section(rep: Report, image_src: str) -> Section:
    if rep.profile != "full":
        note = ("Demo profile: fixture data, demo weights, small images and few epochs. The figures only show "
                "that the pipeline runs end to end; they are not comparable with the published ones.")
    else:
        note = f"Pass: best Top1 within {rep.tolerance * 100:.1f} points of the published figure, or above it."
    extra = any(r.device or r.loaders for r in rep.rows)
    head = ["config", "best Top1", "last epoch Top1", "published", "delta", "verdict"]
    rows = [[r.config, _fmt(r.best_top1), _fmt(r.last_top1), _fmt(r.published), _fmt(r.delta, True)]
            + ([r.device or "-", r.loaders or "-"] if extra else []) + [r.verdict] for r in rep.rows]
    if extra:
        head = head[:5] + ["device", "loaders"] + head[5:]
    md, table = _table(head, rows, [r.verdict.split()[0] for r in rep.rows])
    quote = "> " + note if rep.profile != "full" else note
    return Section("Top1 against the published figures",
                   f"{quote}\n\n{md}\n\n![Top1 curves]({image_src})",
                   f"<p>{html.escape(note)}</p>{table}<p><img src='{image_src}' alt='Top1 curves'></p>")


def _bench_lookup(bench: dict[str, Any] | None, backend: str, device: str, precision: str) -> tuple[float | None, float | None, int | None]:
    ok = [r for r in (bench or {}).get("results", []) if r.get("status") == "ok" and r["backend"] == backend
          and r["device"] == device and r["precision"] == precision]
    bs1 = next((r["latency_ms"]["p50"] for r in ok if r["batch_size"] == 1), None)
    largest = max(ok, key=lambda r: r["batch_size"], default=None)
    return bs1, (largest or {}).get("throughput_ips"), (largest or {}).get("batch_size")


def parity_section(rep: Report, image_src: str) -> Section | None:
    if rep.parity is None:
        return None
    g = rep.parity.get("gate") or {}
    rows, classes = [], []
    for r in rep.parity["results"]:
        p50, ips, bs = _bench_lookup(rep.benchmark, r["backend"], r["device"], r["precision"])
        ok = r["status"] == "ok"
        rows.append([r["backend"], r["device"], r["precision"], _fmt(r.get("top1")) if ok else r["status"],
                     _fmt(r.get("delta_points"), True, 2) if ok else "-", _fmt(p50, digits=2),
                     f"{ips:.1f} (bs {bs})" if ips is not None else "-", r.get("verdict", "-")])
        classes.append(r.get("verdict"))
    head = ["backend", "device", "precision", "top-1", "delta vs dygraph (points)", "p50 ms bs1",
            "images/s at largest batch", "verdict"]
    md, table = _table(head, rows, classes)
    tol = ", ".join(f"{k} {v:g}" for k, v in (g.get("tolerances") or {}).items())
    dyg = g.get("dygraph_top1")
    note = (f"{rep.parity['list']['images']} validation images; dygraph top-1 {_fmt(dyg)} (same checkpoint); "
            f"allowed |delta| in points: {tol}. Gate: {'passed' if g.get('passed') else 'FAILED'}.")
    return Section("Export parity (exported model vs dygraph)", f"{note}\n\n{md}", f"<p>{html.escape(note)}</p>{table}")


def machine_section(rep: Report, image_src: str) -> Section | None:
    src = rep.benchmark or rep.parity
    if not src or "versions" not in src:
        return None
    d, v = src["device"], src["versions"]
    dev = f"{d.get('cpu')} ({d.get('threads')} threads of {d.get('cpu_count')})" + (f", GPU {d['gpu']} x{d.get('gpu_count')}" if d.get("gpu") else ", no GPU")
    vers = ", ".join(f"{k} {val}" for k, val in v.items() if val not in (None, "None", "False", ""))
    text = f"Device: {dev}.\n\nVersions: {vers}."
    return Section("Machine and versions (benchmark)", text, "".join(f"<p>{html.escape(t)}</p>" for t in text.split("\n\n")))


def warnings_section(rep: Report, image_src: str) -> Section:
    items = rep.warnings or ["none"]
    return Section("Warnings", "\n".join(f"- {w}" for w in items),
                   "<ul>" + "".join(f"<li>{html.escape(w)}</li>" for w in items) + "</ul>")


def lessons_section(rep: Report, image_src: str) -> Section:
    from clasflow.lessons import check_lessons, lessons_html, lessons_markdown

    lessons = check_lessons({r.config: r.best_top1 for r in rep.rows})
    md = "\n".join(line for line in lessons_markdown(lessons) if not line.startswith("## ")).strip()
    return Section("The lessons", md, lessons_html(lessons).replace("<h2>The lessons</h2>", "", 1))


# The report's sections, in order: (Report, image src) -> Section, or None to leave it out.
SECTIONS: list[Callable[[Report, str], Section | None]] = [top1_section, lessons_section, parity_section, machine_section,
                                                            warnings_section]


def sections(rep: Report, image_src: str) -> list[Section]:
    return [s for s in (build(rep, image_src) for build in SECTIONS) if s is not None]


def _title(rep: Report) -> str:
    return f"flowers102 quick start ({rep.profile} profile)"


def markdown(rep: Report, image_src: str = CURVES) -> str:
    parts = [f"# {_title(rep)}"] + [f"## {s.title}\n\n{s.markdown}" for s in sections(rep, image_src)]
    return "\n\n".join(parts) + "\n"


def to_html(rep: Report, image_src: str = CURVES) -> str:
    """One self-contained page when ``image_src`` is a data URI (KFP's UI shows a single file)."""
    body = "".join(f"<h2>{html.escape(s.title)}</h2>{s.html}" for s in sections(rep, image_src))
    return ("<!doctype html><html><head><meta charset='utf-8'><title>clasflow report</title>"
            "<style>body{font-family:sans-serif}td,th{padding:4px 10px;border-bottom:1px solid #ddd}"
            ".pass{color:green}.fail{color:#b00}.skipped{color:#a60}</style></head><body>"
            f"<h1>{html.escape(_title(rep))}</h1>{body}</body></html>")


def data_uri(png: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(png.read_bytes()).decode()


def write(rep: Report, out_dir: str | os.PathLike) -> Path:
    """top1_curves.png, report.md (linking it), report.html (embedding it) and report.json into `out_dir`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    plot(rep.rows, out / CURVES, published=rep.profile == "full")
    write_text_atomic(out / "report.md", markdown(rep))
    write_text_atomic(out / "report.html", to_html(rep, data_uri(out / CURVES)))
    write_text_atomic(out / "report.json", json.dumps(asdict(rep), indent=2))
    from clasflow.lessons import check_lessons

    lessons = check_lessons({r.config: r.best_top1 for r in rep.rows})
    write_text_atomic(out / "lessons.json", json.dumps([asdict(x) for x in lessons], indent=2))
    return out


def attach(out_dir: str | os.PathLike, run_id: str, client=None) -> bool:
    """Log the report folder to an MLflow run (artifact path ``report``); False, said at WARNING, if it fails."""
    try:
        _client(client).log_artifacts(run_id, str(out_dir), "report")
    except Exception as exc:  # the report files are already written; MLflow being down must not lose them
        log.warning("could not attach the report to MLflow run %s: %s: %s", run_id, type(exc).__name__, exc)
        return False
    log.info("report attached to MLflow run %s", run_id)
    return True


def compare(out_dir: str | os.PathLike, *, experiment: str | None = None, pipeline_run: str | None = None,
            profile: str | None = None, tolerance: float = 0.01, attach_to_parent: bool = False,
            warnings: list[str] = ()) -> Report:
    """Gather the run's results from MLflow and write the report into `out_dir` (see the module docstring);
    with `attach_to_parent`, also log it to the pipeline run's parent MLflow run; `warnings` are added to its own."""
    experiment = experiment or os.environ.get("MLFLOW_EXPERIMENT_NAME") or DEFAULT_EXPERIMENT
    rep = gather(experiment, pipeline_run, profile, tolerance)
    rep.warnings += list(warnings)
    if not rep.rows:
        raise ClasflowError(f"no train runs in MLflow experiment {experiment!r}" + (f" for pipeline run {pipeline_run}" if pipeline_run else ""))
    if attach_to_parent and not rep.parent_run:
        text = ("the report is not attached to a parent MLflow run: none was found (MLFLOW_PARENT_RUN_ID is unset "
                "and this pipeline run's MLflow runs share no mlflow.parentRunId)")
        log.warning("%s", text)
        rep.warnings.append(text)
    write(rep, out_dir)
    if attach_to_parent and rep.parent_run:
        attach(out_dir, rep.parent_run)
    return rep

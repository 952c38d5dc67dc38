"""The lessons of the quick start, checked on a run's best Top1 figures (rows under the report's table).

The quick start teaches two things: pretrained weights beat training from scratch (every
fine-tuned ResNet50_vd above the ResNet50_vd trained from scratch), and distillation lifts the
small model (the distilled MobileNetV3 at least as good as the MobileNetV3 fine-tune).
"""

from __future__ import annotations

import html
from dataclasses import dataclass

SCRATCH = "ResNet50_vd"
FINETUNES = ("ResNet50_vd_finetune", "ResNet50_vd_ssld_finetune", "ResNet50_vd_ssld_random_erasing_finetune")
STUDENT_FINETUNE = "MobileNetV3_large_x1_0_finetune"
DISTILLED = "R50_vd_distill_MV3_large_x1_0"


@dataclass
class Lesson:
    claim: str
    better: str
    worse: str
    better_top1: float | None
    worse_top1: float | None
    verdict: str  # "PASS", "FAIL" or "n/a (... did not run)"


def _check(claim: str, better: str, worse: str, best: dict[str, float], strict: bool) -> Lesson:
    b, w = best.get(better), best.get(worse)
    if b is None or w is None:
        missing = " and ".join(n for n, v in ((better, b), (worse, w)) if v is None)
        return Lesson(claim, better, worse, b, w, f"n/a ({missing} did not run)")
    ok = b > w if strict else b >= w
    return Lesson(claim, better, worse, b, w, "PASS" if ok else "FAIL")


def check_lessons(best_top1: dict[str, float]) -> list[Lesson]:
    """One row per lesson from {config: best valid Top1}."""
    rows = [_check(f"fine-tuned {name} beats {SCRATCH} from scratch", name, SCRATCH, best_top1, strict=True)
            for name in FINETUNES]
    rows.append(_check(f"distilled MobileNetV3 ({DISTILLED}) >= {STUDENT_FINETUNE}", DISTILLED, STUDENT_FINETUNE,
                       best_top1, strict=False))
    return rows


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.4f}"


def lessons_markdown(lessons: list[Lesson]) -> list[str]:
    lines = ["", "## The lessons", "", "| lesson | Top1 | vs | verdict |", "|---|---|---|---|"]
    for x in lessons:
        lines.append(f"| {x.claim} | {_fmt(x.better_top1)} | {_fmt(x.worse_top1)} | {x.verdict} |")
    return lines


def lessons_html(lessons: list[Lesson]) -> str:
    cells = "".join(
        f"<tr><td>{html.escape(x.claim)}</td><td>{_fmt(x.better_top1)}</td><td>{_fmt(x.worse_top1)}</td>"
        f"<td class='{x.verdict.split()[0].lower()}'>{html.escape(x.verdict)}</td></tr>"
        for x in lessons
    )
    return ("<h2>The lessons</h2><table><tr><th>lesson</th><th>Top1</th><th>vs</th><th>verdict</th></tr>"
            f"{cells}</table>")

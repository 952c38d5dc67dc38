from kfp import dsl
from kfp.dsl import HTML, Artifact, Markdown, Output

from components.image import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def report(profile: str, experiment: str, pipeline_run: str, tolerance: float, html: Output[HTML],
           markdown: Output[Markdown], files: Output[Artifact]):
    """The run's report: Top1 against the published figures, export parity, machine, warnings
    (`files`: report.md with top1_curves.png beside it, report.html, report.json)."""
    from clasflow.steps import Profile, report_step

    report_step(html.path, markdown.path, Profile(profile, experiment=experiment, pipeline_run=pipeline_run), tolerance,
                files.path)

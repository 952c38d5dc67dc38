from kfp import dsl
from kfp.dsl import HTML, Markdown, Output

from components.image import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def report(profile: str, experiment: str, pipeline_run: str, tolerance: float, html: Output[HTML],
           markdown: Output[Markdown]):
    """Top1 curves of this pipeline run and best Top1 against the published figures."""
    from clasflow.steps import Profile, report_step

    report_step(html.path, markdown.path, Profile(profile, experiment=experiment, pipeline_run=pipeline_run), tolerance)

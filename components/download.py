from kfp import dsl
from kfp.dsl import Model, Output

from components.image import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def download_weights(architecture: str, zoo_url: str, cache_root: str, weights: Output[Model]):
    """Pretrained weights from the zoo (official, a mirror, or `demo`)."""
    from clasflow.steps import fetch_pretrained

    weights.metadata.update(fetch_pretrained(architecture, weights.path, zoo_url, cache_root))

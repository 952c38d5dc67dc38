from kfp import dsl
from kfp.dsl import Dataset, Metrics, Output

from components.image import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def prepare_dataset(source: str, cache_root: str, dataset: Output[Dataset], metrics: Output[Metrics]):
    """flowers102 lists from the official files, a mirror URL or a generated fixture (`fixture:glyphs`)."""
    from clasflow.steps import prepare_dataset as step

    meta = step(dataset.path, source, cache_root)
    for name, count in meta["counts"].items():
        metrics.log_metric(name, count)

"""The long explanation jobs a queue's worker runs for a replica: Score-CAM, scores, the sanity check, a dataset.

With `CONVVIZ_QUEUE_URL` set, the app sends these as `jobs.RemoteCall`s
(`convviz_core.job_queue`): a `models.sources.ModelSource` instead of the
model, the image as an RGB uint8 array, and the request's plain values. The
worker loads the model once per process (`sources.worker_model`) and calls
the very functions the app calls in its own pool (`convviz_core.explanations`,
`metrics.sanity`, `reports.dataset_report`), so the numbers are the same; the
result (a `ClassMap`, `MapScores` and a `RandomBaseline`, `SanityCurves`, a
report's explanations and ZIP) is pickled back. Nothing here imports Streamlit.

Each function takes a `progress` keyword argument: the worker's progress
callback, which raises once the job is cancelled or over its time limit.
"""

import io

import numpy as np

from convviz_core import explanations
from convviz_core.models.sources import read_shared_file, worker_model

# The shared cache's subfolder of uploaded dataset ZIPs.
UPLOADS_FOLDER = "uploads"


def _image(image):
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"A job's image is RGB uint8 (height, width, 3). Received: dtype={image.dtype}, "
                         f"shape={image.shape}")
    return image


def class_map(source, image, layer_name, class_index, method, progress=None):
    """A slow method's (Score-CAM's) map: `explanations.compute_class_map` on the worker.

    Returns:
        A `ClassMap`.
    """
    return explanations.compute_class_map(worker_model(source), _image(image), layer_name, class_index, method,
                                          progress)


def map_scores(source, image, layer_name, class_index, maps, steps, seeds, progress=None):
    """Scores maps of one class and the chance level: `explanations.score_maps_of_image` on the worker.

    Returns:
        ({method: `MapScores`}, `RandomBaseline`).
    """
    return explanations.score_maps_of_image(worker_model(source), _image(image), layer_name, class_index,
                                            dict(maps), steps, tuple(seeds), progress)


def sanity_curves(source, image, layer_name, class_index, methods, progress=None):
    """The cascading-randomisation sanity check (on a private copy of the worker's model).

    Returns:
        A `SanityCurves`.
    """
    from convviz_core.metrics.sanity import cascading_randomization

    return cascading_randomization(worker_model(source), _image(image), list(methods), class_index, layer_name,
                                   progress=progress)


def dataset_report(source, zip_digest, layer_name, methods, chance_seeds, road_fractions, labels, progress=None):
    """A dataset's report from an uploaded ZIP in the shared cache (`store_shared_file(UPLOADS_FOLDER, ...)`).

    Returns:
        (explanations, ZIP bytes), as `reports.dataset_report.explain_dataset`.
    """
    from convviz_core.reports.archive import images_from_zip
    from convviz_core.reports.dataset_report import explain_dataset

    members = images_from_zip(io.BytesIO(read_shared_file(UPLOADS_FOLDER, zip_digest, ".zip")))
    names = [name for name, _ in members]
    sources = [value for _, value in members]
    return explain_dataset(worker_model(source), layer_name, sources, names, methods, chance_seeds, road_fractions,
                           dict(labels), progress)


def nothing(progress=None):
    """A job that returns None: a page that only wants to join a job under way submits it with that job's key."""
    return None

"""The atlas jobs a queue's worker runs (`convviz_core.job_queue`).

The app's `FilterAtlasCache.submit` sends them when a queue is configured:
`compute_shared_atlas` with a built-in model's `AtlasRequest` (the replica
then reads the atlas from the disk cache that app and workers share), and
`compute_atlas_of_source` with an uploaded model's `ModelSource` (the
patterns come back in the job's result: an uploaded model's atlases are not
kept on disk). Kept apart from `atlas_cache` so that the queue's code is no
part of an atlas's key.
"""

import functools

from convviz_core.features.atlas_cache import FilterAtlasCache


def compute_shared_atlas(request, progress=None):
    """A queue worker's job: computes a built-in model's atlas into this machine's disk cache.

    The worker loads the model by its built-in name (once per worker
    process) and checks that its weights, architecture and preprocessing are
    those the request was made for; the patterns go to
    `paths.cache_dir("atlases")`, which must be the folder the app replicas
    read (a shared volume).

    Args:
        request: An `AtlasRequest` of a built-in model.
        progress: The worker's progress callback.

    Returns:
        "computed", or "disk" when the atlas was there already.

    Raises:
        ValueError: If the worker's model is not the one the request was made for.
    """
    from convviz_core.worker import builtin_model

    model = builtin_model(request.model_name)
    if not request.matches(model):
        raise ValueError(
            f"This worker's '{request.model_name}' is not the model the app asked about (other weights, "
            "architecture or preprocessing): run the app and the workers from the same ConvViz version."
        )
    cache = _shared_atlas_cache()
    return cache._compute(model, request, True, progress).source


@functools.lru_cache(maxsize=1)
def _shared_atlas_cache():
    # A worker's view of the disk cache (its memory cache spares a re-read
    # when a job asks for an atlas another job of this worker just made).
    return FilterAtlasCache(memory_entries=2)


def compute_atlas_of_source(source, request, progress=None):
    """A queue worker's job: an uploaded model's atlas, sent back as its patterns.

    Args:
        source: The `models.sources.ModelSource` of the upload (its file in
            the shared cache, loaded through the upload check once per
            worker process).
        request: An `AtlasRequest` made for that model.
        progress: The worker's progress callback.

    Returns:
        The patterns (the array an `Atlas` holds).

    Raises:
        ValueError: If the model loaded is not the one the request was made for.
        InputError: If the file is missing or refused by the upload check.
    """
    from convviz_core.models.sources import worker_model

    model = worker_model(source)
    if not request.matches(model):
        raise ValueError(
            f"The uploaded model this worker loaded is not the one the app asked about ('{request.model_name}' "
            "with its weights and preprocessing)."
        )
    return _shared_atlas_cache()._compute(model, request, False, progress).patterns

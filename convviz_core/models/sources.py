"""Where a queue's worker finds the model a replica asked about: a built-in name, or an upload's file by SHA-256.

A replica holds its models in memory; a worker on another machine gets a
`ModelSource` instead (small and picklable) and loads the model itself, once
per worker process (`worker_model`):

- A built-in model by its registry name, checked against the digests of the
  weights and architecture the replica had (the same ConvViz version on both).
- An uploaded `.keras` / `.h5` file: the replica stores its bytes once in
  the shared cache folder (`CONVVIZ_CACHE_DIR`, the volume every replica and
  worker mounts) under their SHA-256 (`store_shared_file`); the worker reads
  them back, checks their SHA-256, and loads them through the same safety
  check as an upload (`registry.load_uploaded_model`: a limited child
  process, then Keras's safe mode), with the same settings.

Dataset ZIPs travel the same way (`store_shared_file("uploads", ...)`).
"""

import dataclasses
import functools
import hashlib
import os
import re
import tempfile

from convviz_core.errors import InputError
from convviz_core.paths import cache_dir

# The shared cache's subfolder of uploaded model files.
MODELS_FOLDER = "models"
# Uploaded models kept loaded per worker process (as many as a replica keeps).
WORKER_UPLOADED_MODELS = 4


@dataclasses.dataclass(frozen=True)
class ModelSource:
    """How a worker loads the model a replica holds.

    Attributes:
        kind: "builtin" or "upload".
        name: The built-in model's registry name, or the upload's file name
            (for its suffix and display name).
        digest: For a built-in model, its weights and architecture digests
            ("weights:architecture"); for an upload, the file's SHA-256.
        preprocess: The upload's preprocessing preset name (None for built-ins).
        class_names: The upload's class names (a tuple), or None.
        input_size: The upload's (height, width) for a model that accepts any size.
    """

    kind: str
    name: str
    digest: str
    preprocess: str = None
    class_names: tuple = None
    input_size: tuple = None


def builtin_source(model):
    """The `ModelSource` of a built-in model the replica loaded (by its registry name)."""
    from convviz_core.features.atlas_cache import architecture_digest, weights_digest

    return ModelSource("builtin", model.name, f"{weights_digest(model)}:{architecture_digest(model)}")


def upload_source(data, file_name, preprocess, class_names, input_size):
    """Stores an uploaded model file in the shared cache (once) and returns its `ModelSource`.

    Args:
        data: The file's bytes.
        file_name, preprocess, class_names, input_size: As given to
            `registry.load_uploaded_model` (the preset by name).
    """
    suffix = _suffix(file_name)
    digest = store_shared_file(MODELS_FOLDER, data, suffix)
    return ModelSource(
        "upload", str(file_name), digest, preprocess, tuple(class_names) if class_names else None,
        tuple(int(side) for side in input_size) if input_size else None,
    )


def store_shared_file(folder, data, suffix=""):
    """Writes bytes to `cache_dir(folder)` as `<sha256><suffix>`, unless they are there; returns the SHA-256.

    Written to a temporary name in the same folder and renamed, so a reader
    on another machine never sees half a file.
    """
    digest = hashlib.sha256(data).hexdigest()
    path = cache_dir(folder) / f"{digest}{suffix}"
    if path.exists() and path.stat().st_size == len(data):
        return digest
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".incoming-")
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise
    return digest


def read_shared_file(folder, digest, suffix=""):
    """The bytes `store_shared_file` stored under `digest`, checked against it.

    Raises:
        InputError: If this machine's shared cache folder does not have them
            (or has other bytes under that name).
    """
    if not re.fullmatch(r"[0-9a-f]{64}", str(digest)):
        raise ValueError(f"A shared file is named by a SHA-256 in hex. Received: digest={digest!r}")
    path = cache_dir(folder) / f"{digest}{suffix}"
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        data = None
    if data is None or hashlib.sha256(data).hexdigest() != digest:
        raise InputError(
            f"This worker cannot find the file {path.name} in {path.parent}. The app and its workers must share "
            "one cache folder (the same CONVVIZ_CACHE_DIR on a shared volume)."
        )
    return data


def worker_model(source):
    """The model of a `ModelSource`, loaded once per process.

    Raises:
        ValueError: If a built-in model here is not the one the replica has.
        InputError: If an uploaded file is missing or refused by the safety check.
    """
    if source.kind == "builtin":
        from convviz_core.worker import builtin_model

        model = builtin_model(source.name)
        if builtin_source(model).digest != source.digest:
            raise ValueError(
                f"This worker's '{source.name}' is not the model the app asked about (other weights or "
                "architecture): run the app and the workers from the same ConvViz version."
            )
        return model
    if source.kind == "upload":
        return _uploaded_model(source)
    raise ValueError(f"A model source is 'builtin' or 'upload'. Received: kind={source.kind!r}")


@functools.lru_cache(maxsize=WORKER_UPLOADED_MODELS)
def _uploaded_model(source):
    from convviz_core.models.registry import load_uploaded_model

    data = read_shared_file(MODELS_FOLDER, source.digest, _suffix(source.name))
    return load_uploaded_model(
        data, source.name, preprocess=source.preprocess,
        class_names=list(source.class_names) if source.class_names else None, input_size=source.input_size,
    )


def _suffix(file_name):
    suffix = os.path.splitext(str(file_name).replace("\\", "/"))[1].lower()
    return suffix if suffix in (".keras", ".h5") else ""

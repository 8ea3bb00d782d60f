"""Cached calls into `convviz_core`: the app's one cache policy.

- Models: `st.cache_resource`, keyed by the built-in model's name or by the
  upload's content hash (plus its preprocessing, class names and input size).
  A `VisionModel` is shared by every session and never changed.
- Computed arrays and the pictures made from them: `cache_in_memory`, one
  least-recently-used cache shared by every session and bounded by the
  bytes of what it keeps (`MEMORY_CACHE_BYTES`), keyed by model key + image
  key (a sample's name or the upload's content hash) + layer + parameters.
  The model and the image themselves are passed as `_`-prefixed arguments,
  which are not part of the key, always together with the keys that name
  them. Small values (thumbnails, JPEG previews, the model summary) use
  `st.cache_data` with a bounded entry count.
- Filter atlases: `convviz_core.features.atlas_cache.FilterAtlasCache`, one
  per server (`st.cache_resource`). `st.cache_data` cannot hold them because
  an atlas reports progress while it is computed, and Streamlit replays the
  elements a cached function draws; the atlas cache also keeps built-in
  models' atlases on disk across restarts.

So a class of students uploading photos cannot fill the server's memory.
"""

import collections
import dataclasses
import functools
import gc
import hashlib
import inspect
import math
import os
import threading
import weakref
from pathlib import Path

import cv2
import numpy as np
import streamlit as st

from convviz_app import figures
from convviz_core import (
    activation_grid,
    activations,
    dead_channels,
    load_model,
    load_uploaded_model,
    overlay,
)
from convviz_core.errors import InputError
from convviz_core.explanations import (  # noqa: F401 - ClassMap and MapScores are the pages' names too.
    ClassMap,
    MapScores,
    chance_level,
    compute_class_map,
    map_digest,
    score_map,
)
from convviz_core.features import atlas_service
from convviz_core.features.atlas_cache import FilterAtlasCache
from convviz_core.features.dataset_examples import (
    dataset_examples,
    dataset_examples_of_image_set,
)
from convviz_core.features.patterns import METHODS, pattern_grid
from convviz_core.graph.summary import summarize_model
from convviz_core.inputs.images import fit_within, load_image_info, resize_to
from convviz_core.inputs.samples import sample_image, sample_names
from convviz_core.jobs import Priority, make_job_pool
from convviz_core.metrics.sanity import cascading_randomization
from convviz_core.models.registry import BUILTIN_MODELS
from convviz_core.models.sources import builtin_source, upload_source
from convviz_core.overlays import colorize

UPLOADED_MODEL_ENTRIES = 4
# What the computed arrays and pictures of every session may take together
# (`CONVVIZ_CACHE_MEMORY_MB`, default 256 MB). A 1024x1024 upload's early
# layer can alone be a few hundred MB, so entries alone do not bound memory.
MEMORY_CACHE_BYTES = int(float(os.environ.get("CONVVIZ_CACHE_MEMORY_MB", "256")) * 1024**2)


class ByteBudgetCache:
    """A thread-safe least-recently-used cache bounded by the bytes of its values.

    Args:
        max_bytes: The most its values may take together. A value larger than
            that is returned to its caller but not kept.
    """

    def __init__(self, max_bytes):
        self.max_bytes = int(max_bytes)
        self._entries = collections.OrderedDict()  # key -> (value, bytes)
        self._bytes = 0
        self._lock = threading.Lock()
        self._computing = {}  # key -> lock, so one session computes what others wait for

    @property
    def total_bytes(self):
        """The bytes its values take now."""
        with self._lock:
            return self._bytes

    def __len__(self):
        with self._lock:
            return len(self._entries)

    def get_or_compute(self, key, compute):
        """Returns the value kept under `key`, computing and keeping it if needed.

        Several threads asking for the same missing key compute it once.
        Exceptions are raised to every caller and never kept.
        """
        found, value = self._get(key)
        if found:
            return value
        with self._lock:
            key_lock = self._computing.setdefault(key, threading.Lock())
        with key_lock:
            found, value = self._get(key)
            if not found:
                try:
                    value = _read_only(compute())
                    self._put(key, value, size_in_bytes(value))
                finally:
                    with self._lock:
                        self._computing.pop(key, None)
        return value

    def clear(self):
        """Forgets every value."""
        with self._lock:
            self._entries.clear()
            self._bytes = 0

    def _get(self, key):
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return False, None
            self._entries.move_to_end(key)
            return True, entry[0]

    def _put(self, key, value, size):
        if size > self.max_bytes:
            return
        with self._lock:
            if key in self._entries:
                self._bytes -= self._entries.pop(key)[1]
            self._entries[key] = (value, size)
            self._bytes += size
            while self._bytes > self.max_bytes:
                _, (_, dropped) = self._entries.popitem(last=False)
                self._bytes -= dropped


def size_in_bytes(value):
    """The bytes a cached value holds: its arrays and byte strings, recursively."""
    if isinstance(value, np.ndarray):
        return value.nbytes
    if isinstance(value, (bytes, bytearray)):
        return len(value)
    if isinstance(value, dict):
        return sum(size_in_bytes(key) + size_in_bytes(item) for key, item in value.items())
    if isinstance(value, (list, tuple)):
        return sum(size_in_bytes(item) for item in value) + 8 * len(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return sum(size_in_bytes(getattr(value, field.name)) for field in dataclasses.fields(value))
    return 64


def _read_only(value):
    """Makes the arrays in a cached value read-only: every session shares them."""
    if isinstance(value, np.ndarray):
        value.setflags(write=False)
    elif isinstance(value, dict):
        for item in value.values():
            _read_only(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            _read_only(item)
    return value


_MEMORY = ByteBudgetCache(MEMORY_CACHE_BYTES)


def cache_in_memory(spinner=None):
    """Caches a function's results in the shared byte-bounded cache.

    Like `st.cache_data`, the key is the function and its arguments, except
    those whose names start with "_" (the model and image objects, always
    passed together with the keys that name them). Unlike it, values are
    shared, not copied (their arrays are made read-only), and what all cached
    values take together is bounded by `MEMORY_CACHE_BYTES`.

    Args:
        spinner: Text shown while a missing value is computed, or None.
    """

    def decorate(function):
        signature = inspect.signature(function)

        def key_of(args, kwargs):
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            return (function.__qualname__,) + tuple(
                (name, value) for name, value in bound.arguments.items() if not name.startswith("_")
            )

        @functools.wraps(function)
        def cached_function(*args, **kwargs):
            key = key_of(args, kwargs)

            def compute():
                if spinner is None:
                    return function(*args, **kwargs)
                with st.spinner(spinner):
                    return function(*args, **kwargs)

            return _MEMORY.get_or_compute(key, compute)

        def lookup(*args, **kwargs):
            # (found, value) without computing: for results that long jobs compute.
            return _MEMORY._get(key_of(args, kwargs))

        def keep(value, *args, **kwargs):
            # Keeps a value computed elsewhere (by a queue's worker) as if this
            # function had computed it; returns the value kept.
            return _MEMORY.get_or_compute(key_of(args, kwargs), lambda: value)

        cached_function.lookup = lookup
        cached_function.keep = keep
        return cached_function

    return decorate


def clear_memory_caches():
    """Forgets every array and picture computed so far (models stay)."""
    _MEMORY.clear()
    st.cache_data.clear()


def content_hash(data):
    """The SHA-256 of some bytes, as hex: the key of an upload."""
    return hashlib.sha256(data).hexdigest()


def _load_offline_models_for_good():
    """Loads the offline built-in models once per server process, and freezes them.

    After every script run Streamlit calls `keras.backend.clear_session()`
    and `gc.collect(2)`, two full collections that each scan every Python
    object of TensorFlow and the loaded models: about 0.2 s apiece, most of a
    rerun. Objects that live as long as the server need no scanning, so they
    are moved to the collector's permanent generation (`gc.freeze`) and
    reruns take about 50 ms.

    This runs when this module is first imported, that is while the first
    session's script is at its `import` line and every other session waits
    on Python's import lock: no session holds a photo or a map yet, so the
    freeze takes only TensorFlow, the models and Streamlit's own start-up
    objects. (Freezing at a model's first use, as ConvViz did before, also
    froze whatever the open sessions held at that moment, for good.) Objects
    made later, keras.applications models and uploads included, are
    collected as usual.

    Returns:
        {name: VisionModel} of the models that need no download.
    """
    models = {
        name: load_model(name) for name, entry in BUILTIN_MODELS.items() if entry.weights_file is None
    }
    gc.collect()
    gc.freeze()
    return models


_OFFLINE_MODELS = _load_offline_models_for_good()


@st.cache_resource(max_entries=len(BUILTIN_MODELS), show_spinner="Loading the model...")
def builtin_model(name):
    """A built-in model by name, loaded once per server (the offline ones at start-up)."""
    if name in _OFFLINE_MODELS:
        return _OFFLINE_MODELS[name]
    return load_model(name)


@st.cache_resource(max_entries=1, show_spinner="Reading the model file...")
def served_model_file(path):
    """The bytes and SHA-256 of the model file `convviz serve` named, read once per server.

    Raises:
        InputError: If the file cannot be read.
    """
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise InputError(f"The model file {path} could not be read ({error.strerror}).") from None
    return hashlib.sha256(data).hexdigest(), data


@st.cache_resource(max_entries=UPLOADED_MODEL_ENTRIES, show_spinner="Checking and loading your model...")
def uploaded_model(upload_hash, file_name, _data, preprocess, class_names, input_size):
    """Loads an uploaded `.keras` / `.h5` file, once per content and settings.

    `convviz_core.load_uploaded_model` writes the bytes to a temporary folder
    it creates (never a path built from the user's file name), checks the
    file in a limited child process, loads it with Keras's safe mode and
    deletes it. Errors are not cached: Streamlit caches only return values
    (and core remembers files it refused for good).

    Args:
        upload_hash: `content_hash(_data)`, the cache key of the bytes.
        file_name: The user's file name (for its suffix and the display name).
        _data: The file's bytes.
        preprocess: A preset name from `models.PREPROCESS_PRESETS`.
        class_names: A tuple of names, or None.
        input_size: (height, width) for a model that accepts any size.

    Raises:
        InputError: If the file is not a model ConvViz can load safely.
    """
    model = load_uploaded_model(
        _data,
        file_name,
        preprocess=preprocess,
        class_names=list(class_names) if class_names else None,
        input_size=input_size,
    )
    if queue_configured():
        # A queue's workers load the file from the shared cache, through the
        # same checks, for this model's long jobs (`model_source`).
        try:
            _UPLOAD_SOURCES[model] = upload_source(_data, file_name, preprocess, class_names, input_size)
        except OSError:
            pass  # No shared cache to write to: this model's long jobs stay in this process.
    return model


# Uploaded models whose file is in the shared cache: VisionModel -> `ModelSource`.
_UPLOAD_SOURCES = weakref.WeakKeyDictionary()


def queue_configured():
    """Whether long jobs go to a queue's workers (`CONVVIZ_QUEUE_URL` is set)."""
    return bool(os.environ.get("CONVVIZ_QUEUE_URL", "").strip())


def model_source(model_key, model):
    """How a queue's worker loads `model` (a `ModelSource`), or None when its long jobs stay in this process.

    None without a queue (`CONVVIZ_QUEUE_URL`), and for an uploaded model
    whose file could not be stored in the shared cache.
    """
    if not getattr(job_pool(), "runs_remote_calls", False):
        return None
    if str(model_key).startswith("builtin:") and model.name == model_key.removeprefix("builtin:"):
        return builtin_source(model)
    return _UPLOAD_SOURCES.get(model)


@cache_in_memory(spinner="Reading the image...")
def decoded_image(upload_hash, _data):
    """Decodes an uploaded image once per content; large photos are shrunk.

    Returns:
        (RGB uint8 array, tuple of notes for the user).

    Raises:
        InputError: If the file is not an image ConvViz can read.
    """
    info = load_image_info(_data)
    pixels = fit_within(info.pixels)
    notes = list(info.notes)
    if pixels.shape != info.pixels.shape:
        height, width = info.pixels.shape[:2]
        notes.append(
            f"The {width}×{height} photo is shown at {pixels.shape[1]}×{pixels.shape[0]}; "
            "the model sees it at its own input size anyway."
        )
    return pixels, tuple(notes)


@st.cache_data(max_entries=48, show_spinner=False)
def display_jpeg(image_key, _image, width):
    """A picture as JPEG bytes at most `width` pixels wide, for `st.image(..., output_format="JPEG")`.

    Encoded once per image and width: `st.image` given the array would
    encode it (and shrink and encode it again) on every run of every session.

    Args:
        image_key: Names `_image` (and the model, for what a model sees).
        _image: RGB uint8 array.
        width: The width it is shown at, in pixels.
    """
    return figures.jpeg_bytes(_image, width)


@cache_in_memory(spinner="Computing the activations...")
def layer_activations(model_key, _model, image_key, _image, layer_names):
    """The activations of some layers for one image: only those are computed and kept.

    `convviz_core.activations` serves every choice of layers from a few
    compiled functions per model, so sweeping the layer slider never waits
    for TensorFlow to trace a new graph.

    Returns:
        {layer name: float32 array (height, width, channels)}, read-only.
    """
    return activations(_model, _image, layer_names)


@dataclasses.dataclass(frozen=True)
class LayerGrid:
    """One layer's all-channels grid, ready to show."""

    png: bytes
    channels: int
    height: int
    width: int
    dead: tuple


@cache_in_memory(spinner="Drawing the channels...")
def layer_grid(model_key, _model, image_key, _image, layer_name):
    """The book's figure 5-27 for one layer: every channel, in viridis, as PNG."""
    activation = layer_activations(model_key, _model, image_key, _image, (layer_name,))[layer_name]
    height, width, channels = activation.shape
    picture = figures.enlarge_tiles(figures.viridis(activation_grid(activation)), max(height, width))
    return LayerGrid(
        png=figures.png_bytes(picture),
        channels=channels,
        height=height,
        width=width,
        dead=tuple(int(index) for index in dead_channels(activation)),
    )


@cache_in_memory()
def overlay_png(model_key, image_key, layer_name, class_index, alpha, _image, _heatmap):
    """The heatmap superimposed on the image (book fig. 5-36), as PNG bytes."""
    return figures.png_bytes(overlay(_image, _heatmap, alpha))


@cache_in_memory()
def channel_overlay_png(model_key, image_key, layer_name, channel, _image, _channel_map):
    """Where one channel fires, superimposed on the image, as PNG bytes."""
    return figures.png_bytes(overlay(_image, _channel_map, 0.5))


@st.cache_data(max_entries=8, show_spinner=False)
def model_view(model_key, _model):
    """The model's summary (`convviz_core.summary.ModelSummary`)."""
    return summarize_model(_model.keras_model)


@st.cache_resource
def atlas_store():
    """The server's one filter-atlas cache, shared by every session; it computes in `job_pool()`."""
    return FilterAtlasCache(pool=job_pool())


@st.cache_data(max_entries=16, show_spinner=False)
def atlas_grid_png(atlas_key, _patterns):
    """The 8x8 grid of an atlas (book fig. 5-30) as PNG bytes."""
    return figures.png_bytes(pattern_grid(_patterns, cols=8))


def model_input(model, image):
    """The image resized to the model's input, as the model sees it."""
    return resize_to(np.asarray(image), model.input_size)


# How many queued long jobs may be ahead of a new one before the page offers
# to wait in line (`CONVVIZ_MAX_QUEUED_JOBS`), and how long one user's job may
# run (`CONVVIZ_JOB_TIME_LIMIT`, seconds). A built-in model's default atlas
# has no limit: it is computed once for everyone.
MAX_QUEUED_JOBS = int(os.environ.get("CONVVIZ_MAX_QUEUED_JOBS", "8"))
JOB_TIME_LIMIT = float(os.environ.get("CONVVIZ_JOB_TIME_LIMIT", "300"))


def session_alive(session_id):
    """Whether a Streamlit session is still connected (for the job pool's probe).

    Outside a server (AppTest between runs, tools) nothing is known, so every
    session counts as alive.
    """
    from streamlit.runtime import Runtime

    if not Runtime.exists():
        return True
    return Runtime.instance().is_active_session(session_id) is not False


@st.cache_resource
def job_pool():
    """The server's one pool for long computations (atlases, Score-CAM, sanity checks).

    One worker: on a small server a second long job would only halve the
    speed of the first and take the core the interactive views need. Jobs of
    sessions that have disconnected are cancelled. With `CONVVIZ_QUEUE_URL`
    set, the jobs that can travel go to RQ workers (`convviz_core.job_queue`).
    """
    return make_job_pool(workers=1, max_queued=MAX_QUEUED_JOBS, time_limit=JOB_TIME_LIMIT, session_alive=session_alive)


def current_session_id():
    """The id of the Streamlit session running this script, or None outside one."""
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    context = get_script_run_ctx()
    return context.session_id if context is not None else None


# The uploads of one session that dataset examples look through (the newest).
SESSION_UPLOADS_KEPT = 8
_SESSION_UPLOADS_KEY = "convviz_session_uploads"


def remember_upload(selection):
    """Keeps a session's uploaded photo (by key) for the unit view's dataset examples."""
    if not selection.image_key.startswith("upload:"):
        return
    uploads = st.session_state.setdefault(_SESSION_UPLOADS_KEY, {})
    uploads.pop(selection.image_key, None)
    uploads[selection.image_key] = (selection.image_title, selection.image)
    while len(uploads) > SESSION_UPLOADS_KEPT:
        uploads.pop(next(iter(uploads)))


def session_images(selection):
    """The sample photos and this session's uploads: {image key: RGB uint8 array}."""
    remember_upload(selection)
    images = {f"sample:{name}": sample_image(name) for name in sample_names()}
    for key, (_, pixels) in st.session_state.get(_SESSION_UPLOADS_KEY, {}).items():
        images[key] = pixels
    return images


def image_title(image_key):
    """How to name an image of `session_images` to the user."""
    if image_key.startswith("sample:"):
        return image_key.removeprefix("sample:")
    title, _ = st.session_state.get(_SESSION_UPLOADS_KEY, {}).get(image_key, ("your upload", None))
    return title


@cache_in_memory(spinner="Looking for the unit in the photos...")
def unit_examples(model_key, _model, image_keys, _images, layer_name, channel, count):
    """The patches of some images where one unit fires most (`dataset_examples`), strongest first."""
    return dataset_examples(
        _model,
        layer_name,
        channel,
        _images,
        count=count,
        layer_activations=lambda key, image: layer_activations(model_key, _model, key, image, (layer_name,))[layer_name],
    )


@cache_in_memory()
def set_examples(model_key, _model, set_digest, _image_set, layer_name, channel, count, _progress=None):
    """The patches of a user's set where one unit fires most, and the images skipped
    (`dataset_examples_of_image_set`); run it in the job pool (`image_sets.unit_examples_of_set`)."""
    return dataset_examples_of_image_set(_model, layer_name, channel, _image_set, count=count, progress=_progress)


def warm_up_default_atlases():
    """Starts computing each offline model's default atlases, for the class's first visitors.

    The book's method first, then the clear mode, at the pool's lowest
    priority: any user's request runs first, and a warm-up job that is
    running makes way for it. Atlases already on disk cost nothing.
    `CONVVIZ_WARM_UP=0` turns this off (the test suite does).

    Returns:
        The `JobTicket`s, one per (model, method).
    """
    if os.environ.get("CONVVIZ_WARM_UP", "1") == "0":
        return []
    store = atlas_store()
    tickets = []
    for method in METHODS:
        for model in _OFFLINE_MODELS.values():
            request = atlas_service.grid_request(model, atlas_service.default_atlas_choice(model, method))
            try:
                tickets.append(
                    store.submit(
                        model,
                        request,
                        use_disk=True,
                        priority=Priority.BACKGROUND,
                        wait_in_line=True,
                        time_limit=math.inf,
                    )
                )
            except InputError:
                # The queue (CONVVIZ_QUEUE_URL) is away: the pages that need
                # no queue still work, and a page that needs one says so.
                return tickets
    return tickets


# Started once per server process, when this module is first imported.
_WARM_UP = warm_up_default_atlases()


# --- The CAM family, its faithfulness scores and the sanity check (issue 11) ---------
#
# A map is cheap (one pass, a fraction of a second) except Score-CAM; scoring
# a map (RISE deletion and insertion, 2 x (steps + 1) masked passes), the
# random-map chance level and the sanity check take seconds: they run in
# `job_pool()` (see `convviz_app.comparison.run_long_job`) and keep their
# results here, so every session and both pages (Grad-CAM, Compare) share them.


@cache_in_memory(spinner="Computing the map...")
def class_map(model_key, _model, image_key, _image, layer_name, class_index, method):
    """A fast CAM method's map of one class (None: the top class) at one layer.

    Grad-CAM goes through `grad_cam_with_probabilities`, as the Grad-CAM page
    always has. Score-CAM takes seconds: use `slow_class_map` in a long job.

    Returns:
        A `ClassMap`.
    """
    return compute_class_map(_model, _image, layer_name, class_index, method)


@cache_in_memory()
def slow_class_map(model_key, _model, image_key, _image, layer_name, class_index, method, _progress=None):
    """A slow method's (Score-CAM's) map, computed in a long job that reports `_progress`.

    Returns:
        A `ClassMap`.
    """
    return compute_class_map(_model, _image, layer_name, class_index, method, _progress)


def first_class_map(model_key, _model, image_key, _image):
    """The Grad-CAM of the top class at the default layer: a page's first pass.

    It gives every class's probability (for the top-5 table and the class
    pickers) and is reused by `class_map_reusing_first_pass`.
    """
    return class_map(model_key, _model, image_key, _image, _model.default_cam_layer(), None, "grad-cam")


def class_map_reusing_first_pass(model_key, _model, image_key, _image, layer_name, class_index, method):
    """A fast method's map, reusing the page's first pass when it is the same map.

    Returns:
        A `ClassMap`.
    """
    first = first_class_map(model_key, _model, image_key, _image)
    if method == "grad-cam" and layer_name == _model.default_cam_layer() and class_index == first.class_index:
        return first
    return class_map(model_key, _model, image_key, _image, layer_name, class_index, method)


@cache_in_memory()
def map_scores(model_key, image_key, layer_name, class_index, method, steps, _model, _image, _heatmap,
               _progress=None):
    """Deletion / insertion (`steps` per curve) and Average Drop of one method's map.

    The key names the map: model, image, layer, class and method. Methods
    whose maps are identical (Grad-CAM, XGrad-CAM and HiResCAM often are at
    a network's last layer) are scored once.

    Returns:
        A `MapScores`.
    """
    return _scores_of_map(model_key, image_key, layer_name, class_index, steps, map_digest(_heatmap), _model, _image,
                          _heatmap, _progress)


@cache_in_memory()
def _scores_of_map(model_key, image_key, layer_name, class_index, steps, heatmap_digest, _model, _image, _heatmap,
                   _progress=None):
    return score_map(_model, _image, _heatmap, class_index, layer_name, steps, _progress)


@cache_in_memory()
def chance_scores(model_key, image_key, layer_name, class_index, shape, steps, seeds, _model, _image,
                  _progress=None):
    """The random-map chance level of one image, class and layer (`explanations.chance_level`).

    Returns:
        A `convviz_core.metrics.random_baseline.RandomBaseline`.
    """
    return chance_level(_model, _image, shape, class_index, layer_name, steps, seeds, _progress)


@cache_in_memory()
def sanity_curves(model_key, image_key, layer_name, class_index, methods, _model, _image, _progress=None):
    """The cascading-randomisation sanity check of some methods (on a private copy of the model).

    Returns:
        A `convviz_core.metrics.sanity.SanityCurves`.
    """
    return cascading_randomization(_model, _image, list(methods), class_index, layer_name, progress=_progress)


@cache_in_memory()
def map_png(model_key, image_key, layer_name, class_index, method, shape, _placed_map):
    """A map placed on the model input, in the JET colours of the book's heatmap, as PNG bytes.

    Args:
        shape: (height, width) to draw it at, e.g. the image's, so that it
            lines up with the overlay beside it.
    """
    heatmap = cv2.resize(np.asarray(_placed_map, np.float32), (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR)
    return figures.png_bytes(colorize(heatmap))

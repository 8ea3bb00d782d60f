"""Cached calls into `convviz_core`: the app's one cache policy.

- Models: `st.cache_resource`, keyed by the built-in model's name or by the
  upload's content hash (plus its preprocessing, class names and input size).
  A `VisionModel` is shared by every session and never changed.
- Computed arrays and the pictures made from them: `st.cache_data`, keyed by
  model key + image key (a sample's name or the upload's content hash) +
  layer + parameters. The model and the image themselves are passed as
  `_`-prefixed arguments, which Streamlit does not hash, always together with
  the keys that name them.
- Filter atlases: `convviz_core.atlas_cache.FilterAtlasCache`, one per server
  (`st.cache_resource`). `st.cache_data` cannot hold them because an atlas
  reports progress while it is computed, and Streamlit replays the elements a
  cached function draws; the atlas cache also keeps built-in models' atlases
  on disk across restarts.

Every entry count is bounded, so a class of students uploading photos cannot
fill the server's memory.
"""

import dataclasses
import gc
import hashlib

import numpy as np
import streamlit as st

from convviz_core import activation_grid, activations, dead_channels, load_model, load_uploaded_model, overlay
from convviz_core.features.atlas_cache import FilterAtlasCache
from convviz_core.cam.gradcam import grad_cam_with_probabilities
from convviz_core.inputs.images import load_image_info, resize_to
from convviz_core.models.registry import BUILTIN_MODELS
from convviz_core.features.patterns import pattern_grid
from convviz_core.graph.summary import summarize_model

from convviz_app import figures

UPLOADED_MODEL_ENTRIES = 4


def content_hash(data):
    """The SHA-256 of some bytes, as hex: the key of an upload."""
    return hashlib.sha256(data).hexdigest()


def keep_for_good(model):
    """Takes everything alive now (TensorFlow, the model) out of the garbage collector's sight.

    After every script run Streamlit calls `keras.backend.clear_session()`
    and `gc.collect(2)`, two full collections that each scan every Python
    object of TensorFlow and the loaded models: about 0.2 s apiece, most of a
    rerun. Objects that live as long as the server need no scanning, so once
    a built-in model is loaded they are moved to the collector's permanent
    generation (`gc.freeze`); everything made later is collected as usual.
    Frozen objects are still freed when their reference count drops to zero,
    only cycles among them are not, so this is done only for what stays.

    The freeze also takes whatever the sessions open at that moment hold (a
    photo, its maps), and what of it ends up in a cycle is never collected.
    That is bounded: built-in models are loaded once per server and never
    evicted, so this happens at most once per built-in model, usually on the
    first visit, when one session is open.

    Returns:
        `model`.
    """
    gc.collect()
    gc.freeze()
    return model


# Built-in models are never evicted (there are few of them), so freezing them
# after loading never keeps a dropped model alive.
@st.cache_resource(max_entries=len(BUILTIN_MODELS), show_spinner="Loading the model...")
def builtin_model(name):
    """Loads a built-in model by name, once per server."""
    return keep_for_good(load_model(name))


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
    # Not frozen (see `keep_for_good`): an upload is dropped again when newer
    # ones push it out of this cache, and must then be collected.
    return load_uploaded_model(
        _data,
        file_name,
        preprocess=preprocess,
        class_names=list(class_names) if class_names else None,
        input_size=input_size,
    )


@st.cache_data(max_entries=8, show_spinner="Reading the image...")
def decoded_image(upload_hash, _data):
    """Decodes an uploaded image once per content; large photos are shrunk.

    Returns:
        (RGB uint8 array, tuple of notes for the user).

    Raises:
        InputError: If the file is not an image ConvViz can read.
    """
    info = load_image_info(_data)
    pixels = figures.fit_within(info.pixels)
    notes = list(info.notes)
    if pixels.shape != info.pixels.shape:
        height, width = info.pixels.shape[:2]
        notes.append(
            f"The {width}×{height} photo is shown at {pixels.shape[1]}×{pixels.shape[0]}; "
            "the model sees it at its own input size anyway."
        )
    return pixels, tuple(notes)


@st.cache_data(max_entries=16, show_spinner=False)
def thumbnail(image_key, _image, side=64):
    """A small square-ish preview of an image, for the sample gallery."""
    return figures.fit_within(_image, side)


@st.cache_data(max_entries=24, show_spinner="Computing the activations...")
def layer_activations(model_key, _model, image_key, _image, layer_names):
    """The activations of some layers for one image.

    Every layer comes from one compiled function per model (the forward pass
    is a fraction of a second), so sweeping the layer slider never waits for
    TensorFlow to trace a new graph.

    Returns:
        {layer name: float32 array (height, width, channels)}.
    """
    everything = activations(_model, _image, _model.layer_names)
    return {name: everything[name] for name in layer_names}


@dataclasses.dataclass(frozen=True)
class LayerGrid:
    """One layer's all-channels grid, ready to show."""

    png: bytes
    channels: int
    height: int
    width: int
    dead: tuple


@st.cache_data(max_entries=48, show_spinner="Drawing the channels...")
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


@st.cache_data(max_entries=64, show_spinner="Computing Grad-CAM...")
def class_activation(model_key, _model, image_key, _image, layer_name, class_index):
    """Grad-CAM of one class (None: the top class) at one layer.

    Returns:
        (heatmap float32 (h, w) in [0, 1], probabilities float32 (classes,)).
    """
    return grad_cam_with_probabilities(_model, _image, class_index, layer_name)


@st.cache_data(max_entries=32, show_spinner=False)
def overlay_png(model_key, image_key, layer_name, class_index, alpha, _image, _heatmap):
    """The heatmap superimposed on the image (book fig. 5-36), as PNG bytes."""
    return figures.png_bytes(overlay(_image, _heatmap, alpha))


@st.cache_data(max_entries=32, show_spinner=False)
def channel_overlay_png(model_key, image_key, layer_name, channel, _image, _channel_map):
    """Where one channel fires, superimposed on the image, as PNG bytes."""
    return figures.png_bytes(overlay(_image, _channel_map, 0.5))


@st.cache_data(max_entries=8, show_spinner=False)
def model_view(model_key, _model):
    """The model's summary (`convviz_core.summary.ModelSummary`)."""
    return summarize_model(_model.keras_model)


@st.cache_resource
def atlas_store():
    """The server's one filter-atlas cache, shared by every session."""
    return FilterAtlasCache()


@st.cache_data(max_entries=16, show_spinner=False)
def atlas_grid_png(atlas_key, _patterns):
    """The 8x8 grid of an atlas (book fig. 5-30) as PNG bytes."""
    return figures.png_bytes(pattern_grid(_patterns, cols=8))


def model_input(model, image):
    """The image resized to the model's input, as the model sees it."""
    return resize_to(np.asarray(image), model.input_size)

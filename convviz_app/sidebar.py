"""The sidebar every page shares: the model picker, the image picker and the preview.

`app.py` draws it once per run with `render_sidebar()`, before the page runs;
the page reads the choice with `current_selection()`.
"""

import dataclasses
import hashlib
import os
from pathlib import Path

import numpy as np
import streamlit as st

from convviz_app import cached
from convviz_app.address import Address, lesson_mode, one_of, share_panel
from convviz_core import InputError, available_models
from convviz_core.inputs.file_names import display_name
from convviz_core.inputs.images import ALLOWED_FORMATS, MAX_FILE_BYTES
from convviz_core.inputs.samples import sample_captions, sample_image, sample_names
from convviz_core.models.registry import (
    DEFAULT_MODEL,
    MODEL_FILE_SUFFIXES,
    PREPROCESS_PRESETS,
    parse_class_names,
)

SELECTION_KEY = "convviz_selection"
UPLOAD_CHOICE = "upload"
SERVED_CHOICE = "served"
# Set by `convviz serve MODEL`: a built-in name, or the path of a model file
# the command has checked; read by the model picker, which opens on it.
SERVE_MODEL_VARIABLE = "CONVVIZ_SERVE_MODEL"
SERVE_PREPROCESS_VARIABLE = "CONVVIZ_SERVE_PREPROCESS"
DEFAULT_SAMPLE = "chelsea"
SAMPLE_TITLES = {
    "chelsea": "Cat",
    "coffee": "Coffee",
    "rocket": "Rocket",
    "astronaut": "Astronaut",
    "camera": "Camera",
}
THUMBNAIL_WIDTH = 48
PREVIEW_WIDTH = 160
IMAGE_TYPES = ["jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff"]
# The widget keys that tests (and `bench/`) set.
MODEL_CHOICE_KEY = "model_choice"
SAMPLE_CHOICE_KEY = "sample_choice"
IMAGE_UPLOAD_KEY = "image_file"
MODEL_UPLOAD_KEY = "model_file"
CLASS_NAMES_UPLOAD_KEY = "class_names_file"
PRESET_KEY = "model_preset"
INPUT_SIDE_KEY = "model_input_side"
CAMERA_ON_KEY = "camera_on"
CAMERA_PHOTO_KEY = "camera_photo"


@dataclasses.dataclass(frozen=True, eq=False)
class Selection:
    """What the sidebar chose, for the page to show.

    Attributes:
        model_key: The cache key of the model ("builtin:efficientnet-lite0",
            "upload:<hash>:..."), or None when no model could be loaded.
        model: The `VisionModel`, or None.
        model_title: How to name the model to the user.
        is_builtin: Whether it is one of ConvViz's built-in models.
        image_key: The cache key of the image ("sample:chelsea",
            "upload:<hash>").
        image: RGB uint8 array (height, width, 3).
        image_title: How to name the image to the user.
    """

    model_key: str | None
    model: object
    model_title: str
    is_builtin: bool
    image_key: str
    image: np.ndarray
    image_title: str


def render_sidebar():
    """Draws the shared sidebar and remembers the choice for the page.

    Every error a user can cause (a broken model or image file, a model whose
    weights are missing) is shown with `st.error` here, and the rest of the
    app keeps working with what could be loaded.

    Returns:
        A `Selection`.
    """
    address = Address("sidebar")
    with st.sidebar:
        if not lesson_mode():
            st.header("Model")
        model_key, model, model_title, is_builtin = _model_picker(address)
        st.header("Image")
        image_key, image, image_title = _image_picker(address)
        _preview(model_key, model, image_key, image)
        selection = Selection(model_key, model, model_title, is_builtin, image_key, image, image_title)
        share_panel(selection)
    st.session_state[SELECTION_KEY] = selection
    cached.remember_upload(selection)
    return selection


def current_selection():
    """The sidebar's choice for this run (drawn by `app.py` before the page)."""
    selection = st.session_state.get(SELECTION_KEY)
    if selection is None:
        # Only a view run without app.py gets here (a tool or test running
        # one file of `pages/` alone): draw the sidebar now.
        selection = render_sidebar()
    return selection


def require_model(selection, spatial=True):
    """The selected model; stops the page with a hint when there is nothing to show.

    Args:
        selection: The sidebar's `Selection`.
        spatial: Whether the page needs layers with a (height, width,
            channels) output, as every view but the summary does.
    """
    model = selection.model
    if model is None:
        st.info(
            "Choose a model that loads in the sidebar to see this view: the offline "
            "EfficientNet-Lite0 and the book's small convnet always do."
        )
        st.stop()
    if spatial and not model.layer_names:
        st.error(
            f"The model '{model.name}' has no layer with a spatial (height, width, channels) "
            "output, so this view has nothing to show. Its layers are on the Model page; "
            "choose a convolutional model for this view."
        )
        st.stop()
    return model


def page_intro(title, text, selection):
    """The opening of a page: its title, two or three plain sentences, and what is shown."""
    st.title(title)
    st.markdown(text)
    model = selection.model
    if model is not None:
        st.caption(f"Model: {selection.model_title} · Image: {selection.image_title}")


def _model_picker(address):
    availability = {entry.model.name: entry for entry in available_models()}
    options = [*availability, UPLOAD_CHOICE]
    default = DEFAULT_MODEL
    served = os.environ.get(SERVE_MODEL_VARIABLE, "").strip()
    if served in availability:
        default = served
    elif served:
        options.insert(0, SERVED_CHOICE)
        default = SERVED_CHOICE

    def label(name):
        if name == UPLOAD_CHOICE:
            return "Your own model (.keras / .h5)"
        if name == SERVED_CHOICE:
            return f"{display_name(Path(served).name)} (from convviz serve)"
        entry = availability[name]
        return entry.model.title + ("" if entry.usable else " (weights not on this machine)")

    # A link names a built-in model; an uploaded model cannot travel in one.
    address.take_link("model", MODEL_CHOICE_KEY, one_of(availability))
    if lesson_mode():
        choice = st.session_state.get(MODEL_CHOICE_KEY, default)
    else:
        choice = st.selectbox(
            "Model",
            options,
            index=options.index(default),
            format_func=label,
            key=MODEL_CHOICE_KEY,
            help="The offline models work everywhere; the others need their ImageNet weights.",
        )
    if choice in (UPLOAD_CHOICE, SERVED_CHOICE) and "model" in st.query_params:
        del st.query_params["model"]
    if choice == UPLOAD_CHOICE:
        return _uploaded_model()
    if choice == SERVED_CHOICE:
        return _served_model(served)
    address.show("model", choice)
    entry = availability[choice]
    if not lesson_mode():
        st.caption(entry.model.description)
    if not entry.usable:
        st.warning(f"{entry.model.title} {entry.reason}.")
        # Nothing downloads unless the user asks for it.
        if not st.button("Try to load it", help="Downloads the weights where the internet is reachable."):
            return None, None, entry.model.title, True
    try:
        model = cached.builtin_model(choice)
    except InputError as error:
        st.error(str(error))
        return None, None, entry.model.title, True
    return f"builtin:{choice}", model, entry.model.title, True


def _uploaded_model():
    upload = st.file_uploader(
        "Model file",
        type=[suffix.lstrip(".") for suffix in MODEL_FILE_SUFFIXES],
        key=MODEL_UPLOAD_KEY,
        help="Saved with model.save('model.keras') (or a Keras .h5 file); built-in layers only.",
    )
    preset = st.selectbox(
        "Preprocessing",
        list(PREPROCESS_PRESETS),
        format_func=lambda name: f"{name}: {PREPROCESS_PRESETS[name][1]}",
        key=PRESET_KEY,
        help="What the model expects its pixels to look like: as it was trained.",
    )
    class_file = st.file_uploader(
        "Class names (optional)",
        type=["txt", "json"],
        key=CLASS_NAMES_UPLOAD_KEY,
        max_upload_size=1,
        help="One name per line, or a JSON list or {index: name} object.",
    )
    side = st.number_input(
        "Input size, for models that accept any size",
        min_value=32,
        max_value=1024,
        value=224,
        step=32,
        key=INPUT_SIDE_KEY,
    )
    if upload is None:
        st.info("Upload a .keras or .h5 model to explore it.")
        return None, None, "your model", False
    title = display_name(upload.name)
    class_names = None
    if class_file is not None:
        try:
            class_names = tuple(parse_class_names(class_file.getvalue()))
        except InputError as error:
            st.error(str(error))
            return None, None, title, False
    data = upload.getvalue()
    upload_hash = _upload_hash(upload, data)
    try:
        model = cached.uploaded_model(upload_hash, upload.name, data, preset, class_names, (int(side), int(side)))
    except InputError as error:
        st.error(str(error))
        return None, None, title, False
    names_hash = hashlib.sha256(repr(class_names).encode("utf-8")).hexdigest()[:8]
    key = f"upload:{upload_hash[:24]}:{preset}:{names_hash}:{int(side)}"
    return key, model, title, False


def _served_model(path):
    """The model file `convviz serve` named, loaded through the upload path (checked, safe mode)."""
    title = display_name(Path(path).name)
    preset = os.environ.get(SERVE_PREPROCESS_VARIABLE, "divide by 255")
    try:
        file_hash, data = cached.served_model_file(path)
        model = cached.uploaded_model(file_hash, Path(path).name, data, preset, None, (224, 224))
    except InputError as error:
        st.error(str(error))
        return None, None, title, False
    return f"upload:{file_hash[:24]}:{preset}:served:224", model, title, False


def _image_picker(address):
    names = sample_names()
    captions = sample_captions()
    st.image(
        [cached.display_jpeg(f"sample:{name}", sample_image(name), THUMBNAIL_WIDTH) for name in names],
        width=THUMBNAIL_WIDTH,
        output_format="JPEG",
    )
    sample = address.control(
        "image",
        st.radio,
        "Sample photo",
        key=SAMPLE_CHOICE_KEY,
        parse=one_of(names),
        initial=DEFAULT_SAMPLE,
        options=names,
        index=names.index(DEFAULT_SAMPLE),
        format_func=lambda name: SAMPLE_TITLES.get(name, name),
        horizontal=True,
    )
    camera_on = st.toggle(
        "Camera",
        key=CAMERA_ON_KEY,
        help="Take a photo with this device's camera; the browser asks for permission first.",
    )
    if camera_on:
        snapshot = st.camera_input("Take a photo", key=CAMERA_PHOTO_KEY)
        if snapshot is not None:
            image = _user_image(snapshot, "your camera photo")
            if image is not None:
                st.caption("Using your camera photo; take another, or turn the camera off for the sample photos.")
                return image
        else:
            st.caption("Take a photo to see it in every view; until then the sample photo is shown.")
    upload = None
    if not lesson_mode():
        upload = st.file_uploader(
            "...or upload a photo",
            type=IMAGE_TYPES,
            key=IMAGE_UPLOAD_KEY,
            max_upload_size=MAX_FILE_BYTES // 2**20,
            help=f"{', '.join(ALLOWED_FORMATS)}; up to 50 MB and 40 megapixels.",
        )
    if upload is not None:
        image = _user_image(upload, display_name(upload.name))
        if image is not None:
            st.caption("Using your photo; remove it to go back to the sample photos.")
            return image
    elif not camera_on:
        st.caption(captions[sample])
    return f"sample:{sample}", sample_image(sample), f"the sample photo '{SAMPLE_TITLES.get(sample, sample)}'"


def _user_image(upload, title):
    """(key, pixels, title) of a photo the user uploaded or took, or None (with a message) when it cannot be read."""
    data = upload.getvalue()
    upload_hash = _upload_hash(upload, data)
    try:
        pixels, notes = cached.decoded_image(upload_hash, data)
    except InputError as error:
        st.error(str(error))
        st.caption("Showing the sample photo instead.")
        return None
    for note in notes:
        st.caption(note)
    return f"upload:{upload_hash[:24]}", pixels, title


def _preview(model_key, model, image_key, image):
    # Pictures go to `st.image` as JPEG bytes encoded once (`cached.display_jpeg`):
    # every new visitor's first runs draw them.
    if model is None:
        picture = cached.display_jpeg(image_key, image, PREVIEW_WIDTH)
        st.image(picture, caption="The image", width=PREVIEW_WIDTH, output_format="JPEG")
        return
    height, width = model.input_size
    picture = cached.display_jpeg(f"{model_key}|{image_key}", cached.model_input(model, image), PREVIEW_WIDTH)
    st.image(
        picture,
        caption=f"What the model sees: {width}×{height} pixels",
        width=PREVIEW_WIDTH,
        output_format="JPEG",
    )


def _upload_hash(upload, data):
    """The content hash of an upload, computed once per uploaded file and session."""
    hashes = st.session_state.setdefault("_upload_hashes", {})
    file_id = getattr(upload, "file_id", None)
    if file_id is not None and file_id in hashes:
        return hashes[file_id]
    digest = cached.content_hash(data)
    if file_id is not None:
        if len(hashes) > 16:
            hashes.clear()
        hashes[file_id] = digest
    return digest



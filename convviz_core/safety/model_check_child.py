"""What runs in the child process that checks an uploaded model file.

`convviz_core.safety.model_check` starts this file as a script in a fresh Python
(`python -I model_check_child.py REQUEST`), never imports it into the server.
The child:

1. lowers its own resource limits (memory, CPU time, file size, no core dumps)
   before anything else, so whatever the file makes it do afterwards is bounded;
2. inspects the file's structure with the standard library and h5py only,
   without importing TensorFlow, so most broken or hostile files are refused
   in a fraction of a second (`inspect_model_file`);
3. imports ConvViz and loads the file exactly as the server will
   (`convviz_core.models.load_model_file`: safe_mode, compile=False, no custom
   objects), wraps it in a `VisionModel` and runs it once on a black image at
   its input size;
4. writes one JSON object to stdout: `{"ok": true, ...facts}`,
   `{"ok": false, "stage": ..., "error": message for the user}`, or
   `{"ok": false, "stage": "limits", "reason": "memory"}` when an allocation
   failed under the memory limit (the parent words that message).

Until step 3, this module imports only the standard library (and h5py, in
step 2), because the limits must be in place before TensorFlow, or the file,
allocates anything.

The inspection is defence in depth next to Keras's own safe_mode: it refuses
what an image model never contains (Lambda layers, objects from modules
outside Keras, Keras's non-modeling utilities, extra archive members) and what
would cost memory out of proportion to the file (a zip member or HDF5 weights
that unpack to more than the cap), with a message that says what was found.
"""

import io
import json
import os
import resource
import sys
import zipfile
from pathlib import Path

SUFFIXES = (".keras", ".h5")

# The members of a .keras archive that an image model needs. Assets (the
# vocabularies of text layers) are refused, which also keeps Keras from
# extracting the archive to disk.
KERAS_REQUIRED_MEMBERS = ("config.json", "model.weights.h5")
KERAS_OPTIONAL_MEMBERS = ("metadata.json",)
MAX_CONFIG_BYTES = 16 * 1024 * 1024
# Keras writes archive members uncompressed; a member that expands more than
# this, and by more than a mebibyte, is a zip bomb rather than a model.
MAX_EXPANSION_RATIO = 20

# Layers whose configuration carries Python code.
LAMBDA_CLASS_NAMES = ("Lambda", "__lambda__", "TFOpLambda", "SlicingOpLambda")
# Keras modules that hold utilities, not model parts: a model configuration
# that names anything in them is an attack (keras.config.enable_unsafe_deserialization,
# keras.utils.get_file, keras.saving.load_model ...). Also under "keras.src.".
NON_MODELING_MODULES = (
    "backend",
    "callbacks",
    "config",
    "datasets",
    "distribution",
    "export",
    "preprocessing",
    "saving",
    "utils",
)

# How numpy, TensorFlow and C++ say that an allocation failed.
MEMORY_ERROR_SIGNS = ("Unable to allocate", "MemoryError", "OOM when allocating", "bad_alloc")

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
ZIP_SIGNATURE = b"PK\x03\x04"
MAX_HDF5_OBJECTS = 100_000
_HDF5_ELSEWHERE_MESSAGE = (
    "The HDF5 file links to data outside itself (a link, external storage or a virtual "
    "dataset), which Keras never writes and which would read other files of the server. "
    "Save the model again with model.save('model.keras')."
)


class Refused(Exception):
    """The file cannot be used; `message` tells the user why and what to do.

    Attributes:
        stage: Which check refused it: "inspection", "keras" or "model".
        message: The user-facing explanation.
    """

    def __init__(self, stage, message):
        super().__init__(message)
        self.stage = stage
        self.message = message


def _megabytes(size):
    return f"{size / 1024**2:,.0f} MB" if size >= 1024**2 else f"{size:,} bytes"


def _foreign_format(head, names=()):
    """Names a well-known non-Keras format, from the first bytes or zip member names."""
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return (
            "a Python pickle (as written by pickle, joblib or old torch.save). ConvViz never "
            "unpickles uploads, because unpickling runs code. Save your Keras model with "
            "model.save('model.keras')."
        )
    if any(name == "data.pkl" or name.endswith("/data.pkl") for name in names):
        return (
            "a PyTorch checkpoint (torch.save). Convert the network to Keras and save it with "
            "model.save('model.keras')."
        )
    if any(name == "saved_model.pb" or name.endswith("/saved_model.pb") for name in names):
        return (
            "a TensorFlow SavedModel. ConvViz loads Keras files only: load the model in Keras "
            "and save it with model.save('model.keras')."
        )
    if head.startswith((b"\xff\xd8\xff", b"\x89PNG", b"GIF8")):
        return "an image, not a model. Upload images in the image uploader."
    return None


def inspect_model_file(path, max_unpacked_bytes):
    """Checks a model file's structure without importing TensorFlow.

    Args:
        path: The `.keras` or `.h5` file.
        max_unpacked_bytes: The most that the zip members, or the declared HDF5
            weight datasets, may add up to.

    Raises:
        Refused: With stage "inspection", if the file is not a Keras model
            file of the kind ConvViz loads.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise Refused("inspection", f"ConvViz loads .keras and .h5 model files only. Received: '{suffix}'.")
    with open(path, "rb") as file:
        head = file.read(8)
    if not head:
        raise Refused("inspection", "The model file is empty. Upload it again.")
    if suffix == ".keras":
        _inspect_keras_archive(path, head, max_unpacked_bytes)
    else:
        _inspect_h5_file(path, head, max_unpacked_bytes)


def _refuse_unless_signature(head, signature, what, other_signature, other_format):
    """Refuses a file whose first bytes are not `signature`, saying what it is instead.

    Args:
        head: The file's first bytes.
        signature: The bytes a file of the expected format starts with.
        what: The expected format, for the message ("a .keras file (a ... )").
        other_signature: The signature of the other allowed format.
        other_format: What to say when the file has `other_signature`.
    """
    if head.startswith(signature):
        return
    foreign = other_format if head.startswith(other_signature) else _foreign_format(head)
    raise Refused(
        "inspection",
        f"This is not {what}: "
        + (f"it is {foreign}" if foreign else "save your model with model.save('model.keras')."),
    )


def _inspect_keras_archive(path, head, max_unpacked_bytes):
    _refuse_unless_signature(
        head, ZIP_SIGNATURE, "a .keras file (a .keras file is a zip archive)", HDF5_SIGNATURE,
        "an HDF5 file, as Keras 2 saved models. Rename it to .h5 and upload it again.",
    )
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        raise Refused(
            "inspection",
            "The .keras file is damaged or incomplete (its zip archive cannot be read); it was "
            "probably cut off while it was copied. Save the model again and upload the new file.",
        ) from None
    with archive:
        infos = archive.infolist()
        names = [info.filename for info in infos]
        foreign = _foreign_format(head, names)
        if foreign:
            raise Refused("inspection", f"This .keras file is {foreign}")
        unpacked = sum(info.file_size for info in infos)
        for info in infos:
            if info.file_size > 1024**2 and info.file_size > MAX_EXPANSION_RATIO * max(info.compress_size, 1):
                raise Refused(
                    "inspection",
                    f"The .keras archive member '{info.filename[:100]}' unpacks from "
                    f"{_megabytes(info.compress_size)} to {_megabytes(info.file_size)} (a zip bomb). "
                    "Keras saves members uncompressed: save the model again with model.save('model.keras').",
                )
        if unpacked > max_unpacked_bytes:
            raise Refused(
                "inspection",
                f"The .keras file unpacks to {_megabytes(unpacked)}, more than the "
                f"{_megabytes(max_unpacked_bytes)} ConvViz accepts. Upload a smaller model.",
            )
        allowed = KERAS_REQUIRED_MEMBERS + KERAS_OPTIONAL_MEMBERS
        extra = [name for name in names if name not in allowed]
        if extra or len(names) != len(set(names)):
            shown = ", ".join(repr(name[:100]) for name in extra[:3]) or "a member twice"
            raise Refused(
                "inspection",
                f"The .keras file holds {shown}, which a Keras image model does not: ConvViz "
                f"accepts archives of {', '.join(allowed)} only. Save the model with "
                "model.save('model.keras').",
            )
        missing = [name for name in KERAS_REQUIRED_MEMBERS if name not in names]
        if missing:
            raise Refused(
                "inspection",
                f"The .keras file has no {' or '.join(missing)}, so it is not a saved Keras model. "
                "Save your model with model.save('model.keras').",
            )
        if any(info.flag_bits & 0x1 for info in infos):
            raise Refused("inspection", "The .keras file is encrypted. Upload an unencrypted file.")
        if archive.getinfo("config.json").file_size > MAX_CONFIG_BYTES:
            raise Refused(
                "inspection",
                f"The model's config.json is larger than {_megabytes(MAX_CONFIG_BYTES)}; "
                "no image model needs that much. Upload a different model.",
            )
        try:
            config_text = archive.read("config.json")
            weights = archive.read("model.weights.h5")
        except (zipfile.BadZipFile, OSError, EOFError, ValueError):
            raise Refused(
                "inspection",
                "The .keras file is damaged (a member fails its checksum). Save the model again "
                "and upload the new file.",
            ) from None
    inspect_model_config(_parse_json(config_text, "config.json"))
    if not weights.startswith(HDF5_SIGNATURE):
        raise Refused("inspection", "The model's weights (model.weights.h5) are not an HDF5 file. Save the model again.")
    _inspect_hdf5(io.BytesIO(weights), max_unpacked_bytes, needs_model_config=False)


def _inspect_h5_file(path, head, max_unpacked_bytes):
    _refuse_unless_signature(
        head, HDF5_SIGNATURE, "an .h5 model file (an .h5 file is HDF5)", ZIP_SIGNATURE,
        "a zip archive, as .keras files are. Rename it to .keras and upload it again.",
    )
    _inspect_hdf5(path, max_unpacked_bytes, needs_model_config=True)


def _parse_json(text, name):
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        raise Refused("inspection", f"The model's {name} is not valid JSON. Save the model again.") from None


def _inspect_hdf5(source, max_unpacked_bytes, needs_model_config):
    """Checks an HDF5 model or weights file: the model config and the declared weight sizes.

    Only metadata is read: the declared size of a dataset is its shape times its
    item size, which a "shape bomb" sets far beyond the bytes the file stores.
    """
    import h5py  # Imported here: the limits are set before any native library loads.

    try:
        file = h5py.File(source, "r")
    except (OSError, ValueError):
        raise Refused(
            "inspection",
            "The HDF5 file is damaged or incomplete; it was probably cut off while it was "
            "copied. Save the model again and upload the new file.",
        ) from None
    with file:
        if needs_model_config:
            config = file.attrs.get("model_config")
            if config is None:
                raise Refused(
                    "inspection",
                    "This .h5 file holds weights only (saved with save_weights), not a model. "
                    "Save the whole model with model.save('model.keras').",
                )
            if isinstance(config, bytes):
                config = config.decode("utf-8", "replace")
            inspect_model_config(_parse_json(str(config), "model_config"))
        links = []

        def visit(name, link):
            links.append((name, link))
            return True if len(links) > MAX_HDF5_OBJECTS else None  # True stops the walk.

        declared = 0
        try:
            file.visititems_links(visit)
            for name, link in links[:MAX_HDF5_OBJECTS]:
                # Keras writes plain objects only. A link, external storage or a
                # virtual dataset would make Keras read another file of the server
                # into the weights, where the views would show it to the uploader.
                if not isinstance(link, h5py.HardLink):
                    raise Refused("inspection", _HDF5_ELSEWHERE_MESSAGE)
                item = file[name]
                if isinstance(item, h5py.Dataset):
                    if item.external or item.is_virtual:
                        raise Refused("inspection", _HDF5_ELSEWHERE_MESSAGE)
                    declared += int(item.size) * item.dtype.itemsize
        except (OSError, ValueError, KeyError, RuntimeError):
            raise Refused("inspection", "The HDF5 file is damaged. Save the model again and upload the new file.") from None
    if len(links) > MAX_HDF5_OBJECTS:
        raise Refused(
            "inspection",
            f"The HDF5 file holds more than {MAX_HDF5_OBJECTS:,} objects; no image model needs that many.",
        )
    if declared > max_unpacked_bytes:
        raise Refused(
            "inspection",
            f"The model's weights declare {_megabytes(declared)}, more than the "
            f"{_megabytes(max_unpacked_bytes)} ConvViz accepts (the file itself is much smaller "
            "if this is a crafted 'shape bomb'). Upload a smaller model.",
        )


def inspect_model_config(config):
    """Refuses a model configuration that names code instead of Keras layers.

    The top-level `compile_config` is skipped: with compile=False Keras never
    reads it, and it may name a user's own loss or metric.

    Raises:
        Refused: With stage "inspection".
    """
    if isinstance(config, dict):
        config = {key: value for key, value in config.items() if key != "compile_config"}
    stack = [config]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(reversed(item))
            continue
        if not isinstance(item, dict):
            continue
        class_name = item.get("class_name")
        module = item.get("module")
        if class_name in LAMBDA_CLASS_NAMES:
            raise Refused(
                "inspection",
                "The model has a Lambda layer, which stores Python code in the file; ConvViz "
                "never runs code from uploads. Replace the Lambda with built-in Keras layers "
                "and save the model again.",
            )
        if isinstance(module, str):
            _check_module(module, class_name, item.get("config"))
        elif "module" in item and module is None and class_name is not None:
            # Keras saves no module for classes and functions defined in __main__.
            raise Refused(
                "inspection",
                f"The model uses '{str(class_name)[:80]}', a custom class or function defined in "
                "a notebook or script rather than in Keras; ConvViz loads built-in Keras layers "
                "only and never runs code from uploads. Rebuild the model from built-in layers "
                "and save it again.",
            )
        stack.extend(reversed(item.values()))


def _check_module(module, class_name, config):
    root, _, rest = module.partition(".")
    named = f"{module}.{class_name if class_name != 'function' else config}"
    allowed_root = (
        root == "keras"
        # Keras maps functions saved from "builtins" to its own activations, losses ...
        or (root == "builtins" and class_name == "function")
        # A tf.TypeSpec in a config (rare) is rebuilt by TensorFlow's registry.
        or (root == "tensorflow" and class_name == "__typespec__")
    )
    if not allowed_root:
        raise Refused(
            "inspection",
            f"The model names Python code outside Keras ('{named[:120]}'), such as a custom "
            "layer class; ConvViz loads built-in Keras layers only and never runs code from "
            "uploads. Rebuild the model from built-in layers and save it again.",
        )
    submodule = rest.removeprefix("src.").partition(".")[0]
    if root == "keras" and submodule in NON_MODELING_MODULES:
        raise Refused(
            "inspection",
            f"The model's configuration calls '{named[:120]}', which is a Keras utility, not a "
            "part of a model (a file crafted to attack the loader). Upload a model saved with "
            "model.save('model.keras').",
        )


def _limit_resources(memory_bytes, cpu_seconds, file_bytes):
    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    # SIGXCPU at the soft limit; SIGKILL a few seconds later if it is caught.
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds + 5))
    resource.setrlimit(resource.RLIMIT_FSIZE, (file_bytes, file_bytes))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    # Users of the dashboard come first on a shared server.
    os.nice(5)


def _load_and_run(path, name, input_size):
    """Loads the file as the server will, and runs the model once.

    Returns:
        The facts of the report (JSON-serialisable).
    """
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    import numpy as np
    import tensorflow as tf

    from convviz_core.errors import InputError
    from convviz_core.models.vision_model import VisionModel
    from convviz_core.models.registry import load_model_file

    try:
        keras_model = load_model_file(path)
    except InputError as error:
        # load_model_file keeps the original exception as the context; Keras
        # reports a weight that failed to load inside a ValueError's text.
        original = error.__context__
        if isinstance(original, MemoryError) or any(
            sign in str(original) for sign in MEMORY_ERROR_SIGNS
        ):
            raise MemoryError from None
        raise Refused("keras", str(error)) from None
    try:
        vision_model = VisionModel(keras_model, name=name, input_size=input_size)
    except InputError as error:
        raise Refused("model", str(error)) from None
    if not vision_model.layer_names:
        raise Refused(
            "model",
            "The model has no layer with a (height, width, channels) output, such as a "
            "convolution or pooling layer, so there is nothing for ConvViz to show. Upload a "
            "convolutional network.",
        )
    height, width = vision_model.input_size
    image = np.zeros((1, height, width, vision_model.input_channels), dtype=np.float32)
    try:
        keras_model(image, training=False)
    except tf.errors.ResourceExhaustedError:
        raise MemoryError from None
    except Exception as error:  # Whatever the model raises on a plain image makes it unusable.
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0][:300]
        raise Refused(
            "model",
            f"The model failed when it ran on a test image at its input size {height}x{width}: "
            f"{first_line}. Check that it runs in Keras with model(images) and save it again.",
        ) from None
    return {
        "input_shape": list(keras_model.inputs[0].shape[1:]),
        "input_size": [height, width],
        "output_shapes": [list(output.shape[1:]) for output in keras_model.outputs],
        "layer_count": len(vision_model.plan.layers),
        "image_layer_count": len(vision_model.layer_names),
        "parameter_count": int(keras_model.count_params()),
    }


def main(arguments):
    """Checks the file described by the JSON request in `arguments[0]`.

    Returns:
        The exit status: 0 when a report was written, whatever it says.
    """
    request = json.loads(arguments[0])
    _limit_resources(request["memory_bytes"], request["cpu_seconds"], request["file_bytes"])
    # The report goes to the real stdout; anything a library prints goes to stderr.
    report_stream = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    try:
        inspect_model_file(request["path"], request["max_unpacked_bytes"])
        report = {"ok": True, **_load_and_run(request["path"], request["name"], request["input_size"])}
    except Refused as refusal:
        report = {"ok": False, "stage": refusal.stage, "error": refusal.message}
    except MemoryError:
        # The parent words this message: it knows the limit.
        report = {"ok": False, "stage": "limits", "reason": "memory"}
    report_stream.write(json.dumps(report) + "\n")
    report_stream.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

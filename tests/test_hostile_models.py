"""Hostile and broken model uploads: each is refused with an InputError and runs no code.

Every payload that carries code would, if run, create its own "canary" file;
the tests assert that no canary exists. Each row names the defence expected
to stop it (`ModelFileRefused.stage`):

- "upload": the file name or size, checked before anything is written;
- "inspection": the child's structural checks, before TensorFlow is imported;
- "keras": Keras's safe loading, in the child;
- "model": not a usable image model (the child builds a VisionModel and runs it);
- "limits": the child ran out of memory or time, or crashed.

Rows with expected stage None are files that must load and work.

The checks run in child processes (each that gets past the inspection imports
TensorFlow, 4-8 s), so the module runs every row once, two at a time, in a
fixture, and the parametrised test asserts on the outcomes.
"""

import concurrent.futures
import dataclasses
import io
import json
import pickle
import struct
import tempfile
import zipfile
import zlib
from pathlib import Path

import h5py
import keras
import numpy as np
import pytest
import tensorflow as tf

from convviz_core import InputError, VisionModel, activations, grad_cam
from convviz_core.safety.model_check import (
    MAX_MODEL_FILE_BYTES,
    ModelFileRefused,
    check_model_file,
)
from convviz_core.safety.model_check_child import inspect_model_config
from convviz_core.models.registry import load_model_file, load_uploaded_model

pytestmark = pytest.mark.filterwarnings(
    "ignore:You are saving your model as an HDF5 file:UserWarning",
    "ignore:Do not pass an `input_shape`:UserWarning",
)

SMALL_CONVNET = Path(__file__).resolve().parent.parent / "convviz_core" / "models" / "data" / "small_convnet.keras"


def _write_canary_source(canary):
    """Python source that creates the canary file."""
    return f"open({str(canary)!r}, 'w').close()"


def _small_convnet(*extra_layers, input_shape=(16, 16, 3)):
    return keras.Sequential(
        [
            keras.Input(input_shape),
            keras.layers.Conv2D(4, 3, activation="relu", name="conv"),
            *extra_layers,
            keras.layers.GlobalAveragePooling2D(name="gap"),
            keras.layers.Dense(2, activation="softmax", name="head"),
        ]
    )


def _saved(model, folder, suffix):
    path = Path(folder, f"{model.name}-{id(model)}{suffix}")
    model.save(path)
    return path.read_bytes()


def _lambda_model(canary):
    # The lambda's code object holds the canary path: running it (at load
    # time, when Keras rebuilds the graph) creates the file.
    function = eval(f"lambda x: ({_write_canary_source(canary)}, x)[1]")
    return _small_convnet(keras.layers.Lambda(function, name="payload"))


def lambda_keras(canary, folder):
    return _saved(_lambda_model(canary), folder, ".keras")


def lambda_h5(canary, folder):
    return _saved(_lambda_model(canary), folder, ".h5")


class CanaryLayer(keras.layers.Layer):
    """A custom layer that creates the canary whenever it is constructed."""

    def __init__(self, canary_path, **kwargs):
        super().__init__(**kwargs)
        self.canary_path = canary_path
        Path(canary_path).touch()

    def call(self, inputs):
        return inputs

    def get_config(self):
        return {**super().get_config(), "canary_path": self.canary_path}


def _saved_custom_layer_model(canary, module, folder):
    # Keras saves the class's module as it is when saving.
    CanaryLayer.__module__ = module
    try:
        return _saved(_small_convnet(CanaryLayer(str(canary), name="payload")), folder, ".keras")
    finally:
        CanaryLayer.__module__ = __name__


def custom_layer_notebook(canary, folder):
    # A class defined in a notebook: Keras saves it with no module at all.
    return _saved_custom_layer_model(canary, "__main__", folder)


def custom_layer_package(canary, folder):
    return _saved_custom_layer_model(canary, "canary_package.layers", folder)


def custom_layer_tf_keras_h5(canary, folder):
    # A Keras 2 custom layer in an .h5 file: its config names no module at
    # all, so only Keras can tell that the class is not one of its own.
    import tf_keras

    class CanaryLayer(tf_keras.layers.Layer):
        def __init__(self, canary_path, **kwargs):
            super().__init__(**kwargs)
            self.canary_path = canary_path
            Path(canary_path).touch()

        def get_config(self):
            return {**super().get_config(), "canary_path": self.canary_path}

    model = tf_keras.Sequential(
        [
            tf_keras.layers.Conv2D(4, 3, input_shape=(16, 16, 3)),
            CanaryLayer(str(canary)),
            tf_keras.layers.GlobalAveragePooling2D(),
        ]
    )
    path = Path(folder, "custom_layer.h5")
    model.save(path, save_format="h5")
    return path.read_bytes()


def _with_config(data, edit):
    """Rewrites the config.json of a .keras archive, keeping its other members."""
    source = zipfile.ZipFile(io.BytesIO(data))
    config = json.loads(source.read("config.json"))
    edit(config)
    result = io.BytesIO()
    with zipfile.ZipFile(result, "w") as target:
        for info in source.infolist():
            payload = json.dumps(config) if info.filename == "config.json" else source.read(info)
            target.writestr(info.filename, payload)
    return result.getvalue()


def _insert_layer(entry):
    return lambda config: config["config"]["layers"].insert(1, entry)


def non_modeling_function(canary, folder):
    # The published attack: "call" keras.config.enable_unsafe_deserialization
    # from the config, then a Lambda layer runs its code.
    entry = {
        "module": "keras.config",
        "class_name": "enable_unsafe_deserialization",
        "config": {},
        "registered_name": None,
    }
    return _with_config(lambda_keras(canary, folder), _insert_layer(entry))


def get_file_through_keras_src(canary, folder):
    # keras.utils.get_file reached through its private module path, which a
    # deny-list of public names would miss: it would copy a file to the canary.
    entry = {
        "module": "keras.src.utils.file_utils",
        "class_name": "get_file",
        "config": {"fname": str(canary), "origin": SMALL_CONVNET.as_uri()},
        "registered_name": None,
    }
    return _with_config(_saved(_small_convnet(), folder, ".keras"), _insert_layer(entry))


def os_system(canary, folder):
    entry = {
        "module": "os",
        "class_name": "system",
        "config": {"command": f"touch {canary}"},
        "registered_name": None,
    }
    return _with_config(_saved(_small_convnet(), folder, ".keras"), _insert_layer(entry))


def _bomb_dataset(file, name):
    """Replaces a weight dataset by one declaring 60000x60000 float32 (13 GiB) with no data stored."""
    del file[name]
    file.create_dataset(name, shape=(60000, 60000), dtype="float32")


def shape_bomb_h5(canary, folder):
    path = Path(folder, "shape_bomb.h5")
    path.write_bytes(_saved(_small_convnet(), folder, ".h5"))
    with h5py.File(path, "r+") as file:
        _bomb_dataset(file, _first_dataset(file, "kernel"))
    return path.read_bytes()


def shape_bomb_keras(canary, folder):
    return _with_weights(
        _saved(_small_convnet(), folder, ".keras"), folder, lambda file: _bomb_dataset(file, _first_dataset(file))
    )


def _with_weights(data, folder, edit):
    """Edits the model.weights.h5 of a .keras archive with h5py, keeping its other members."""
    source = zipfile.ZipFile(io.BytesIO(data))
    weights_path = Path(folder, f"weights-{id(edit)}.h5")
    weights_path.write_bytes(source.read("model.weights.h5"))
    with h5py.File(weights_path, "r+") as file:
        edit(file)
    result = io.BytesIO()
    with zipfile.ZipFile(result, "w") as target:
        for info in source.infolist():
            payload = weights_path.read_bytes() if info.filename == "model.weights.h5" else source.read(info)
            target.writestr(info.filename, payload)
    return result.getvalue()


def _first_dataset(file, ending=""):
    names = []
    file.visititems(
        lambda name, item: names.append(name) if isinstance(item, h5py.Dataset) and name.endswith(ending) else None
    )
    return names[0]


def external_storage_h5(canary, folder):
    # A kernel whose bytes live in another file of the server: loading it would
    # put that file into the weights, where the views would show it.
    secret = Path(folder, "server-secret.bin")
    secret.write_bytes(np.arange(108, dtype=np.float32).tobytes())
    path = Path(folder, "external_storage.h5")
    path.write_bytes(_saved(_small_convnet(), folder, ".h5"))
    with h5py.File(path, "r+") as file:
        name = _first_dataset(file, "kernel")
        shape = file[name].shape
        del file[name]
        file.create_dataset(name, shape=shape, dtype="float32", external=[(str(secret), 0, h5py.h5f.UNLIMITED)])
    return path.read_bytes()


def external_link_keras(canary, folder):
    # The same, through an HDF5 external link inside a .keras archive's weights.
    other = Path(folder, "server-weights.h5")
    with h5py.File(other, "w") as file:
        file["kernel"] = np.ones((3, 3, 3, 4), dtype=np.float32)

    def link(file):
        name = _first_dataset(file)
        del file[name]
        file[name] = h5py.ExternalLink(str(other), "/kernel")

    return _with_weights(_saved(_small_convnet(), folder, ".keras"), folder, link)


def _deflated_zeros(size):
    """A raw DEFLATE stream of `size` zero bytes (a multiple of 1 MiB), built in a blink.

    After a full flush, the compressor starts afresh, so the stream for one
    mebibyte of zeros can be repeated; an empty final block ends the stream.
    """
    chunk = bytes(1 << 20)
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = compressor.compress(chunk) + compressor.flush(zlib.Z_FULL_FLUSH)
    crc = 0
    for _ in range(size // len(chunk)):
        crc = zlib.crc32(chunk, crc)
    end = zlib.compressobj(9, zlib.DEFLATED, -15).flush()
    return block * (size // len(chunk)) + end, crc


def _zip_by_hand(members):
    """A zip archive of (name, stored bytes, method, crc, unpacked size) members."""
    body, directory = io.BytesIO(), io.BytesIO()
    for name, data, method, crc, size in members:
        offset = body.tell()
        encoded = name.encode()
        fields = (20, 0, method, 0, 0x21, crc, len(data), size, len(encoded), 0)
        body.write(struct.pack("<4s5H3I2H", b"PK\x03\x04", *fields) + encoded + data)
        directory.write(
            struct.pack("<4s6H3I5H2I", b"PK\x01\x02", 20, *fields, 0, 0, 0, 0, offset) + encoded
        )
    count = len(members)
    end = struct.pack(
        "<4s4H2IH", b"PK\x05\x06", 0, 0, count, count, directory.tell(), body.tell(), 0
    )
    return body.getvalue() + directory.getvalue() + end


def zip_bomb(canary, folder):
    # model.weights.h5 declared (honestly) as 1 GiB of zeros, stored in 1 MB.
    source = zipfile.ZipFile(io.BytesIO(_saved(_small_convnet(), folder, ".keras")))
    members = []
    for name in ("config.json", "metadata.json"):
        data = source.read(name)
        members.append((name, data, 0, zlib.crc32(data), len(data)))
    stream, crc = _deflated_zeros(1 << 30)
    members.append(("model.weights.h5", stream, 8, crc, 1 << 30))
    return _zip_by_hand(members)


def saved_model_zipped(canary, folder):
    module = tf.Module()
    module.scale = tf.Variable(2.0)
    module.call = tf.function(lambda x: x * module.scale, input_signature=[tf.TensorSpec([None, 3])])
    directory = Path(folder, "saved_model")
    tf.saved_model.save(module, str(directory))
    result = io.BytesIO()
    with zipfile.ZipFile(result, "w") as archive:
        for path in sorted(directory.rglob("*")):
            if path.is_file():
                archive.write(path, path.relative_to(directory).as_posix())
    return result.getvalue()


class CanaryPickle:
    """Unpickling this object runs `exec`, which creates the canary."""

    def __init__(self, canary):
        self.source = _write_canary_source(canary)

    def __reduce__(self):
        return (exec, (self.source,))


def pickle_file(canary, folder):
    return pickle.dumps(CanaryPickle(canary))


def torch_checkpoint(canary, folder):
    # The layout of torch.save: a zip of archive/data.pkl, archive/version, archive/data/0.
    result = io.BytesIO()
    with zipfile.ZipFile(result, "w") as archive:
        archive.writestr("archive/data.pkl", pickle.dumps(CanaryPickle(canary)))
        archive.writestr("archive/version", "3\n")
        archive.writestr("archive/data/0", bytes(64))
    return result.getvalue()


def truncated_keras(canary, folder):
    data = SMALL_CONVNET.read_bytes()
    return data[: len(data) // 2]


def truncated_h5(canary, folder):
    data = _saved(_small_convnet(), folder, ".h5")
    return data[: len(data) // 2]


def weights_only_h5(canary, folder):
    path = Path(folder, "only.weights.h5")
    _small_convnet().save_weights(path)
    return path.read_bytes()


def hdf5_named_keras(canary, folder):
    return _saved(_small_convnet(), folder, ".h5")


def empty_file(canary, folder):
    return b""


def too_large(canary, folder):
    return bytes(MAX_MODEL_FILE_BYTES + 1)


def flat_mlp(canary, folder):
    model = keras.Sequential(
        [keras.Input((784,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(10)]
    )
    return _saved(model, folder, ".keras")


def image_mlp(canary, folder):
    model = keras.Sequential(
        [keras.Input((28, 28, 1)), keras.layers.Flatten(), keras.layers.Dense(10, activation="softmax")]
    )
    return _saved(model, folder, ".keras")


def two_inputs(canary, folder):
    first, second = keras.Input((16, 16, 3)), keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(4, 3)(keras.layers.Concatenate()([first, second]))
    outputs = keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(x))
    return _saved(keras.Model([first, second], outputs, name="two_inputs"), folder, ".keras")


def two_outputs(canary, folder):
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(4, 3, activation="relu", name="conv")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    classes = keras.layers.Dense(3, activation="softmax", name="classes")(x)
    box = keras.layers.Dense(4, name="box")(x)
    return _saved(keras.Model(inputs, [classes, box], name="two_outputs"), folder, ".keras")


def memory_bomb(canary, folder):
    # A few KB of weights, but one image at its fixed 4000x4000 input size
    # makes a 4 GB activation.
    model = keras.Sequential(
        [keras.Input((4000, 4000, 3)), keras.layers.Conv2D(64, 3, padding="same"), keras.layers.GlobalMaxPooling2D()]
    )
    return _saved(model, folder, ".keras")


def book_model_tf_keras_h5(canary, folder):
    # The book's cats_and_dogs_small_2.h5, as Keras 2 (tf_keras) saved it after training.
    import tf_keras

    layers = tf_keras.layers
    model = tf_keras.Sequential(
        [
            layers.Conv2D(32, (3, 3), activation="relu", input_shape=(150, 150, 3)),
            layers.MaxPooling2D((2, 2)),
            layers.Conv2D(64, (3, 3), activation="relu"),
            layers.MaxPooling2D((2, 2)),
            layers.Conv2D(128, (3, 3), activation="relu"),
            layers.MaxPooling2D((2, 2)),
            layers.Conv2D(128, (3, 3), activation="relu"),
            layers.MaxPooling2D((2, 2)),
            layers.Flatten(),
            layers.Dropout(0.5),
            layers.Dense(512, activation="relu"),
            layers.Dense(1, activation="sigmoid"),
        ]
    )
    model.compile(loss="binary_crossentropy", optimizer=tf_keras.optimizers.RMSprop(1e-4), metrics=["acc"])
    model.fit(np.zeros((2, 150, 150, 3)), np.zeros((2, 1)), verbose=0)
    path = Path(folder, "cats_and_dogs_small_2.h5")
    model.save(path, save_format="h5")
    return path.read_bytes()


def hostile_file_name(canary, folder):
    return SMALL_CONVNET.read_bytes()


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    build: object  # build(canary path, scratch folder) -> the file's bytes.
    file_name: str  # The name the "user's" file has.
    stage: str | None  # The defence expected to stop it; None: it loads and works.
    message: str = ""  # Part of the expected message.
    keras_refuses_too: bool = False  # Keras alone, in this process, must refuse it as well.


CASES = {
    case.name: case
    for case in (
        Case("lambda_keras", lambda_keras, "model.keras", "inspection", "Lambda layer", True),
        Case("lambda_h5", lambda_h5, "model.h5", "inspection", "Lambda layer", True),
        Case("custom_layer_notebook", custom_layer_notebook, "model.keras", "inspection",
             "'CanaryLayer', a custom class", True),
        Case("custom_layer_tf_keras_h5", custom_layer_tf_keras_h5, "model.h5", "keras", "CanaryLayer", True),
        Case("custom_layer_package", custom_layer_package, "model.keras", "inspection",
             "outside Keras ('canary_package.layers.CanaryLayer')", True),
        Case("non_modeling_function", non_modeling_function, "model.keras", "inspection",
             "keras.config.enable_unsafe_deserialization", True),
        Case("get_file_through_keras_src", get_file_through_keras_src, "model.keras", "inspection",
             "Keras utility", True),
        Case("os_system", os_system, "model.keras", "inspection", "outside Keras ('os.system')", True),
        Case("shape_bomb_h5", shape_bomb_h5, "model.h5", "inspection", "declare 13,733 MB"),
        Case("shape_bomb_keras", shape_bomb_keras, "model.keras", "inspection", "declare 13,733 MB"),
        Case("external_storage_h5", external_storage_h5, "model.h5", "inspection", "links to data outside", True),
        Case("external_link_keras", external_link_keras, "model.keras", "inspection", "links to data outside", True),
        Case("zip_bomb", zip_bomb, "model.keras", "inspection", "zip bomb"),
        Case("saved_model_zipped", saved_model_zipped, "model.keras", "inspection", "TensorFlow SavedModel"),
        Case("pickle_file", pickle_file, "model.keras", "inspection", "Python pickle"),
        Case("torch_checkpoint", torch_checkpoint, "model.keras", "inspection", "PyTorch checkpoint"),
        Case("truncated_keras", truncated_keras, "model.keras", "inspection", "damaged or incomplete"),
        Case("truncated_h5", truncated_h5, "model.h5", "inspection", "damaged or incomplete"),
        Case("weights_only_h5", weights_only_h5, "model.h5", "inspection", "weights only"),
        Case("hdf5_named_keras", hdf5_named_keras, "model.keras", "inspection", "Rename it to .h5"),
        Case("empty_file", empty_file, "model.keras", "upload", "empty"),
        Case("too_large", too_large, "model.keras", "upload", "up to 200 MB"),
        Case("wrong_suffix", pickle_file, "model.pkl", "upload", "Received a file ending in '.pkl'"),
        Case("flat_mlp", flat_mlp, "model.keras", "model", "inputs of shape (784,)"),
        Case("image_mlp", image_mlp, "model.keras", "model", "no layer with a (height, width, channels) output"),
        Case("two_inputs", two_inputs, "model.keras", "model", "has 2 inputs"),
        Case("memory_bomb", memory_bomb, "model.keras", "limits", "more than 4 GB of memory"),
        Case("two_outputs", two_outputs, "model.keras", None),
        Case("book_model_tf_keras_h5", book_model_tf_keras_h5, "cats_and_dogs_small_2.h5", None),
        Case("hostile_file_name", hostile_file_name, "hf://keras-io/../../etc/passwd/model.keras", None),
    )
}


@pytest.fixture(scope="module")
def uploads(tmp_path_factory):
    """Builds every payload, then uploads each once (two checks at a time).

    Returns:
        {case name: (payload bytes, canary path, VisionModel or the exception raised)}.
    """
    scratch = tmp_path_factory.mktemp("scratch")
    canaries = tmp_path_factory.mktemp("canaries")
    server_temp = tmp_path_factory.mktemp("server-temp")
    payloads = {name: case.build(canaries / name, scratch) for name, case in CASES.items()}
    # Building the code-carrying models ran their code here, on purpose.
    for canary in canaries.iterdir():
        canary.unlink()

    def upload(name):
        try:
            return load_uploaded_model(payloads[name], CASES[name].file_name)
        except Exception as error:  # noqa: BLE001 - the test inspects whatever was raised.
            return error

    # Uploads must not leave files behind: the server's temp folder is checked after.
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(tempfile, "tempdir", str(server_temp))
        with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
            outcomes = dict(zip(CASES, pool.map(upload, CASES)))
    assert list(server_temp.iterdir()) == []
    return {name: (payloads[name], canaries / name, outcomes[name]) for name in CASES}


@pytest.mark.parametrize("name", list(CASES))
def test_upload_is_refused_or_works(name, uploads):
    case = CASES[name]
    _, canary, outcome = uploads[name]
    assert not canary.exists(), "the payload's code ran"
    if case.stage is None:
        assert isinstance(outcome, VisionModel), outcome
        image = np.random.default_rng(0).integers(0, 256, (40, 50, 3), dtype=np.uint8)
        maps = activations(outcome, image, outcome.layer_names[:2])
        assert all(np.isfinite(value).all() for value in maps.values())
        heatmap = grad_cam(outcome, image)
        assert heatmap.ndim == 2 and np.isfinite(heatmap).all()
        return
    assert isinstance(outcome, ModelFileRefused), outcome
    assert isinstance(outcome, InputError)
    assert outcome.stage == case.stage, str(outcome)
    assert case.message in str(outcome)
    assert "Traceback" not in str(outcome)


def test_file_names_are_only_used_for_suffix_and_display(uploads):
    assert uploads["hostile_file_name"][2].name == "model"
    assert uploads["book_model_tf_keras_h5"][2].name == "cats_and_dogs_small_2"
    assert uploads["two_outputs"][2].output_units == 3  # The first output is explained.


@pytest.mark.parametrize("name", [name for name, case in CASES.items() if case.keras_refuses_too])
def test_keras_alone_refuses_the_code_payloads(name, uploads, tmp_path):
    """Defence in depth: code and outside data that the inspection refuses, Keras refuses too."""
    payload, canary, _ = uploads[name]
    path = tmp_path / f"model{Path(CASES[name].file_name).suffix}"
    path.write_bytes(payload)
    with pytest.raises(InputError):
        load_model_file(path)
    assert not canary.exists()


def test_a_check_that_runs_out_of_time_is_killed():
    # Importing TensorFlow alone takes longer than this limit.
    with pytest.raises(ModelFileRefused, match="took too long") as raised:
        check_model_file(SMALL_CONVNET, time_limit_seconds=1)
    assert raised.value.stage == "limits"


def test_a_file_refused_for_good_is_refused_again_without_a_check(uploads, monkeypatch):
    def no_second_check(*args, **kwargs):
        raise AssertionError("the file was checked again")

    monkeypatch.setattr("convviz_core.models.registry.check_model_file", no_second_check)
    with pytest.raises(ModelFileRefused, match="Lambda layer"):
        load_uploaded_model(uploads["lambda_keras"][0], "again.keras")


@pytest.mark.parametrize(
    "architecture", ["ConvNeXtTiny", "EfficientNetV2B0", "MobileNetV3Small", "ResNet50", "NASNetMobile"]
)
def test_the_inspection_accepts_real_architectures(architecture):
    """No false alarms: these configs name keras.src modules (ops, LayerScale, Functional)."""
    model = getattr(keras.applications, architecture)(weights=None)
    inspect_model_config(json.loads(json.dumps(keras.saving.serialize_keras_object(model))))


def test_the_inspection_skips_only_the_top_level_compile_config():
    from convviz_core.safety.model_check_child import Refused

    custom_loss = {"module": "my_project.losses", "class_name": "FocalLoss", "config": {}, "registered_name": None}
    model = {"module": "keras", "class_name": "Sequential", "config": {"layers": []}}
    # compile=False never reads the training setup, which may name the user's own loss.
    inspect_model_config({**model, "compile_config": {"loss": custom_loss}})
    hidden = {**model, "config": {"layers": [], "compile_config": {"loss": custom_loss}}}
    with pytest.raises(Refused, match="my_project.losses.FocalLoss"):
        inspect_model_config(hidden)

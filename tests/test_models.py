"""The model registry: built-in names, keras.applications offline, presets, class names."""

import numpy as np
import pytest
import tensorflow as tf

from convviz_core import InputError, available_models, load_model, predict
from convviz_core.models import registry as models


def test_available_models_lists_every_builtin_with_offline_ones_usable(monkeypatch, tmp_path):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    listed = {entry.model.name: entry for entry in available_models()}
    assert list(listed) == [
        "efficientnet-lite0",
        "small-convnet",
        "vgg16",
        "resnet50",
        "mobilenetv2",
        "xception",
        "efficientnetb0",
    ]
    assert listed["efficientnet-lite0"].usable and listed["small-convnet"].usable
    vgg = listed["vgg16"]
    assert not vgg.usable
    assert "vgg16_weights_tf_dim_ordering_tf_kernels.h5" in vgg.reason
    assert str(tmp_path / "models") in vgg.reason


def test_a_weights_file_in_the_keras_folder_makes_a_zoo_model_usable(monkeypatch, tmp_path):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224.h5").write_bytes(b"")
    listed = {entry.model.name: entry for entry in available_models()}
    assert listed["mobilenetv2"].usable
    assert not listed["resnet50"].usable


def test_zoo_model_without_weights_raises_input_error_naming_file_and_folder(monkeypatch, tmp_path):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))

    def refuse_download(*args, **kwargs):
        # What keras.utils.get_file raises when there is no network.
        raise Exception("URL fetch failure on https://example.invalid/x.h5: None -- no network")

    import keras

    monkeypatch.setattr(keras.applications, "MobileNetV2", refuse_download)
    with pytest.raises(InputError) as raised:
        load_model("mobilenetv2")
    message = str(raised.value)
    assert "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224.h5" in message
    assert "efficientnet-lite0" in message  # Says what works instead.


@pytest.mark.parametrize(
    "name, message",
    [
        ("no-such-model", "neither a built-in model"),
        ("model.pt", "neither a built-in model"),
        ("missing.keras", "There is no model file"),
    ],
)
def test_unknown_names_and_paths_raise_input_error(name, message):
    with pytest.raises(InputError, match=message):
        load_model(name)


@pytest.mark.parametrize(
    "preset, pixel, expected",
    [
        ("divide by 255", [255.0, 0.0, 51.0], [1.0, 0.0, 0.2]),
        ("[-1, 1]", [255.0, 0.0, 127.5], [1.0, -1.0, 0.0]),
        # caffe: RGB -> BGR, minus the means (103.939, 116.779, 123.68).
        ("caffe", [200.0, 100.0, 50.0], [50.0 - 103.939, 100.0 - 116.779, 200.0 - 123.68]),
        (
            "torch",
            [255.0, 0.0, 127.5],
            [(1 - 0.485) / 0.229, (0 - 0.456) / 0.224, (0.5 - 0.406) / 0.225],
        ),
        ("none", [12.0, 34.0, 56.0], [12.0, 34.0, 56.0]),
    ],
)
def test_preprocess_presets_known_values(preset, pixel, expected):
    function = models.preprocess_preset(preset)
    result = function(tf.constant([[[pixel]]], tf.float32)).numpy()[0, 0, 0]
    np.testing.assert_allclose(result, expected, rtol=1e-5, atol=1e-4)


def test_unknown_preset_lists_the_presets():
    with pytest.raises(InputError, match="divide by 255"):
        models.preprocess_preset("imagenet")


@pytest.mark.parametrize(
    "data, expected",
    [
        (b'["cat", "dog"]', ["cat", "dog"]),
        (b'{"1": "dog", "0": "cat"}', ["cat", "dog"]),
        (b'{"0": ["n02123045", "tabby"], "1": ["n02085620", "Chihuahua"]}', ["tabby", "Chihuahua"]),
        (b"cat\ndog\n\n", ["cat", "dog"]),
        ("\ufeffchat\nchien".encode("utf-8"), ["chat", "chien"]),
    ],
)
def test_parse_class_names(data, expected):
    assert models.parse_class_names(data) == expected


@pytest.mark.parametrize(
    "data, message",
    [
        (b"", "empty"),
        (b"\xff\xfe\x00", "not UTF-8"),
        (b"[1, 2", "not valid JSON"),
        (b'{"0": "a", "2": "b"}', "no gaps"),
        (b'{"a": "b"}', "class indices"),
        (b"42", None),
    ],
)
def test_bad_class_name_files_raise_input_error(data, message):
    if message is None:
        # A bare number is read as one class name per line: harmless.
        assert models.parse_class_names(data) == ["42"]
        return
    with pytest.raises(InputError, match=message):
        models.parse_class_names(data)


def test_uploaded_keras_file_loads_with_preset_and_class_names(tmp_path):
    import keras

    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(4, 3, activation="relu", name="conv")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(2, activation="softmax", name="head")(x)
    path = tmp_path / "tiny.keras"
    keras.Model(inputs, outputs).save(path)
    model = load_model(path, preprocess="[-1, 1]", class_names=["left", "right"])
    assert model.name == "tiny"
    assert model.layer_names == ["conv"]
    image = np.full((20, 30, 3), 128, np.uint8)
    labels = {label for _, label, _ in predict(model, image, top=2)}
    assert labels == {"left", "right"}
    with pytest.raises(InputError, match="2 classes"):
        load_model(path, class_names=["only one"])


def test_a_garbage_model_file_raises_input_error(tmp_path):
    path = tmp_path / "garbage.keras"
    path.write_bytes(b"this is not a zip file")
    with pytest.raises(InputError, match="could not load this model file safely"):
        load_model(path)


def test_small_convnet_is_the_books_architecture_with_its_classes():
    model = load_model("small-convnet")
    assert model.input_size == (150, 150)
    assert model.is_binary and model.class_count == 2
    assert model.class_names == ["disc", "cross"]
    assert len(model.layer_names) == 8
    assert model.default_cam_layer() == model.layer_names[6]

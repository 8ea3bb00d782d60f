"""Tests for the offline EfficientNet-Lite0 (architecture, weights, cache)."""


import numpy as np
import pytest
import tensorflow as tf

from convviz_core.models import efficientnet_lite
from convviz_core.errors import InputError
from convviz_core.models.labels import imagenet_class_names
from convviz_core.inputs.samples import sample_image
from convviz_core.models.torch_weights import read_state_dict

_CAT_CLASSES = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat


@pytest.fixture(scope="module")
def model():
    return efficientnet_lite.build_efficientnet_lite0()


def _model_input(image):
    size = efficientnet_lite.INPUT_SIZE
    pixels = tf.image.resize(image, (size, size), antialias=True)[tf.newaxis]
    return efficientnet_lite.preprocess_efficientnet_lite(pixels)


@pytest.fixture(scope="module")
def sample_inputs():
    return tf.concat([_model_input(sample_image(name)) for name in ("coffee", "chelsea")], axis=0)


@pytest.fixture(scope="module")
def sample_probabilities(model, sample_inputs):
    return model(sample_inputs, training=False).numpy()


def test_architecture(model):
    assert model.name == "efficientnet_lite0"
    assert model.input_shape == (None, 224, 224, 3)
    assert model.output_shape == (None, 1000)
    # Every float in the .pth file (all but the 49 int64 step counters) is a Keras weight.
    assert model.count_params() == 4_694_024
    names = [layer.name for layer in model.layers]
    for expected in ("stem_conv", "block1a_dwconv", "block2b_project_conv", "top_conv"):
        assert expected in names
    assert sum(name.endswith("_dwconv") for name in names) == 16
    assert sum(name.endswith("_expand_conv") for name in names) == 15
    # Residual adds: stride 1 and equal channels, i.e. every repeat after the first.
    assert sum(name.endswith("_add") for name in names) == 9
    assert not any("se_" in name for name in names)
    predictions = model.get_layer("predictions")
    assert predictions is model.layers[-1]
    # The core recomputes the pre-softmax score from this layer's kernel and bias.
    assert predictions.get_config()["activation"] == "softmax"


@pytest.mark.parametrize(
    "layer_name, expected_shape",
    [
        ("stem_activation", (112, 112, 32)),
        ("block1a_project_bn", (112, 112, 16)),
        ("block2a_dwconv", (56, 56, 96)),
        ("block3b_add", (28, 28, 40)),
        ("block4c_add", (14, 14, 80)),
        ("block5a_project_bn", (14, 14, 112)),
        ("block6d_add", (7, 7, 192)),
        ("block7a_project_bn", (7, 7, 320)),
        ("top_activation", (7, 7, 1280)),
    ],
)
def test_feature_map_shapes(model, layer_name, expected_shape):
    assert model.get_layer(layer_name).output.shape[1:] == expected_shape


def test_preprocessing_known_values_and_gradient():
    pixels = tf.constant([0.0, 127.0, 255.0])
    with tf.GradientTape() as tape:
        tape.watch(pixels)
        scaled = efficientnet_lite.preprocess_efficientnet_lite(pixels)
    np.testing.assert_allclose(scaled.numpy(), [-127 / 128, 0.0, 1.0])
    np.testing.assert_allclose(tape.gradient(scaled, pixels).numpy(), [1 / 128] * 3)
    assert efficientnet_lite.preprocess_efficientnet_lite(np.zeros(3, np.uint8)).dtype == tf.float32


def test_coffee_is_espresso(sample_probabilities):
    coffee = sample_probabilities[0]
    assert coffee.argmax() == 967
    assert imagenet_class_names()[967] == "espresso"
    assert coffee[967] > 0.85
    np.testing.assert_allclose(coffee.sum(), 1.0, rtol=1e-5)


def test_chelsea_is_a_cat(sample_probabilities):
    chelsea = sample_probabilities[1]
    assert chelsea.argmax() in _CAT_CLASSES
    assert chelsea[list(_CAT_CLASSES)].sum() > 0.8


def _mutated_state_dicts():
    def drop(state_dict):
        del state_dict["_blocks.3._bn1.running_var"]

    def reshape(state_dict):
        state_dict["_blocks.4._depthwise_conv.weight"] = np.zeros((240, 1, 3, 3), np.float32)

    def add(state_dict):
        state_dict["_blocks.16._depthwise_conv.weight"] = np.zeros((1, 1, 3, 3), np.float32)

    return {
        "missing tensor": (drop, "has no tensor '_blocks.3._bn1.running_var'"),
        "misshaped tensor": (reshape, r"expected \(240, 1, 5, 5\)"),
        "unused tensor": (add, "does not use"),
    }


@pytest.mark.parametrize("case", sorted(_mutated_state_dicts()))
def test_weights_are_all_used_and_shape_checked(case):
    mutate, message = _mutated_state_dicts()[case]
    state_dict = read_state_dict(efficientnet_lite.efficientnet_lite0_weights_path())
    mutate(state_dict)
    fresh_model = efficientnet_lite._build_architecture()

    with pytest.raises(InputError, match=message):
        efficientnet_lite._load_torch_state_dict(fresh_model, state_dict, "test weights")


def test_loading_converts_each_time_and_writes_nothing(model, sample_inputs, sample_probabilities, tmp_path,
                                                      monkeypatch):
    # A cached copy would load no faster (bench/bench_model_load.py), so there is none.
    monkeypatch.setenv("CONVVIZ_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    loaded = efficientnet_lite.load_efficientnet_lite0()
    assert loaded is not model
    assert list(tmp_path.iterdir()) == []
    np.testing.assert_allclose(loaded(sample_inputs, training=False).numpy(), sample_probabilities, atol=1e-6)

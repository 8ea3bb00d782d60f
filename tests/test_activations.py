"""Tests for intermediate activations and their display grid (book §5.4.1)."""

import re

import keras
import numpy as np
import pytest
import tensorflow as tf

from convviz_core import InputError, VisionModel, activation_grid, activations, dead_channels
from convviz_core.intermediate_activations import TRACE_COUNTS


def scale_pixels(images):
    return images / 127.5 - 1.0


def build_plain_model():
    """A small non-nested convnet whose conv_b has one dead channel (index 3)."""
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(4, 3, activation="relu", name="conv_a")(inputs)
    x = keras.layers.MaxPooling2D(2, name="pool")(x)
    x = keras.layers.Conv2D(20, 3, activation="relu", padding="same", name="conv_b")(x)
    x = keras.layers.BatchNormalization(name="norm")(x)
    outputs = keras.layers.Dense(3, activation="softmax", name="dense")(
        keras.layers.GlobalAveragePooling2D(name="gap")(x)
    )
    model = keras.Model(inputs, outputs, name="plain")
    rng = np.random.default_rng(0)
    for layer in model.layers:
        weights = [rng.normal(0, 0.5, w.shape).astype(np.float32) for w in layer.get_weights()]
        if layer.name == "norm":
            # Moving variance must be positive; a non-trivial one checks training=False.
            weights[3] = np.abs(weights[3]) + 0.5
        if layer.name == "conv_b":
            weights[1] = np.abs(weights[1]) + 2.0  # Every other channel fires somewhere.
            weights[1][3] = -1000.0  # A bias no input can overcome: channel 3 never fires.
        layer.set_weights(weights)
    return model


@pytest.fixture(scope="module")
def keras_model():
    return build_plain_model()


@pytest.fixture(scope="module")
def model(keras_model):
    return VisionModel(keras_model, preprocess=scale_pixels)


@pytest.fixture(scope="module")
def image():
    return np.random.default_rng(1).integers(0, 256, (16, 16, 3), dtype=np.uint8)


def test_layer_names_are_the_4d_layers_in_model_order(model):
    assert model.layer_names == ["conv_a", "pool", "conv_b", "norm"]


def test_activations_equal_a_keras_multi_output_model(keras_model, model, image):
    names = ["conv_a", "pool", "conv_b", "norm"]
    reference = keras.Model(keras_model.input, [keras_model.get_layer(n).output for n in names])
    expected = reference.predict(scale_pixels(image[np.newaxis].astype(np.float32)), verbose=0)

    result = activations(model, image, names)

    assert list(result) == names
    for name, wanted in zip(names, expected, strict=True):
        assert result[name].dtype == np.float32 and result[name].shape == wanted.shape[1:]
        np.testing.assert_allclose(result[name], wanted[0], rtol=1e-5, atol=1e-5, err_msg=name)


def test_activations_of_a_subset_and_repeated_names(keras_model, model, image):
    result = activations(model, image, ["pool", "conv_a", "pool"])
    assert list(result) == ["pool", "conv_a"]
    reference = keras.Model(keras_model.input, keras_model.get_layer("pool").output)
    np.testing.assert_allclose(
        result["pool"],
        reference(scale_pixels(image[np.newaxis].astype(np.float32)))[0],
        rtol=1e-5,
        atol=1e-5,
    )


def test_activations_resize_the_image_to_the_input_size(model):
    # A constant image stays constant when resized, so it must give the same
    # activations at any size.
    small = activations(model, np.full((16, 16, 3), 90, np.uint8), ["conv_b"])["conv_b"]
    large = activations(model, np.full((40, 25, 3), 90, np.uint8), ["conv_b"])["conv_b"]
    np.testing.assert_allclose(large, small, rtol=1e-6)


def test_activations_trace_at_most_once_per_depth_segment(model, image):
    # The deepest layer's function serves every choice; shallower choices use
    # a function of their own segment, each traced once.
    for name in model.layer_names:
        activations(model, image, [name])
    traces = TRACE_COUNTS["activations"]
    for seed, names in enumerate([["conv_a", "conv_b"], ["norm"], ["pool", "conv_a"], model.layer_names]):
        other = np.random.default_rng(seed).integers(0, 256, (20, 12, 3), dtype=np.uint8)
        assert sorted(activations(model, other, names)) == sorted(names)
    assert TRACE_COUNTS["activations"] == traces


class CountingIdentity(keras.layers.Layer):
    """Passes its input on and counts, in a variable, how often the graph ran it."""

    def build(self, input_shape):
        self.runs = self.add_weight(shape=(), initializer="zeros", trainable=False, name="runs")

    def call(self, inputs):
        self.runs.assign_add(1.0)
        return inputs


def test_a_shallow_layer_does_not_run_the_layers_after_it():
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(4, 3, name="first")(inputs)
    for index in range(12):
        x = keras.layers.Conv2D(4, 3, padding="same", name=f"middle_{index}")(x)
    counter = CountingIdentity(name="counter")
    x = counter(x)
    outputs = keras.layers.Conv2D(2, 3, padding="same", name="last")(x)
    model = VisionModel(keras.Model(inputs, outputs))
    image = np.full((16, 16, 3), 7, np.uint8)

    activations(model, image, ["first"])
    activations(model, image, ["middle_0"])
    assert float(counter.runs.numpy()) == 0.0
    deep = activations(model, image, ["last", "first"])
    assert float(counter.runs.numpy()) == 1.0
    assert deep["last"].shape == (14, 14, 2) and deep["first"].shape == (14, 14, 4)


def test_no_layer_asked_for_gives_nothing(model, image):
    assert activations(model, image, []) == {}


def test_dead_channel_of_the_model_is_found(model, image):
    result = activations(model, image, ["conv_b"])["conv_b"]
    assert dead_channels(result).tolist() == [3]
    grid = activation_grid(result)
    height, width = result.shape[:2]
    np.testing.assert_array_equal(grid[:height, 3 * width : 4 * width], 128)


@pytest.mark.parametrize(
    "bad_name, reason",
    [
        ("nope", "no layer of that name"),
        ("dense", "not (batch, height, width, channels)"),
        ("gap", "has shape"),
    ],
)
def test_unknown_or_non_4d_layer_is_an_input_error_listing_valid_names(
    model, image, bad_name, reason
):
    with pytest.raises(InputError, match=re.escape(reason)) as raised:
        activations(model, image, ["conv_a", bad_name])
    for name in model.layer_names:
        assert name in str(raised.value)


# --- The display grid ------------------------------------------------------------


def book_standardize(channel):
    """The book's channel display: (x - mean) / std * 64 + 128, clipped, uint8."""
    channel = channel.astype(np.float64)
    channel = (channel - channel.mean()) / channel.std() * 64 + 128
    return np.clip(channel, 0, 255).astype(np.uint8)


@pytest.mark.parametrize(
    "channels, images_per_row, rows, columns",
    [(20, 16, 2, 16), (16, 16, 1, 16), (33, 16, 3, 16), (3, 16, 1, 3), (20, 8, 3, 8), (5, 1, 5, 1)],
)
def test_activation_grid_layout_and_standardisation(channels, images_per_row, rows, columns):
    height, width = 3, 5
    activation = (
        np.random.default_rng(channels)
        .normal(2.0, 3.0, (height, width, channels))
        .astype(np.float32)
    )
    grid = activation_grid(activation, images_per_row=images_per_row)

    assert grid.dtype == np.uint8 and grid.shape == (rows * height, columns * width)
    for index in range(rows * columns):
        row, column = divmod(index, columns)
        cell = grid[row * height : (row + 1) * height, column * width : (column + 1) * width]
        if index < channels:
            np.testing.assert_array_equal(
                cell, book_standardize(activation[:, :, index]), err_msg=str(index)
            )
        else:
            np.testing.assert_array_equal(cell, 0, err_msg=f"padding slot {index}")


def test_activation_grid_of_twenty_channels_pads_twelve_black_slots():
    activation = np.random.default_rng(0).normal(size=(4, 4, 20))
    grid = activation_grid(activation)
    assert grid.shape == (8, 64)
    np.testing.assert_array_equal(grid[4:, 16:], 0)  # Slots 20..31 of the second row.
    assert np.all(grid[4:, :16].std() > 0)


def test_activation_grid_clips_outliers():
    channel = np.zeros((4, 4, 1))
    channel[0, 0, 0] = 100.0  # z-score sqrt(15) = 3.87: 128 + 248 clips to 255.
    grid = activation_grid(channel)
    assert grid[0, 0] == 255
    # The others: z = -1 / sqrt(15) -> 128 - 16.52 = 111.48 -> 111.
    np.testing.assert_array_equal(grid.ravel()[1:], 111)


@pytest.mark.parametrize("value", [0.0, 5.0, -3.0])
def test_dead_channel_is_flat_gray_without_nan(value):
    activation = np.random.default_rng(2).normal(size=(6, 6, 4))
    activation[:, :, 2] = value
    with np.errstate(all="raise"):
        grid = activation_grid(activation)
    np.testing.assert_array_equal(grid[:, 12:18], 128)
    assert dead_channels(activation).tolist() == [2]


def test_dead_channels_of_an_all_zero_layer():
    assert dead_channels(np.zeros((3, 3, 5))).tolist() == [0, 1, 2, 3, 4]
    assert dead_channels(np.ones((3, 3, 2)) * np.arange(9).reshape(3, 3, 1)).tolist() == []


@pytest.mark.parametrize(
    "activation, images_per_row",
    [(np.zeros((4, 4)), 16), (np.zeros((1, 4, 4, 2)), 16), (np.zeros((4, 4, 2)), 0)],
)
def test_activation_grid_rejects_bad_arguments(activation, images_per_row):
    with pytest.raises(ValueError):
        activation_grid(activation, images_per_row=images_per_row)


def test_activation_grid_does_not_change_its_input():
    activation = np.random.default_rng(3).normal(size=(4, 4, 3)).astype(np.float32)
    activation.setflags(write=False)
    before = activation.copy()
    activation_grid(activation)
    np.testing.assert_array_equal(activation, before)


def test_activations_of_a_graph_with_branches():
    inputs = keras.Input((8, 8, 3))
    left = keras.layers.Conv2D(2, 1, name="left")(inputs)
    right = keras.layers.Conv2D(2, 3, padding="same", name="right")(inputs)
    merged = keras.layers.Add(name="add")([left, right])
    outputs = keras.layers.Dense(2, activation="softmax")(keras.layers.Flatten()(merged))
    keras_model = keras.Model(inputs, outputs)
    image = np.random.default_rng(4).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    result = activations(VisionModel(keras_model), image, ["add", "left"])
    reference = keras.Model(inputs, [merged, left])(tf.constant(image[np.newaxis], tf.float32))
    np.testing.assert_allclose(result["add"], reference[0][0], rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(result["left"], reference[1][0], rtol=1e-5, atol=1e-4)

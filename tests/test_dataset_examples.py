"""Tests for dataset examples: the patches of real images where a unit fires most."""

import keras
import numpy as np
import pytest

from convviz_core import InputError, VisionModel
from convviz_core.features.dataset_examples import dataset_examples, strongest_positions


def red_detector():
    """A 3x3 valid conv whose channel 0 is the mean red of its window, minus 100, then a 2x2 pool."""
    inputs = keras.Input((32, 32, 3))
    conv = keras.layers.Conv2D(2, 3, activation="relu", name="conv")
    x = conv(inputs)
    outputs = keras.layers.MaxPooling2D(2, name="pool")(x)
    model = keras.Model(inputs, outputs)
    kernel = np.zeros((3, 3, 3, 2), np.float32)
    kernel[:, :, 0, 0] = 1 / 9  # Red.
    kernel[:, :, 2, 1] = 1 / 9  # Blue.
    conv.set_weights([kernel, np.array([-100.0, -100.0], np.float32)])
    return VisionModel(model)


def picture_with_red_square(top, left, size=6, side=32, red=250):
    image = np.zeros((side, side, 3), np.uint8)
    image[top : top + size, left : left + size, 0] = red
    return image


def test_strongest_positions_are_apart_and_positive_only():
    channel = np.array([[5, 4, 0], [0, 0, 0], [0, 0, 3]], np.float32)
    assert strongest_positions(channel, 3, separation=1) == [(0, 0, 5.0), (2, 2, 3.0)]
    assert strongest_positions(channel, 1) == [(0, 0, 5.0)]
    assert strongest_positions(np.zeros((2, 2)), 3) == []


def test_the_patch_of_the_strongest_example_holds_the_red_square():
    model = red_detector()
    images = {
        "faint": picture_with_red_square(4, 4, red=160),
        "strong": picture_with_red_square(20, 10),
        "none": np.zeros((32, 32, 3), np.uint8),
    }
    examples = dataset_examples(model, "pool", 0, images, count=4, per_image=1)
    assert [example.image_key for example in examples] == ["strong", "faint"]
    strong = examples[0]
    # The box is the pool pixel's receptive field (4x4) and lies on the square.
    top, left, bottom, right = strong.box
    assert (bottom - top, right - left) == (4, 4)
    assert 20 <= top and bottom <= 26 and 10 <= left and right <= 16
    assert strong.patch.shape == (4, 4, 3) and (strong.patch[:, :, 0] == 250).all()
    # Score: mean red 250 - 100 = 150 where the window lies inside the square.
    assert strong.score == pytest.approx(150.0, rel=1e-5)


def test_boxes_are_scaled_to_the_images_own_size():
    model = red_detector()
    image = np.zeros((64, 96, 3), np.uint8)
    image[40:52, 30:48, 0] = 250  # The same square, at twice the rows and three times the columns.
    (example,) = dataset_examples(model, "pool", 0, {"big": image}, count=1)
    top, left, bottom, right = example.box
    assert (bottom - top) % 2 == 0 and (right - left) % 3 == 0
    assert (example.patch[:, :, 0] == 250).mean() > 0.5


def test_a_channel_out_of_range_is_an_input_error():
    with pytest.raises(InputError, match="channels 0 to 1; there is no channel 5"):
        dataset_examples(red_detector(), "pool", 5, {"a": np.zeros((8, 8, 3), np.uint8)})


def test_cached_activations_can_be_passed_in():
    model = red_detector()
    image = picture_with_red_square(0, 0)
    seen = []

    def from_cache(key, picture):
        seen.append(key)
        return np.zeros((15, 15, 2), np.float32)

    assert dataset_examples(model, "pool", 0, {"cat": image}, layer_activations=from_cache) == []
    assert seen == ["cat"]

"""Tests of what the dashboard computes without a browser: its figures and its defaults from core."""

import cv2
import keras
import numpy as np
import pytest

from convviz_app import figures
from convviz_core import VisionModel, load_model
from convviz_core.features.patterns import default_pattern_layer
from convviz_core.inputs.images import fit_within
from convviz_core.intermediate_activations import channel_map, most_active_channel, overview_layers
from convviz_core.predictions import rank_classes


@pytest.fixture(scope="module")
def small_convnet():
    return load_model("small-convnet")


def test_viridis_colours_like_matplotlib_endpoints():
    colours = figures.viridis(np.array([[0, 255]], np.uint8))
    assert colours.shape == (1, 2, 3) and colours.dtype == np.uint8
    # viridis runs from dark purple (68, 1, 84) to yellow (253, 231, 37).
    np.testing.assert_allclose(colours[0, 0], (68, 1, 84), atol=3)
    np.testing.assert_allclose(colours[0, 1], (253, 231, 37), atol=3)


@pytest.mark.parametrize(
    "shape, tile, expected",
    [
        ((7, 112), 7, (49, 784)),  # 7x7 tiles become 49x49 squares.
        ((224, 3584), 224, (224, 3584)),  # large tiles stay as they are.
        ((7, 1400), 7, (7, 1400)),  # never wider than the page.
        ((14, 224, 3), 14, (56, 896, 3)),
    ],
)
def test_enlarge_tiles_by_whole_factors(shape, tile, expected):
    image = np.random.default_rng(0).integers(0, 255, shape, dtype=np.uint8)
    enlarged = figures.enlarge_tiles(image, tile)
    assert enlarged.shape == expected
    factor = expected[0] // shape[0]
    np.testing.assert_array_equal(enlarged[::factor, ::factor], image)


@pytest.mark.parametrize(
    "shape, expected",
    [((300, 451, 3), (300, 451, 3)), ((3000, 4000, 3), (768, 1024, 3)), ((2048, 512, 3), (1024, 256, 3))],
)
def test_fit_within_keeps_the_shape_of_the_photo(shape, expected):
    assert fit_within(np.zeros(shape, np.uint8)).shape == expected


def test_png_bytes_round_trip():
    image = np.random.default_rng(1).integers(0, 255, (5, 7, 3), dtype=np.uint8)
    decoded = cv2.cvtColor(cv2.imdecode(np.frombuffer(figures.png_bytes(image), np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(decoded, image)


def test_heatmap_figure_hovers_row_column_value_with_row_zero_on_top():
    values = np.arange(6, dtype=np.float32).reshape(2, 3)
    figure = figures.heatmap_figure(values, colorscale="Jet", zmin=0, zmax=1, value_label="importance")
    trace = figure.data[0]
    np.testing.assert_array_equal(np.asarray(trace.z), values)
    assert "row %{y}, column %{x}" in trace.hovertemplate and "importance" in trace.hovertemplate
    assert (trace.zmin, trace.zmax) == (0, 1)
    assert figure.layout.yaxis.autorange == "reversed"
    assert figure.layout.yaxis.scaleanchor == "x"


def test_the_overview_of_the_small_convnet_is_the_book_figure(small_convnet):
    # Figure 5-27 shows the first eight layers: four convolutions, four poolings.
    assert overview_layers(small_convnet) == small_convnet.layer_names[:8]
    assert [name.split("_")[0] for name in overview_layers(small_convnet)] == ["conv2d", "max"] * 4


def test_the_overview_of_a_deep_model_spreads_its_nonlinear_layers():
    model = VisionModel(keras.applications.VGG16(weights=None, input_shape=(32, 32, 3), include_top=False))
    chosen = overview_layers(model, count=8)
    assert len(chosen) == 8
    assert chosen[0] == "block1_conv1" and chosen[-1] == "block5_pool"
    assert chosen == sorted(chosen, key=model.layer_names.index)


def test_the_overview_skips_batch_norms_when_it_can():
    inputs = keras.Input((16, 16, 3))
    x = inputs
    for index in range(10):
        x = keras.layers.Conv2D(4, 3, padding="same", name=f"conv{index}")(x)
        x = keras.layers.BatchNormalization(name=f"bn{index}")(x)
        x = keras.layers.ReLU(name=f"relu{index}")(x)
    chosen = overview_layers(VisionModel(keras.Model(inputs, x)), count=5)
    assert all(name.startswith("relu") for name in chosen)
    assert chosen[0] == "relu0" and chosen[-1] == "relu9"


def test_default_pattern_layer_is_the_books_choice_for_vgg16():
    model = VisionModel(keras.applications.VGG16(weights=None))
    assert default_pattern_layer(model) == "block3_conv1"


def test_default_pattern_layer_of_the_built_in_models(small_convnet):
    assert default_pattern_layer(small_convnet) == "conv2d_3"


def test_default_pattern_layer_without_a_deep_convolution():
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(4, 3, name="narrow")(inputs)
    x = keras.layers.Conv2D(8, 3, name="wider")(x)
    assert default_pattern_layer(VisionModel(keras.Model(inputs, x))) == "wider"
    pooled = keras.layers.MaxPooling2D(name="pool")(inputs)
    assert default_pattern_layer(VisionModel(keras.Model(inputs, pooled))) == "pool"


@pytest.mark.parametrize(
    "channel, expected",
    [
        (0, [[0.0, 0.5], [1.0, 0.25]]),  # scaled by its maximum
        (1, [[0.0, 0.0], [0.0, 1.0]]),  # negative values are cut at 0
        (2, [[0.0, 0.0], [0.0, 0.0]]),  # a dead channel gives zeros, never NaN
    ],
)
def test_channel_map(channel, expected):
    activation = np.zeros((2, 2, 3), np.float32)
    activation[:, :, 0] = [[0, 2], [4, 1]]
    activation[:, :, 1] = [[-3, -1], [-2, 5]]
    result = channel_map(activation, channel)
    assert result.dtype == np.float32
    np.testing.assert_allclose(result, expected)


def test_channel_map_rejects_a_bad_channel():
    with pytest.raises(ValueError, match="channel must be in 0..2"):
        channel_map(np.zeros((2, 2, 3)), 3)


def test_rank_classes_of_a_binary_model(small_convnet):
    ranked = rank_classes(small_convnet, np.array([0.2, 0.8], np.float32), top=5)
    assert [(index, label) for index, label, _ in ranked] == [(1, small_convnet.class_label(1)), (0, small_convnet.class_label(0))]
    assert ranked[0][2] == pytest.approx(0.8)


def test_rank_classes_keeps_class_order_for_ties():
    model = VisionModel(keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Flatten(), keras.layers.Dense(4)]))
    assert [index for index, _, _ in rank_classes(model, np.array([0.1, 0.4, 0.4, 0.1]), top=3)] == [1, 2, 0]


def test_most_active_channel_among_the_candidates():
    activation = np.zeros((2, 2, 4), np.float32)
    activation[:, :, 0] = 9.0  # the strongest overall, but not a candidate
    activation[:, :, 2] = [[1, 1], [1, 5]]
    activation[:, :, 3] = [[2, 2], [2, 2]]
    assert most_active_channel(activation, [1, 2, 3]) == 2
    assert most_active_channel(activation, [1, 3]) == 3
    assert most_active_channel(np.zeros((2, 2, 4)), [3, 1]) == 3  # ties: the first
    with pytest.raises(ValueError, match="must not be empty"):
        most_active_channel(activation, [])

"""Where a layer's pixels sit on the input: worked out by hand for small stacks."""

import keras
import numpy as np
import pytest

from convviz_core import VisionModel
from convviz_core.graph.geometry import AxisGeometry, heatmap_peak, layer_geometry, upsample_heatmap

from book_reference import book_small_convnet


def sequential(*layers, size=8):
    return VisionModel(keras.Sequential([keras.Input((size, size, 3)), *layers]))


@pytest.mark.parametrize(
    "layers, size, layer, expected",
    [
        # A 3x3 valid convolution: output j is centred on input j + 1.
        # It sees 3 pixels.
        ([keras.layers.Conv2D(2, 3, name="c")], 8, "c", (1.0, 1.0, 3.0)),
        # Then a 2x2 pool: j covers conv pixels 2j, 2j+1 -> input 2j + 1.5, seeing 3 + 1 pixels.
        ([keras.layers.Conv2D(2, 3, name="c"), keras.layers.MaxPooling2D(2, name="p")], 8, "p", (1.5, 2.0, 4.0)),
        # "same", stride 2 on 8: TensorFlow pads 1 pixel, after -> centres 2j + 1.
        ([keras.layers.Conv2D(2, 3, strides=2, padding="same", name="c")], 8, "c", (1.0, 2.0, 3.0)),
        # "same", stride 2 on 7: pads 1 before and 1 after -> centres 2j.
        ([keras.layers.Conv2D(2, 3, strides=2, padding="same", name="c")], 7, "c", (0.0, 2.0, 3.0)),
        # Dilation 2 widens a 3x3 kernel to 5x5: centres j + 2, seeing 5 pixels.
        ([keras.layers.Conv2D(2, 3, dilation_rate=2, name="c")], 9, "c", (2.0, 1.0, 5.0)),
        # Zero padding of 2 shifts the grid back by 2; a 5x5 valid conv then adds 2.
        ([keras.layers.ZeroPadding2D(2, name="z"), keras.layers.Conv2D(2, 5, name="c")], 8, "c", (0.0, 1.0, 5.0)),
        # Batch norm and ReLU keep the grid.
        ([keras.layers.Conv2D(2, 3, name="c"), keras.layers.BatchNormalization(name="b"),
          keras.layers.ReLU(name="r")], 8, "r", (1.0, 1.0, 3.0)),
    ],
)  # fmt: skip
def test_known_geometries(layers, size, layer, expected):
    model = sequential(*layers, size=size)
    assert layer_geometry(model.plan, layer) == (AxisGeometry(*expected),) * 2


def test_books_conv2d_4_looks_14_pixels_further_in_than_a_plain_resize():
    model = VisionModel(book_small_convnet())
    rows, columns = layer_geometry(model.plan, "conv2d_8")
    # 150 -> conv 148 -> pool 74 -> conv 72 -> pool 36 -> conv 34 -> pool 17 -> conv 15.
    # Receptive field: 3, +1 (pool), +2*2, +2*1, +4*2, +4*1, +8*2 = 38 pixels.
    assert rows == columns == AxisGeometry(18.5, 8.0, 38.0)


def test_vgg16_geometry_equals_a_plain_resize():
    model = VisionModel(keras.applications.VGG16(weights=None, include_top=False, input_shape=(64, 64, 3)))
    # block5_conv3 is 4x4 on 64: a plain resize centres pixel j on 16j + 7.5.
    # Its receptive field is the well-known 196 pixels.
    assert layer_geometry(model.plan, "block5_conv3") == (AxisGeometry(7.5, 16.0, 196.0),) * 2


def test_an_unknown_resampling_layer_falls_back_to_a_plain_resize():
    model = sequential(keras.layers.UpSampling2D(2, name="u"), keras.layers.Conv2D(1, 3, name="c"))
    assert layer_geometry(model.plan, "c") is None
    heatmap = np.arange(14 * 14, dtype=np.float32).reshape(14, 14)
    np.testing.assert_allclose(model.heatmap_on_input("c", heatmap).shape, (8, 8))


def test_a_peak_lands_on_the_input_pixel_its_layer_pixel_looked_at():
    model = VisionModel(book_small_convnet())
    heatmap = np.zeros((15, 15), np.float32)
    heatmap[1, 13] = 1.0
    placed = model.heatmap_on_input("conv2d_8", heatmap)
    assert placed.shape == (150, 150)
    # Layer pixel (1, 13) is centred on input (18.5 + 8, 18.5 + 8 * 13) = (26.5, 122.5).
    row, column = np.unravel_index(np.argmax(placed), placed.shape)
    assert row in (26, 27) and column in (122, 123)
    # Half a pixel from the centre on each axis, at stride 8: (1 - 0.5 / 8) ** 2.
    assert placed[26, 122] == pytest.approx((15 / 16) ** 2, abs=1e-3)
    assert placed[27, 123] == pytest.approx((15 / 16) ** 2, abs=1e-3)
    # A plain resize would have put it at (15, 135): 11 and 13 pixels off.
    assert placed[15, 135] < 0.1
    # Before the first centre and after the last, the map keeps its edge values.
    edge = np.zeros((15, 15), np.float32)
    edge[0, :] = 1.0
    assert np.all(model.heatmap_on_input("conv2d_8", edge)[:19] == 1.0)


def test_upsample_with_identity_geometry_is_the_map_itself():
    heatmap = np.random.default_rng(0).random((6, 5)).astype(np.float32)
    identity = (AxisGeometry(0.0, 1.0), AxisGeometry(0.0, 1.0))
    np.testing.assert_allclose(upsample_heatmap(heatmap, identity, (6, 5)), heatmap, atol=1e-6)


def test_heatmap_peak_is_the_centre_of_the_highest_map_pixel():
    model = VisionModel(book_small_convnet())
    heatmap = np.zeros((15, 15), np.float32)
    heatmap[1, 13] = 1.0
    heatmap[7, 7] = 0.5
    # Layer pixel (1, 13) looks at input (18.5 + 8 * 1, 18.5 + 8 * 13).
    assert model.heatmap_peak("conv2d_8", heatmap) == (26.5, 122.5)


def test_heatmap_peak_on_an_edge_pixel_is_its_centre_not_the_image_border():
    model = VisionModel(book_small_convnet())
    heatmap = np.zeros((15, 15), np.float32)
    heatmap[0, 14] = 2.0
    # The laid-over map is flat from row 0 to 18.5 and column 130.5 to 149,
    # so its first maximum is on the border, 18 pixels from where the pixel looked.
    placed = model.heatmap_on_input("conv2d_8", heatmap)
    assert np.unravel_index(np.argmax(placed), placed.shape) == (0, 131)
    assert model.heatmap_peak("conv2d_8", heatmap) == (18.5, 130.5)


def test_heatmap_peak_with_a_plain_resize_and_without_a_peak():
    # 7 map pixels over 224: pixel i is centred on (i + 0.5) * 32 - 0.5.
    heatmap = np.zeros((7, 7), np.float32)
    heatmap[6, 0] = 1.0
    assert heatmap_peak(heatmap, None, (224, 224)) == (207.5, 15.5)
    # Equal highest pixels: the first in row-major order.
    heatmap[2, 3] = 1.0
    assert heatmap_peak(heatmap, None, (224, 224)) == (79.5, 111.5)
    # A Grad-CAM with no positive evidence points nowhere.
    assert heatmap_peak(np.zeros((7, 7)), None, (224, 224)) is None
    # A layer outside the model's grid stays within the input.
    geometry = (AxisGeometry(-3.0, 8.0), AxisGeometry(0.0, 40.0))
    assert heatmap_peak(np.eye(1, 4, 3), geometry, (100, 100)) == (0.0, 99.0)


def test_input_box_is_the_receptive_field_clipped_to_the_input():
    model = VisionModel(book_small_convnet())
    # conv2d_8 pixel (0, 0) is centred on 18.5 and sees 38 pixels: 0 to 38.
    assert model.input_box("conv2d_8", 0, 0) == (0, 0, 38, 38)
    # Pixel (14, 7): centres 18.5 + 8*14 = 130.5 and 74.5; 112-150 and 56-94.
    assert model.input_box("conv2d_8", 14, 7) == (112, 56, 150, 94)
    # Unknown geometry: the pixel's share of a plain resize.
    upsampled = sequential(keras.layers.UpSampling2D(2, name="u"), keras.layers.Conv2D(1, 3, name="c"))
    assert upsampled.input_box("c", 1, 13) == (0, 7, 2, 8)

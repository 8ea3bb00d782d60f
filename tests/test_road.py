"""Tests for ROAD (Rong et al., ICML 2022): noisy linear imputation and the two removal orders.

The imputation is solved by hand on a 2x2 image; ROAD end to end is checked
on the 4x4 known-answer model of `test_gradcam`, whose class scores are a
linear function of the mean pixel, with the one removed pixel imputed by hand.
"""

import numpy as np
import pytest

from convviz_core import VisionModel
from convviz_core.metrics.road import (
    DEFAULT_FRACTIONS,
    impute_linearly,
    removal_masks,
    road,
    road_backgrounds,
)

from test_gradcam import build_known_model, known_image as make_known_image, softmax


def test_one_removed_pixel_becomes_the_weighted_mean_of_its_neighbours():
    values = np.arange(9, dtype=np.float64).reshape(3, 3, 1) ** 2
    removed = np.zeros((3, 3), bool)
    removed[1, 1] = True
    edges = values[0, 1] + values[1, 0] + values[1, 2] + values[2, 1]
    corners = values[0, 0] + values[0, 2] + values[2, 0] + values[2, 2]
    expected = values.copy()
    expected[1, 1] = edges / 6 + corners / 12
    np.testing.assert_allclose(impute_linearly(values, removed), expected, rtol=1e-6)


def test_two_removed_pixels_are_solved_jointly():
    # [[a, b], [c, d]] with a and b removed, c = 12, d = 0. Inside the image,
    # a has b and c on its edges (1/6 each) and d on its diagonal (1/12):
    #   (1/6 + 1/6 + 1/12) a = b/6 + c/6 + d/12   ->  5a - 2b = 2c + d = 24
    #   (1/6 + 1/6 + 1/12) b = a/6 + d/6 + c/12   ->  5b - 2a = 2d + c = 12
    # so b = 108/21 = 36/7 and a = (24 + 2b)/5 = 48/7.
    values = np.array([[[99.0], [99.0]], [[12.0], [0.0]]])
    removed = np.array([[True, True], [False, False]])
    imputed = impute_linearly(values, removed)
    np.testing.assert_allclose(imputed[..., 0], [[48 / 7, 36 / 7], [12, 0]], rtol=1e-6)


def test_noise_is_added_to_the_removed_pixels_only_and_is_seeded():
    values = np.random.default_rng(3).random((6, 5, 3))
    removed = np.zeros((6, 5), bool)
    removed[2:4, 1:3] = True
    plain = impute_linearly(values, removed)
    noisy = impute_linearly(values, removed, 0.5, np.random.default_rng(7))
    again = impute_linearly(values, removed, 0.5, np.random.default_rng(7))
    np.testing.assert_array_equal(noisy, again)
    np.testing.assert_array_equal(noisy[~removed], plain[~removed])
    assert np.abs(noisy[removed] - plain[removed]).mean() > 0.1


def test_every_pixel_removed_is_refused():
    with pytest.raises(ValueError, match="every pixel removed"):
        impute_linearly(np.zeros((2, 2, 1)), np.ones((2, 2), bool))


def test_removal_masks_take_exact_fractions_from_either_end():
    ranks = np.arange(10).reshape(2, 5)
    masks = removal_masks(ranks, [0.2, 0.5])
    np.testing.assert_array_equal(masks[0].ravel(), [1, 1, 0, 0, 0, 0, 0, 0, 0, 0])
    np.testing.assert_array_equal(masks[1].ravel(), [1, 1, 1, 1, 1, 0, 0, 0, 0, 0])
    np.testing.assert_array_equal(masks[2].ravel(), [0, 0, 0, 0, 0, 0, 0, 0, 1, 1])
    np.testing.assert_array_equal(masks[3].ravel(), [0, 0, 0, 0, 0, 1, 1, 1, 1, 1])


@pytest.fixture(scope="module")
def known_model():
    return VisionModel(build_known_model("dense_logits"))


@pytest.fixture
def known_image():
    return make_known_image()


def probabilities_of(keras_model, inputs):
    return softmax(keras_model(inputs[np.newaxis].astype(np.float32)).numpy()[0].astype(np.float64))


def test_road_removes_and_imputes_the_pixel_the_map_ranks_first_and_last(known_model, known_image):
    heatmap = np.zeros((4, 4), np.float32)
    heatmap[1, 2] = 1.0  # ranked first
    heatmap[2, 1] = 0.5  # second; (3, 3) is ranked last (ties keep reading order)
    result = road(known_model, known_image, heatmap, class_index=1, fractions=[1 / 16], noise=0.0)
    image = known_image.astype(np.float64)

    def imputed_at(row, column):
        filled = image.copy()
        edges = corners = 0.0
        for row_offset in (-1, 0, 1):
            for column_offset in (-1, 0, 1):
                neighbour_row, neighbour_column = row + row_offset, column + column_offset
                if (row_offset, column_offset) == (0, 0) or not (0 <= neighbour_row < 4 and 0 <= neighbour_column < 4):
                    continue
                weight = 1 / 6 if 0 in (row_offset, column_offset) else 1 / 12
                edges += weight * image[neighbour_row, neighbour_column]
                corners += weight
        filled[row, column] = edges / corners
        return filled

    keras_model = known_model.keras_model
    expected_first = probabilities_of(keras_model, imputed_at(1, 2))[1]
    expected_last = probabilities_of(keras_model, imputed_at(3, 3))[1]
    np.testing.assert_allclose(result.most_relevant_first_curve, [expected_first], rtol=1e-5)
    np.testing.assert_allclose(result.least_relevant_first_curve, [expected_last], rtol=1e-5)
    assert result.combined == pytest.approx((expected_last - expected_first) / 2, rel=1e-4, abs=1e-7)
    assert result.class_index == 1


def test_road_defaults_match_pytorch_grad_cam_and_are_reproducible(known_model, known_image):
    heatmap = np.random.default_rng(0).random((4, 4))
    first = road(known_model, known_image, heatmap)
    second = road(known_model, known_image, heatmap)
    np.testing.assert_allclose(first.fractions, DEFAULT_FRACTIONS)
    np.testing.assert_array_equal(first.most_relevant_first_curve, second.most_relevant_first_curve)
    assert first.most_relevant_first == pytest.approx(first.most_relevant_first_curve.mean())
    assert len(first.least_relevant_first_curve) == 9


def test_backgrounds_keep_the_kept_pixels_exactly():
    inputs = np.random.default_rng(1).random((1, 8, 8, 3)).astype(np.float32)
    removals = removal_masks(np.arange(64).reshape(8, 8), [0.25, 0.5])
    backgrounds = road_backgrounds(inputs, removals)
    for background, removed in zip(backgrounds, removals):
        np.testing.assert_array_equal(background[~removed], inputs[0][~removed])


def test_fractions_outside_the_open_interval_are_refused(known_model, known_image):
    with pytest.raises(ValueError, match=r"strictly between 0 and 1. Received: fractions=\[0.5, 1.0\]"):
        road(known_model, known_image, np.ones((4, 4)), fractions=[0.5, 1.0])

"""Tests for the faithfulness scores: RISE deletion / insertion, Average Drop, random baseline.

The evidence is known: the shipped small convnet ("small-convnet", discs vs
crosses, one sigmoid output) looks at a disc drawn on a black background, so
the disc's own mask is the ideal map, and its complement the worst.
"""

import numpy as np
import pytest

import convviz_core
from convviz_core import InputError, VisionModel
from convviz_core.cam.passes import score_masked_inputs
from convviz_core.metrics.average_drop import average_drop_increase
from convviz_core.metrics.deletion_insertion import area_under_curve, deletion_insertion, pixel_ranks
from convviz_core.metrics.placement import gaussian_blur, model_input
from convviz_core.metrics.random_baseline import random_baseline, random_maps

from test_gradcam import build_known_model, known_image

STEPS = 8
DISCS = [((60, 80), 30, (230, 200, 40)), ((100, 50), 25, (40, 120, 250))]


def disc_image(centre, radius, colour, size=150):
    rows, columns = np.mgrid[:size, :size]
    disc = (rows - centre[0]) ** 2 + (columns - centre[1]) ** 2 < radius**2
    image = np.zeros((size, size, 3), np.uint8)
    image[disc] = colour
    return image, disc.astype(np.float32)


@pytest.fixture(scope="module")
def small_convnet():
    return convviz_core.load_model("small-convnet")


@pytest.mark.parametrize("centre, radius, colour", DISCS)
def test_the_object_map_beats_its_inverse_and_chance(small_convnet, centre, radius, colour):
    image, disc = disc_image(centre, radius, colour)
    assert convviz_core.predict(small_convnet, image)[0][1] == "disc"
    best = deletion_insertion(small_convnet, image, disc, 0, steps=STEPS)
    worst = deletion_insertion(small_convnet, image, 1 - disc, 0, steps=STEPS)
    chance = random_baseline(small_convnet, image, disc.shape, 0, seeds=(0, 1), steps=STEPS)
    assert best.deletion_auc < worst.deletion_auc - 0.2
    assert best.insertion_auc > worst.insertion_auc
    assert best.insertion_auc > chance.insertion_auc
    # Not asserted: deletion against chance. Black pixels scattered over the
    # disc (random deletion) read to this two-class model as evidence
    # *against* a disc, driving p(disc) towards 0, while deleting the whole
    # disc leaves a black image, p(disc) = 0.545, the model's "no evidence".
    # Deletion rewards maps whose perturbations leave the training
    # distribution; the README says so.


def test_curves_start_and_end_where_they_must(small_convnet):
    image, disc = disc_image(*DISCS[0])
    result = deletion_insertion(small_convnet, image, disc, 0, steps=STEPS)
    inputs = model_input(small_convnet, image)
    blank = np.zeros((1,) + small_convnet.input_size, np.float32)
    _, (full,) = score_masked_inputs(small_convnet, inputs, 1 + blank, 0)
    _, (deleted,) = score_masked_inputs(small_convnet, inputs, blank, 0)
    _, (blurred,) = score_masked_inputs(small_convnet, inputs, blank, 0, gaussian_blur(inputs))
    np.testing.assert_allclose(result.fractions, np.linspace(0, 1, STEPS + 1))
    np.testing.assert_allclose(
        [result.deletion_curve[0], result.deletion_curve[-1]], [full, deleted], atol=1e-6
    )
    np.testing.assert_allclose(
        [result.insertion_curve[0], result.insertion_curve[-1]], [blurred, full], atol=1e-6
    )
    # The disc covers 12.6% of the image: from 2/8 of the pixels deleted on,
    # the image is the black background, whatever else is deleted.
    assert disc.mean() < 2 / STEPS
    np.testing.assert_allclose(result.deletion_curve[2:], deleted, atol=1e-6)
    assert np.all(np.diff(result.deletion_curve) <= 1e-6)
    assert result.deletion_auc == pytest.approx(area_under_curve(result.deletion_curve))


def test_area_under_curve_is_the_trapezoid_rule():
    assert area_under_curve([1.0, 1.0, 1.0]) == pytest.approx(1.0)
    assert area_under_curve([1.0, 0.0]) == pytest.approx(0.5)
    assert area_under_curve([0.0, 1.0, 0.0, 1.0, 0.0]) == pytest.approx(0.5)


def test_pixel_ranks_put_the_highest_first_and_keep_reading_order_for_ties():
    ranks = pixel_ranks(np.array([[0.1, 0.9], [0.5, 0.5]]))
    np.testing.assert_array_equal(ranks, [[3, 0], [1, 2]])


def test_average_drop_of_the_object_map_is_small_and_of_its_inverse_large(small_convnet):
    image, disc = disc_image(*DISCS[0])
    kept = average_drop_increase(small_convnet, image, disc, 0)
    removed = average_drop_increase(small_convnet, image, 1 - disc, 0)
    # The disc on black times its own mask is the same image: no drop at all.
    assert kept.average_drop == pytest.approx(0.0, abs=1e-4)
    assert kept.explanation_probability == pytest.approx(kept.probability, abs=1e-6)
    # Without the disc the model is left with a black image: p = 0.545.
    assert removed.average_drop > 40 and not removed.increase_in_confidence


def test_average_drop_known_answer():
    # The known model's logits are linear in the input: masking the input by
    # a constant 0.5 halves the pooled features, so logits = 0.5 W.f + b.
    model = VisionModel(build_known_model("dense_softmax"))
    result = average_drop_increase(model, known_image(), np.full((2, 2), 0.5), 1)
    kernel = np.array([[1.0, -1.0, 0.5], [-1.0, 2.0, 0.5]])
    bias = np.array([0.5, -1.0, 1.0])
    full, half = (np.array([7.5, 9.5]) * scale @ kernel + bias for scale in (1.0, 0.5))
    p, p_map = (np.exp(x[1]) / np.exp(x).sum() for x in (full, half))
    assert result.probability == pytest.approx(p, rel=1e-5)
    assert result.explanation_probability == pytest.approx(p_map, rel=1e-5)
    assert result.average_drop == pytest.approx(100 * max(0, p - p_map) / p, rel=1e-4)
    assert result.increase_in_confidence == (p_map > p)


def test_random_maps_are_seeded():
    np.testing.assert_array_equal(random_maps((3, 4), (0, 1)), random_maps((3, 4), (0, 1)))
    assert random_maps((3, 4), (0, 1)).shape == (2, 3, 4)
    assert not np.array_equal(random_maps((3, 4), (0,)), random_maps((3, 4), (1,)))


@pytest.mark.parametrize("heatmap", [np.zeros(5), np.full((2, 2), np.nan)], ids=["1d", "nan"])
def test_a_heatmap_must_be_a_finite_2d_array(heatmap):
    model = VisionModel(build_known_model("dense_softmax"))
    with pytest.raises(InputError, match="finite 2-D"):
        deletion_insertion(model, known_image(), heatmap, 0, steps=2)


def test_metrics_are_importable_from_the_package():
    assert convviz_core.deletion_insertion is deletion_insertion


# --- Sanity check (Adebayo et al., 2018) ------------------------------------------


def test_cascading_randomization_known_answer_and_shared_model_untouched():
    from convviz_core.metrics.sanity import cascading_randomization

    from test_gradcam import DENSE_KERNEL, expected_map

    model = VisionModel(build_known_model("dense_softmax"))
    before = [weight.copy() for weight in model.keras_model.get_weights()]
    result = cascading_randomization(model, known_image(), ["grad-cam", "layer-cam"], 0, "conv", seed=3)
    for old, new in zip(before, model.keras_model.get_weights(), strict=True):
        np.testing.assert_array_equal(new, old)
    assert result.steps == ["original", "dense", "conv"]
    # Step 1 replaces the dense kernel (drawn first) by noise of its own scale:
    # Grad-CAM of class 0 is then the closed form with the new weights.
    noise = np.random.default_rng(3).normal(0.0, DENSE_KERNEL.std() + 1e-6, DENSE_KERNEL.shape)
    np.testing.assert_allclose(result.maps["grad-cam"][0], expected_map(DENSE_KERNEL[:, 0] / 16), atol=1e-6)
    np.testing.assert_allclose(result.maps["grad-cam"][1], expected_map(noise[:, 0] / 16), atol=1e-5)
    for method in ("grad-cam", "layer-cam"):
        assert result.rank_correlation[method][0] == pytest.approx(1.0)
        assert result.ssim[method][0] == pytest.approx(1.0)
        assert len(result.rank_correlation[method]) == len(result.ssim[method]) == 3


def test_rank_correlation_and_ssim_known_answers():
    from convviz_core.metrics.sanity import rank_correlation, structural_similarity

    values = np.arange(12.0).reshape(3, 4)
    assert rank_correlation(values, values**3) == pytest.approx(1.0)
    assert rank_correlation(values, -values) == pytest.approx(-1.0)
    assert rank_correlation(values, np.ones_like(values)) == 0.0
    # Ties share their average rank: (1, 1, 2) ranks as (0.5, 0.5, 2).
    assert rank_correlation([1.0, 1.0, 2.0], [0.0, 1.0, 2.0]) == pytest.approx(np.sqrt(3) / 2)
    image = np.random.default_rng(0).random((16, 16))
    assert structural_similarity(image, image) == pytest.approx(1.0)
    assert structural_similarity(image, 1 - image) < 0

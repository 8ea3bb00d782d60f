"""Known answers for every CAM method, worked out by hand on tiny models.

The gradient methods run on the known-answer model of `test_gradcam.py`:

    image (4, 4, 3) -> Conv2D(2, 1x1) -> GlobalAveragePooling2D -> Dense(3)

with features F0 = a and F1 = 17 - a (a = 0..15, the pixel index in reading
order), so sum F0 = 120 and sum F1 = 152. Global average pooling makes the
gradient of the logit of class c with respect to F_k the same at every pixel,
g_k = W[k, c] / 16, with W[:, 0] = (1, -1), W[:, 1] = (-1, 2) and
W[:, 2] = (1/2, 1/2). Each method's map follows in closed form (below).

Score-CAM runs on a second tiny model whose layer is half the input's size,
against a plain loop written here (TensorFlow's own aligned-corner resize).
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

import convviz_core
from convviz_core import CAM_METHODS, InputError, VisionModel, class_activation_map, grad_cam
from convviz_core.cam import passes
from convviz_core.cam.methods import class_activation_maps, class_activation_maps_with_probabilities
from convviz_core.cam.scorecam import interpolation_matrix

from test_gradcam import A, build_known_model, known_image

EPSILON_PLUS_PLUS = 1e-6
# g_k for each class, and the sums of the two feature maps.
GRADIENTS = {0: (1 / 16, -1 / 16), 1: (-1 / 16, 2 / 16), 2: (1 / 32, 1 / 32)}
SUMS = (120.0, 152.0)


def by_max(heatmap):
    heatmap = np.maximum(heatmap, 0)
    return heatmap / heatmap.max()


def grad_cam_closed_form(class_index):
    # Channel weights g_k: relu(g0 a + g1 (17 - a)).
    g0, g1 = GRADIENTS[class_index]
    return by_max(g0 * A + g1 * (17 - A))


def grad_cam_plus_plus_closed_form(class_index):
    # With a gradient constant over the 16 pixels, alpha_k = g^2 / (2 g^2 +
    # S_k g^3 + eps) and w_k = 16 relu(g_k) alpha_k.
    weights = []
    for g, total in zip(GRADIENTS[class_index], SUMS):
        alpha = g**2 / (2 * g**2 + total * g**3 + EPSILON_PLUS_PLUS)
        weights.append(16 * max(g, 0) * alpha)
    return by_max(weights[0] * A + weights[1] * (17 - A))


def layer_cam_closed_form(class_index):
    # relu(g0) a + relu(g1) (17 - a).
    g0, g1 = GRADIENTS[class_index]
    return by_max(max(g0, 0) * A + max(g1, 0) * (17 - A))


CLOSED_FORMS = {
    "grad-cam": grad_cam_closed_form,
    "grad-cam++": grad_cam_plus_plus_closed_form,
    # XGrad-CAM: w_k = sum(g_k F_k) / (S_k + 1e-7) = g_k S_k / (S_k + 1e-7),
    # Grad-CAM's weights to 1e-9. HiResCAM: sum_k g_k F_k, Grad-CAM's map.
    "xgrad-cam": grad_cam_closed_form,
    "layer-cam": layer_cam_closed_form,
    "hires-cam": grad_cam_closed_form,
}


def test_closed_forms_are_what_the_docstring_says():
    # Class 0: Grad-CAM++ keeps only channel 0 (g1 < 0): a / 15.
    np.testing.assert_allclose(grad_cam_plus_plus_closed_form(0), A / 15)
    # Class 1: only channel 1: (17 - a) / 17, for Grad-CAM++ and Layer-CAM.
    np.testing.assert_allclose(grad_cam_plus_plus_closed_form(1), (17 - A) / 17)
    np.testing.assert_allclose(layer_cam_closed_form(1), (17 - A) / 17)
    # Class 2: Layer-CAM sees a + 17 - a = 17 everywhere.
    np.testing.assert_allclose(layer_cam_closed_form(2), np.ones((4, 4)))
    # Grad-CAM++ of class 2: weights 0.5 alpha_k with different alphas, so
    # not flat; Grad-CAM of class 2 is flat.
    assert np.ptp(grad_cam_plus_plus_closed_form(2)) > 0.05
    np.testing.assert_allclose(grad_cam_closed_form(2), np.ones((4, 4)))


@pytest.fixture(scope="module")
def known_model():
    return VisionModel(build_known_model("dense_softmax"))


@pytest.mark.parametrize("class_index", [0, 1, 2])
@pytest.mark.parametrize("method", list(CLOSED_FORMS))
def test_gradient_methods_known_answer(known_model, method, class_index):
    heatmap = class_activation_map(known_model, known_image(), method, class_index, "conv")
    assert heatmap.dtype == np.float32 and heatmap.shape == (4, 4)
    np.testing.assert_allclose(heatmap, CLOSED_FORMS[method](class_index), atol=1e-6)


def test_eigen_cam_known_answer_is_class_agnostic(known_model):
    # Centred features are (x, -x) with x = a - 7.5: rank one, first right
    # singular vector +-(1, -1)/sqrt(2), projection +-sqrt(2) x. Its sign is
    # LAPACK's choice (as in pytorch-grad-cam), so after the ReLU the map is
    # either relu(x) / 7.5 or relu(-x) / 7.5.
    maps = [class_activation_map(known_model, known_image(), "eigen-cam", c, "conv") for c in range(3)]
    x = A - 7.5
    candidates = [np.maximum(x, 0) / 7.5, np.maximum(-x, 0) / 7.5]
    assert any(np.allclose(maps[0], candidate, atol=1e-5) for candidate in candidates)
    for heatmap in maps[1:]:
        np.testing.assert_array_equal(heatmap, maps[0])


def test_all_gradient_methods_come_from_one_pass(known_model):
    image, names = known_image(), [name for name in CAM_METHODS if name != "score-cam"]
    class_activation_maps(known_model, image, names, 1, "conv")
    key = ("grad_cam", "conv")
    compiled = known_model._functions[key]
    calls = []

    def counting(*args):
        calls.append(args)
        return compiled(*args)

    known_model._functions[key] = counting
    try:
        maps, probabilities, class_index = class_activation_maps_with_probabilities(
            known_model, image, names, None, "conv"
        )
    finally:
        known_model._functions[key] = compiled
    assert len(calls) == 1
    assert list(maps) == names and class_index == 1 and probabilities.shape == (3,)
    for method in CLOSED_FORMS:
        np.testing.assert_allclose(maps[method], CLOSED_FORMS[method](1), atol=1e-6)


def test_grad_cam_shortcut_is_the_grad_cam_method(known_model):
    for class_index in (0, 1, 2, None):
        np.testing.assert_array_equal(
            grad_cam(known_model, known_image(), class_index, "conv"),
            class_activation_map(known_model, known_image(), "grad-cam", class_index, "conv"),
        )


def test_no_method_traces_again_for_new_classes_images_or_methods(known_model):
    rng = np.random.default_rng(0)
    for method in CAM_METHODS:
        class_activation_map(known_model, known_image(), method, 0, "conv")
    traces = dict(passes.TRACE_COUNTS)
    for class_index in (1, 2, None):
        image = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
        for method in CAM_METHODS:
            class_activation_map(known_model, image, method, class_index, "conv")
    assert passes.TRACE_COUNTS == traces


@pytest.mark.parametrize("method", list(CAM_METHODS))
def test_black_image_gives_zeros_not_nan(known_model, method):
    heatmap = class_activation_map(known_model, np.zeros((4, 4, 3), np.uint8), method, 1, "conv")
    assert heatmap.dtype == np.float32
    np.testing.assert_array_equal(heatmap, np.zeros((4, 4), np.float32))


def test_cam_methods_describe_themselves():
    assert list(CAM_METHODS) == [
        "grad-cam", "grad-cam++", "xgrad-cam", "layer-cam", "hires-cam", "eigen-cam", "score-cam",
    ]  # fmt: skip
    assert [name for name, method in CAM_METHODS.items() if not method.needs_gradients] == [
        "eigen-cam",
        "score-cam",
    ]
    for name, method in CAM_METHODS.items():
        assert method.name == name and method.description and method.paper
        assert method.raw_map.__doc__ and "pytorch-grad-cam 1.5.7" in method.raw_map.__doc__
    assert convviz_core.class_activation_map is class_activation_map


def test_unknown_method_says_which_exist(known_model):
    with pytest.raises(InputError, match="grad-cam, grad-cam\\+\\+"):
        class_activation_map(known_model, known_image(), "gradcam")


# --- Score-CAM ------------------------------------------------------------------


def build_score_cam_model():
    """(4, 4, 3) -> Conv2D(4, 1x1) -> AveragePooling2D(2) -> GAP -> Dense(3) logits.

    Channels: red, green + blue, a constant (bias only) and red again, so
    Score-CAM's sharing of equal masks is exercised.
    """
    inputs = keras.Input((4, 4, 3))
    features = keras.layers.Conv2D(4, 1, name="conv")(inputs)
    pooled = keras.layers.AveragePooling2D(2, name="pool")(features)
    outputs = keras.layers.Dense(3, name="dense")(keras.layers.GlobalAveragePooling2D()(pooled))
    model = keras.Model(inputs, outputs)
    kernel = np.array([[1, 0, 0, 1], [0, 1, 0, 0], [0, 1, 0, 0]], np.float32).reshape(1, 1, 3, 4)
    model.get_layer("conv").set_weights([kernel, np.array([0, 0, 3, 0], np.float32)])
    dense = np.array([[0.02, -0.01, 0.0], [-0.01, 0.03, 0.01], [0.5, 0.2, -0.1], [0.01, 0.0, 0.02]])
    model.get_layer("dense").set_weights([dense.astype(np.float32), np.zeros(3, np.float32)])
    return model


def score_cam_by_loop(keras_model, model_input, layer_name, class_index):
    """Score-CAM as pytorch-grad-cam computes it, one channel at a time."""
    layer_model = keras.Model(keras_model.input, keras_model.get_layer(layer_name).output)
    features = layer_model(model_input).numpy()[0]
    height, width = model_input.shape[1:3]
    scores = []
    for channel in range(features.shape[-1]):
        upsampled = tf.compat.v1.image.resize_bilinear(
            features[np.newaxis, :, :, channel, np.newaxis], (height, width), align_corners=True
        ).numpy()[0, :, :, 0]
        mask = (upsampled - upsampled.min()) / (upsampled.max() - upsampled.min() + 1e-8)
        logits = keras_model(model_input * mask[np.newaxis, :, :, np.newaxis]).numpy()[0]
        scores.append(logits[class_index])
    scores = np.array(scores, np.float64)
    weights = np.exp(scores - scores.max()) / np.exp(scores - scores.max()).sum()
    return by_max((features * weights).sum(axis=-1))


def preprocess_centred(images):
    return images / 127.5 - 1.0


@pytest.mark.parametrize("class_index", [0, 1, 2])
def test_score_cam_equals_a_plain_loop(class_index):
    keras_model = build_score_cam_model()
    model = VisionModel(keras_model, preprocess=preprocess_centred)
    image = np.random.default_rng(class_index).integers(0, 256, (4, 4, 3), dtype=np.uint8)
    # The masks multiply the model input, after the preprocessing.
    model_input = preprocess_centred(image[np.newaxis].astype(np.float32))
    expected = score_cam_by_loop(keras_model, model_input, "pool", class_index)
    progress = []
    heatmap = class_activation_map(
        model, image, "score-cam", class_index, "pool", progress=lambda *a: progress.append(a)
    )
    assert heatmap.shape == (2, 2) and heatmap.dtype == np.float32
    np.testing.assert_allclose(heatmap, expected, atol=1e-5)
    # Four channels, three distinct masks (the constant one is blank, twice
    # red is red), scored in one batch.
    assert progress == [(3, 3)]


def test_score_cam_reports_progress_and_stops_when_cancelled():
    model = VisionModel(build_score_cam_model())
    image = np.random.default_rng(5).integers(0, 256, (4, 4, 3), dtype=np.uint8)
    seen = []
    maps, _, _ = class_activation_maps_with_probabilities(
        model, image, ["score-cam"], 0, "pool", progress=lambda *a: seen.append(a), batch_size=1
    )
    assert seen == [(1, 3), (2, 3), (3, 3)]

    class Cancelled(Exception):
        pass

    def cancel(done, total):
        seen.append((done, total))
        raise Cancelled

    seen.clear()
    with pytest.raises(Cancelled):
        class_activation_maps_with_probabilities(
            model, image, ["score-cam"], 0, "pool", progress=cancel, batch_size=1
        )
    assert seen == [(1, 3)]


@pytest.mark.parametrize("output_size, input_size", [(4, 2), (7, 3), (5, 5), (3, 1)])
def test_interpolation_matrix_matches_aligned_corner_resize(output_size, input_size):
    signal = np.random.default_rng(0).standard_normal((input_size, 1))
    expected = tf.compat.v1.image.resize_bilinear(
        signal.reshape(1, input_size, 1, 1), (output_size, 1), align_corners=True
    ).numpy()[0, :, 0, 0]
    np.testing.assert_allclose(interpolation_matrix(output_size, input_size) @ signal[:, 0], expected, atol=1e-6)

"""Tests for Grad-CAM, class predictions and the heatmap overlay (book §5.4.3).

The known-answer model is small enough to work Grad-CAM out by hand:

    image (4, 4, 3) -> Conv2D(2, 1×1, linear, no bias) -> GlobalAveragePooling2D -> Dense(3)

The 1×1 convolution copies the red channel into feature map 0 and adds green
and blue into feature map 1. With R = a (the pixel's index 0..15 in reading
order), G = 15 - a and B = 2, the features are f0 = a and f1 = 17 - a. The
logit of class c is sum_k W[k, c] * mean(f_k) + b[c], so its gradient with
respect to f_k at any pixel is W[k, c] / 16, and Grad-CAM's channel weights
are W[:, c] / 16.
"""

import keras
import numpy as np
import pytest

from convviz_core import InputError, VisionModel, colorize, grad_cam, overlay, predict
from convviz_core import predictions
from convviz_core.cam import gradcam
from convviz_core.cam.base import combine_channels

from book_reference import book_small_convnet

# Pixel index 0..15 in reading order, the value of feature map 0.
A = np.arange(16, dtype=np.float64).reshape(4, 4)
FEATURES = np.stack([A, 17 - A], axis=-1)  # (4, 4, 2): f0 = R, f1 = G + B.
CONV_KERNEL = np.array([[1, 0], [0, 1], [0, 1]], dtype=np.float32).reshape(1, 1, 3, 2)
DENSE_KERNEL = np.array([[1.0, -1.0, 0.5], [-1.0, 2.0, 0.5]], dtype=np.float32)
DENSE_BIAS = np.array([0.5, -1.0, 1.0], dtype=np.float32)
BINARY_KERNEL = np.array([[1.0], [-1.0]], dtype=np.float32)


def known_image():
    image = np.empty((4, 4, 3), dtype=np.uint8)
    image[..., 0] = A
    image[..., 1] = 15 - A
    image[..., 2] = 2
    return image


def build_known_model(head, units=3):
    """The known-answer model, ending in one of several kinds of head."""
    inputs = keras.Input((4, 4, 3))
    features = keras.layers.Conv2D(2, 1, use_bias=False, name="conv")(inputs)
    pooled = keras.layers.GlobalAveragePooling2D(name="gap")(features)
    activation = {"dense_softmax": "softmax", "dense_sigmoid": "sigmoid"}.get(head)
    outputs = keras.layers.Dense(units, activation=activation, name="dense")(pooled)
    if head == "activation_softmax":
        outputs = keras.layers.Activation("softmax", name="softmax")(outputs)
    elif head == "softmax_layer":
        outputs = keras.layers.Softmax(name="softmax")(outputs)
    elif head == "activation_sigmoid":
        outputs = keras.layers.Activation("sigmoid", name="sigmoid")(outputs)
    model = keras.Model(inputs, outputs, name=f"known_{head}")
    model.get_layer("conv").set_weights([CONV_KERNEL])
    if units == 3:
        model.get_layer("dense").set_weights([DENSE_KERNEL, DENSE_BIAS])
    else:
        model.get_layer("dense").set_weights([BINARY_KERNEL, np.zeros(1, np.float32)])
    return model


def expected_map(channel_weights):
    """Grad-CAM by hand: mean over channels of weighted features, ReLU, / max."""
    heatmap = np.maximum((FEATURES * channel_weights).mean(axis=-1), 0)
    return heatmap / heatmap.max() if heatmap.max() > 0 else heatmap


def softmax(x):
    e = np.exp(x - x.max())
    return e / e.sum()


# The logits of the known image: mean f0 = 7.5, mean f1 = 9.5.
KNOWN_LOGITS = np.array([7.5, 9.5]) @ DENSE_KERNEL + DENSE_BIAS  # (-1.5, 10.5, 9.5)
KNOWN_PROBABILITIES = softmax(KNOWN_LOGITS)
SOFTMAX_HEADS = ["dense_softmax", "activation_softmax", "softmax_layer", "dense_logits"]
SIGMOID_HEADS = ["dense_sigmoid", "activation_sigmoid", "dense_logits"]


@pytest.fixture(scope="module")
def softmax_models():
    return {head: VisionModel(build_known_model(head)) for head in SOFTMAX_HEADS}


@pytest.fixture(scope="module")
def sigmoid_models():
    return {head: VisionModel(build_known_model(head, units=1)) for head in SIGMOID_HEADS}


def test_hand_worked_numbers_are_what_the_test_assumes():
    # The rest of this file relies on these values; check them once by hand.
    np.testing.assert_allclose(KNOWN_LOGITS, [-1.5, 10.5, 9.5])
    np.testing.assert_allclose(expected_map(DENSE_KERNEL[:, 2] / 16), np.ones((4, 4)))
    # Class 0: relu(a - (17 - a)) = relu(2a - 17), largest (13) at a = 15.
    np.testing.assert_allclose(
        expected_map(DENSE_KERNEL[:, 0] / 16), np.maximum(2 * A - 17, 0) / 13
    )
    # Class 1: relu(-a + 2 (17 - a)) = relu(34 - 3a), largest (34) at a = 0.
    np.testing.assert_allclose(
        expected_map(DENSE_KERNEL[:, 1] / 16), np.maximum(34 - 3 * A, 0) / 34
    )


@pytest.mark.parametrize("head", SOFTMAX_HEADS)
@pytest.mark.parametrize("class_index", [0, 1, 2])
def test_grad_cam_known_answer_uses_score_before_softmax(softmax_models, head, class_index):
    model = softmax_models[head]
    heatmap = grad_cam(model, known_image(), class_index, "conv")

    before_softmax = expected_map(DENSE_KERNEL[:, class_index] / 16)
    # Had the softmax been kept, the gradient of p_c with respect to the pooled
    # features would be p_c (W[:, c] - sum_j p_j W[:, j]); the map would differ.
    p = KNOWN_PROBABILITIES
    after_softmax = expected_map(
        p[class_index] * (DENSE_KERNEL[:, class_index] - DENSE_KERNEL @ p) / 16
    )
    assert np.abs(before_softmax - after_softmax).max() > 0.1

    assert heatmap.dtype == np.float32 and heatmap.shape == (4, 4)
    np.testing.assert_allclose(heatmap, before_softmax, atol=1e-6)


@pytest.mark.parametrize("head", SOFTMAX_HEADS)
def test_grad_cam_defaults_to_top_class_and_last_conv(softmax_models, head):
    model = softmax_models[head]
    assert model.default_cam_layer() == "conv"
    # The top class of the known image is class 1 (logit 10.5).
    np.testing.assert_allclose(
        grad_cam(model, known_image()), expected_map(DENSE_KERNEL[:, 1] / 16), atol=1e-6
    )


@pytest.mark.parametrize("head", SIGMOID_HEADS)
def test_single_sigmoid_output_explains_class_zero_by_the_negated_score(sigmoid_models, head):
    model = sigmoid_models[head]
    assert model.class_count == 2
    positive = grad_cam(model, known_image(), 1, "conv")
    negative = grad_cam(model, known_image(), 0, "conv")
    # Class 1: weights (1, -1) / 16 -> relu(2a - 17) / 13; class 0: the negated
    # weights -> relu(17 - 2a) / 17. Where one map is positive the other is zero.
    np.testing.assert_allclose(positive, np.maximum(2 * A - 17, 0) / 13, atol=1e-6)
    np.testing.assert_allclose(negative, np.maximum(17 - 2 * A, 0) / 17, atol=1e-6)
    assert not np.any((positive > 0) & (negative > 0))

    # The logit is 7.5 - 9.5 = -2, so class 0 is the more probable one.
    p1 = 1 / (1 + np.exp(2.0))
    result = predict(model, known_image(), top=5)
    assert [(index, label) for index, label, _ in result] == [(0, "class 0"), (1, "class 1")]
    np.testing.assert_allclose([prob for _, _, prob in result], [1 - p1, p1], rtol=1e-5)
    np.testing.assert_allclose(grad_cam(model, known_image()), negative)


@pytest.mark.parametrize("head", SOFTMAX_HEADS)
def test_predict_orders_classes_by_probability(softmax_models, head):
    result = predict(softmax_models[head], known_image(), top=3)
    # Logits (-1.5, 10.5, 9.5): class 1, then 2, then 0.
    assert [(index, label) for index, label, _ in result] == [
        (1, "class 1"),
        (2, "class 2"),
        (0, "class 0"),
    ]
    np.testing.assert_allclose(
        [prob for _, _, prob in result], KNOWN_PROBABILITIES[[1, 2, 0]], rtol=1e-5
    )
    assert [index for index, _, _ in predict(softmax_models[head], known_image(), top=2)] == [1, 2]


def test_predict_uses_class_names():
    model = VisionModel(build_known_model("dense_softmax"), class_names=["cat", "dog", "bird"])
    assert predict(model, known_image(), top=3)[0][:2] == (1, "dog")
    assert [label for _, label, _ in predict(model, known_image(), top=3)] == ["dog", "bird", "cat"]


def test_predict_resizes_any_image_size(softmax_models):
    # A constant image has the same mean features at every size.
    image = np.full((9, 13, 3), 6, dtype=np.uint8)
    small = np.full((4, 4, 3), 6, dtype=np.uint8)
    for head, model in softmax_models.items():
        large_top, small_top = predict(model, image), predict(model, small)
        assert [(index, label) for index, label, _ in large_top] == [
            (index, label) for index, label, _ in small_top
        ], head
        assert [p for *_, p in large_top] == pytest.approx([p for *_, p in small_top]), head


def test_all_zero_heatmap_is_zeros_not_nan(softmax_models):
    model = softmax_models["dense_softmax"]
    # A black image gives all-zero features, so every weighted map is zero.
    heatmap = grad_cam(model, np.zeros((4, 4, 3), np.uint8), 1, "conv")
    np.testing.assert_array_equal(heatmap, np.zeros((4, 4), np.float32))
    # Only negative weighted sums: the ReLU leaves nothing.
    heatmap = combine_channels(np.ones((3, 3, 2)), -np.ones((3, 3, 2)))
    np.testing.assert_array_equal(heatmap, np.zeros((3, 3), np.float32))
    assert heatmap.dtype == np.float32


def build_book_small_convnet():
    return book_small_convnet(
        ("conv_1", "pool_1", "conv_2", "pool_2", "conv_3", "pool_3", "conv_4", "pool_4",
         "flatten", "dropout", "dense_1", "dense_2"),
        name="small_convnet",
    )  # fmt: skip


def build_vgg16():
    return keras.applications.VGG16(include_top=False, weights=None, input_shape=(32, 32, 3))


@pytest.mark.parametrize(
    "build, expected",
    [
        (build_book_small_convnet, "conv_4"),
        (build_vgg16, "block5_conv3"),
        (lambda: build_known_model("dense_softmax"), "conv"),
    ],
    ids=["book_small_convnet", "vgg16", "known"],
)
def test_default_cam_layer_is_last_non_pooling_4d_layer(build, expected):
    assert VisionModel(build()).default_cam_layer() == expected


def test_default_layer_of_book_small_convnet_gives_a_map_of_its_size():
    model = VisionModel(build_book_small_convnet())
    heatmap = grad_cam(model, np.full((150, 150, 3), 100, np.uint8), 1)
    # 150 -> 148 -> 74 -> 72 -> 36 -> 34 -> 17 -> 15: the 4th conv's output.
    assert heatmap.shape == (15, 15) and heatmap.dtype == np.float32
    assert np.all((heatmap >= 0) & (heatmap <= 1)) and not np.any(np.isnan(heatmap))


def test_model_without_4d_layer_has_no_default_cam_layer():
    inputs = keras.Input((4, 4, 3))
    outputs = keras.layers.Dense(2, activation="softmax")(keras.layers.Flatten()(inputs))
    model = VisionModel(keras.Model(inputs, outputs))
    assert model.layer_names == []
    with pytest.raises(InputError, match="no layer with a spatial"):
        model.default_cam_layer()
    with pytest.raises(InputError):
        grad_cam(model, known_image())


@pytest.mark.parametrize(
    "head, class_index, message",
    [
        ("dense_softmax", 3, "classes 0 to 2"),
        ("dense_softmax", -1, "classes 0 to 2"),
        ("dense_softmax", 1000, "classes 0 to 2"),
        ("dense_sigmoid", 2, "classes 0 to 1"),
    ],
)
def test_class_index_out_of_range(softmax_models, sigmoid_models, head, class_index, message):
    model = {**softmax_models, **sigmoid_models}[head]
    with pytest.raises(InputError, match=message):
        grad_cam(model, known_image(), class_index, "conv")


def test_model_without_class_output_cannot_be_explained():
    inputs = keras.Input((4, 4, 3))
    model = VisionModel(keras.Model(inputs, keras.layers.Conv2D(2, 1, name="conv")(inputs)))
    with pytest.raises(InputError, match="does not output class scores"):
        grad_cam(model, known_image(), 0, "conv")
    with pytest.raises(InputError, match="does not output class scores"):
        predict(model, known_image())


def test_grad_cam_does_not_retrace_for_new_classes_or_images():
    model = VisionModel(build_known_model("dense_softmax"))
    rng = np.random.default_rng(0)
    grad_cam(model, known_image(), 0, "conv")
    predict(model, known_image())
    traces = {**gradcam.TRACE_COUNTS, **predictions.TRACE_COUNTS}
    for class_index in (1, 2, None):
        grad_cam(model, rng.integers(0, 256, (4, 4, 3), dtype=np.uint8), class_index, "conv")
        grad_cam(model, rng.integers(0, 256, (7, 5, 3), dtype=np.uint8), class_index)
        predict(model, rng.integers(0, 256, (6, 6, 3), dtype=np.uint8))
    assert {**gradcam.TRACE_COUNTS, **predictions.TRACE_COUNTS} == traces


# --- Overlay -------------------------------------------------------------------


# OpenCV's JET maps 255 to BGR (0, 0, 128), dark red, and 0 to BGR (128, 0, 0),
# dark blue; in RGB these are (128, 0, 0) and (0, 0, 128).
@pytest.mark.parametrize(
    "level, rgb, alpha",
    [(1.0, (128, 0, 0), 0.4), (0.0, (0, 0, 128), 0.4), (1.0, (128, 0, 0), 1.0)],
)
def test_overlay_of_constant_heatmap_has_exact_pixels(level, rgb, alpha):
    image = np.random.default_rng(1).integers(0, 256, (7, 11, 3), dtype=np.uint8)
    heatmap = np.full((3, 5), level, np.float32)
    result = overlay(image, heatmap, alpha=alpha)
    expected = np.clip(image.astype(np.float64) + alpha * np.array(rgb), 0, 255).astype(np.uint8)
    assert result.dtype == np.uint8 and result.shape == (7, 11, 3)
    np.testing.assert_array_equal(result, expected)
    np.testing.assert_array_equal(
        colorize(heatmap), np.broadcast_to(np.array(rgb, np.uint8), (3, 5, 3))
    )


def test_overlay_of_black_image_shows_red_where_the_heatmap_is_hot():
    image = np.zeros((6, 8, 3), np.uint8)
    heatmap = np.zeros((6, 8), np.float32)
    heatmap[:, 4:] = 1.0
    result = overlay(image, heatmap)
    # 0.4 * 128 = 51.2, truncated to 51: red on the right, blue on the left.
    np.testing.assert_array_equal(result[:, 4:], np.broadcast_to([51, 0, 0], (6, 4, 3)))
    np.testing.assert_array_equal(result[:, :4], np.broadcast_to([0, 0, 51], (6, 4, 3)))


@pytest.mark.parametrize(
    "image",
    [np.zeros((4, 4, 3), np.float32), np.zeros((4, 4), np.uint8), np.zeros((4, 4, 4), np.uint8)],
    ids=["float", "gray", "rgba"],
)
def test_overlay_rejects_non_rgb_uint8_images(image):
    with pytest.raises(InputError):
        overlay(image, np.zeros((2, 2)))


def test_colorize_rejects_non_2d_heatmaps():
    with pytest.raises(InputError):
        colorize(np.zeros((2, 2, 1)))

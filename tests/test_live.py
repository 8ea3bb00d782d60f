"""The Live page's per-frame work (`convviz_core.live`): known answers, and equality with the one-image views.

The known answers use the known-answer model of `test_gradcam.py` (features
f0 = a and f1 = 17 - a, a = 0..15 in reading order; logits (-1.5, 10.5, 9.5),
so class 1 is the top class and its Grad-CAM map is relu(34 - 3a) / 34; the
channel means are 7.5 and 9.5, so channel 1 is the strongest). On
EfficientNet-Lite0, a frame's channels, map, overlay and top class are
checked against `activations`, `class_activation_map`, `overlay` and
`predict` run one at a time.
"""

import concurrent.futures

import numpy as np
import pytest

from convviz_core import InputError, VisionModel, activations, class_activation_map, load_model, overlay, predict
from convviz_core.cam import passes
from convviz_core.intermediate_activations import activation_grid
from convviz_core.inputs.samples import sample_image
from convviz_core.live import analyze_frame, strongest_channels

from test_gradcam import A, FEATURES, KNOWN_PROBABILITIES, build_known_model, known_image


@pytest.fixture(scope="module")
def known_model():
    return VisionModel(build_known_model("dense_softmax"), class_names=["zero", "one", "two"])


@pytest.fixture(scope="module")
def lite0():
    return load_model("efficientnet-lite0")


def camera_frame(name="chelsea", height=240, width=320, shift=0):
    """A camera-sized frame (4:3, unlike the model's square input) cut from a sample photo."""
    photo = sample_image(name)
    top, left = 10 + shift, 20 + 2 * shift
    frame = photo[top : top + height, left : left + width]
    assert frame.shape == (height, width, 3)
    return np.ascontiguousarray(frame)


def test_known_answer(known_model):
    image = known_image()
    result = analyze_frame(known_model, image, "conv", channel_count=2, columns=2, alpha=0.5)
    assert result.layer_name == "conv"
    assert result.channels == (1, 0)
    assert (result.class_index, result.label) == (1, "one")
    assert result.probability == pytest.approx(KNOWN_PROBABILITIES[1], abs=1e-6)
    np.testing.assert_allclose(result.heatmap, np.maximum(34 - 3 * A, 0) / 34, atol=1e-6)
    # Channel 1 (17 - a) first, then channel 0 (a), side by side, each standardised.
    std = np.sqrt((16**2 - 1) / 12)
    standardised = lambda values: np.clip(np.floor((values - values.mean()) / std * 64 + 128), 0, 255)  # noqa: E731
    expected_grid = np.concatenate([standardised(17 - A), standardised(A)], axis=1)
    np.testing.assert_allclose(result.channel_grid, expected_grid, atol=1)
    np.testing.assert_array_equal(result.channel_grid, activation_grid(FEATURES[:, :, [1, 0]], images_per_row=2))
    np.testing.assert_array_equal(result.overlay, overlay(image, result.heatmap, 0.5))


def test_a_layer_with_fewer_channels_than_asked_shows_them_all(known_model):
    result = analyze_frame(known_model, known_image(), "conv", channel_count=8, columns=4)
    assert result.channels == (1, 0)
    assert result.channel_grid.shape == (4, 8)


@pytest.mark.parametrize(
    "activation, count, expected",
    [
        (np.array([[[1.0, 3.0, 2.0]]]), 2, [1, 2]),
        (np.array([[[2.0, 5.0, 2.0, 5.0]]]), 4, [1, 3, 0, 2]),  # ties: the lower index first
        (np.array([[[np.nan, -1.0, 0.0]]]), 3, [2, 1, 0]),  # NaN is the weakest
        (np.stack([A, 17 - A], axis=-1), 1, [1]),
    ],
)
def test_strongest_channels(activation, count, expected):
    assert strongest_channels(activation, count).tolist() == expected


@pytest.mark.parametrize(
    "activation, count, message",
    [
        (np.zeros((4, 4)), 1, r"activation must have shape \(height, width, channels\). Received: \(4, 4\)"),
        (np.zeros((4, 4, 2)), 0, "count must be at least 1. Received: count=0"),
    ],
)
def test_strongest_channels_refuses_bad_arguments(activation, count, message):
    with pytest.raises(ValueError, match=message):
        strongest_channels(activation, count)


@pytest.mark.parametrize(
    "frame, options, message",
    [
        (np.zeros((4, 4), np.uint8), {}, "RGB"),
        (np.zeros((4, 4, 3), np.float32), {}, "uint8"),
        (np.zeros((4, 4, 3), np.uint8), {"layer_name": "nope"}, "Cannot show layer 'nope'"),
        (np.zeros((4, 4, 3), np.uint8), {"channel_count": 0}, "Show at least one channel"),
    ],
)
def test_user_errors_are_input_errors(known_model, frame, options, message):
    with pytest.raises(InputError, match=message):
        analyze_frame(known_model, frame, **options)


@pytest.mark.parametrize("layer", [None, "block3a_project_bn"])
def test_a_frame_equals_the_one_image_views(lite0, layer):
    frame = camera_frame()
    result = analyze_frame(lite0, frame, layer, channel_count=8, columns=4, alpha=0.4)
    layer = layer or lite0.default_cam_layer()
    assert result.layer_name == layer

    reference_map = class_activation_map(lite0, frame, "grad-cam", layer_name=layer)
    np.testing.assert_allclose(result.heatmap, reference_map, atol=1e-6)
    np.testing.assert_array_equal(result.overlay, overlay(frame, lite0.heatmap_on_input(layer, reference_map), 0.4))

    [(class_index, label, probability)] = predict(lite0, frame, top=1)
    assert (result.class_index, result.label) == (class_index, label)
    assert result.probability == pytest.approx(probability, abs=1e-6)

    activation = activations(lite0, frame, [layer])[layer]
    means = activation.mean(axis=(0, 1))
    assert list(result.channels) == np.argsort(-means, kind="stable")[:8].tolist()
    assert means[list(result.channels)].min() >= np.delete(means, result.channels).max()
    # Standardising the same activations (equal to 1e-6) gives the same levels, or one off at a rounding edge.
    expected_grid = activation_grid(activation[:, :, list(result.channels)], images_per_row=4)
    assert result.channel_grid.shape == expected_grid.shape == (2 * activation.shape[0], 4 * activation.shape[1])
    difference = np.abs(result.channel_grid.astype(int) - expected_grid)
    assert difference.max() <= 1 and (difference > 0).mean() < 0.01


def test_threads_share_one_compiled_pass_and_leave_the_model_as_it_was(lite0):
    frames = [camera_frame(name, shift=shift) for name in ("chelsea", "coffee", "astronaut") for shift in (0, 8)]
    layer = "block5a_expand_activation" if "block5a_expand_activation" in lite0.layer_names else lite0.layer_names[90]
    analyze_frame(lite0, frames[0], layer)  # Traces the layer's pass once.
    traces = dict(passes.TRACE_COUNTS)
    weights = [weight.copy() for weight in lite0.keras_model.get_weights()]
    alone = [analyze_frame(lite0, frame, layer) for frame in frames]
    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        together = list(pool.map(lambda frame: analyze_frame(lite0, frame, layer), frames * 2))
    assert passes.TRACE_COUNTS == traces
    for index, result in enumerate(together):
        reference = alone[index % len(frames)]
        assert (result.class_index, result.channels) == (reference.class_index, reference.channels)
        np.testing.assert_array_equal(result.heatmap, reference.heatmap)
        np.testing.assert_array_equal(result.overlay, reference.overlay)
    for before, after in zip(weights, lite0.keras_model.get_weights()):
        np.testing.assert_array_equal(before, after)

"""Tests for the clear mode of filter patterns (`convviz_core.features.optvis`), on tiny hand-set models."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from convviz_core import InputError, VisionModel
from convviz_core.features.optvis import (
    diversity_set,
    free_size_supported,
    high_frequency_share,
    render_patterns,
    render_size,
    transform_robustness,
)
from convviz_core.features.optvis import objectives, render, transform
from convviz_core.features.optvis.param.color import (
    COLOR_CORRELATION_NORMALIZED,
    COLOR_CORRELATION_SQRT,
    decorrelated_to_rgb,
    to_valid_rgb,
)
from convviz_core.features.optvis.param.spatial import FourierImage, PixelImage, fourier_scale

SIZE = 16


def scale_pixels(images):
    return images / 127.5 - 1.0


def build_free_model():
    """A fully convolutional net of any input size; `conv_b` has 4 filters."""
    inputs = keras.Input((None, None, 3))
    x = keras.layers.Conv2D(6, 3, activation="relu", padding="same", name="conv_a")(inputs)
    x = keras.layers.Conv2D(4, 3, padding="same", name="conv_b")(x)
    model = keras.Model(inputs, x, name="free")
    rng = np.random.default_rng(0)
    for layer in model.layers:
        layer.set_weights([rng.normal(0, 0.5, w.shape).astype(np.float32) for w in layer.get_weights()])
    return model


@pytest.fixture(scope="module")
def model():
    return VisionModel(build_free_model(), preprocess=scale_pixels)


def one_by_one_model(input_shape=(None, None, 3)):
    """A 1x1 convolution whose filter 0 is the red pixel, filter 1 the green one (raw 0-255 input)."""
    inputs = keras.Input(input_shape)
    outputs = keras.layers.Conv2D(2, 1, use_bias=False, name="pick")(inputs)
    keras_model = keras.Model(inputs, outputs)
    kernel = np.zeros((1, 1, 3, 2), np.float32)
    kernel[0, 0, 0, 0] = kernel[0, 0, 1, 1] = 1.0
    keras_model.get_layer("pick").set_weights([kernel])
    return VisionModel(keras_model)


# --- param/spatial.py ---------------------------------------------------------


@pytest.mark.parametrize("height, width", [(12, 15), (16, 16)])
def test_fourier_image_round_trips_through_its_inverse(height, width):
    fourier = FourierImage(height, width)
    images = tf.constant(np.random.default_rng(0).normal(size=(2, height, width, 3)), tf.float32)
    parameters = fourier.from_image(images)
    assert tuple(parameters.shape) == (2, 3, height, width // 2 + 1, 2) == (2, *fourier.parameter_shape)
    np.testing.assert_allclose(fourier.to_image(parameters).numpy(), images.numpy(), atol=1e-4)


def test_fourier_scale_is_one_over_frequency():
    height, width = 12, 15
    scale = fourier_scale(height, width)
    assert scale.shape == (height, width // 2 + 1)
    root = np.sqrt(height * width)
    # The mean is clamped at one cycle per image; (0, 3) is 3 / 15 cycles per pixel.
    np.testing.assert_allclose(scale[0, 0], root * 15, rtol=1e-6)
    np.testing.assert_allclose(scale[0, 3], root / (3 / 15), rtol=1e-6)
    np.testing.assert_allclose(scale[4, 0], root / (4 / 12), rtol=1e-6)
    np.testing.assert_allclose(scale[0, 1], scale[0, 2] * 2, rtol=1e-6)


def test_one_fourier_coefficient_is_a_cosine_across_the_image():
    height, width, cycles = 8, 16, 3
    fourier = FourierImage(height, width, channels=1)
    parameters = np.zeros((1, *fourier.parameter_shape), np.float32)
    parameters[0, 0, 0, cycles, 0] = 1.0
    image = fourier.to_image(tf.constant(parameters)).numpy()[0, :, :, 0]
    # A real FFT coefficient c at (0, k) is the image 2 c cos(2 pi k x / w) / (h w), divided by 4.
    amplitude = 2 * fourier_scale(height, width)[0, cycles] / (height * width) / 4
    expected = amplitude * np.cos(2 * np.pi * cycles * np.arange(width) / width)
    np.testing.assert_allclose(image, np.tile(expected, (height, 1)), atol=1e-6)


@pytest.mark.parametrize("height, width", [(12, 15), (16, 16), (9, 8)])
def test_fourier_image_gradient_equals_differentiating_the_inverse_fft(height, width):
    # The reference: the complex product, TensorFlow's inverse FFT and the
    # transpose, differentiated op by op (what `to_image` did before its
    # hand-written gradient). Both are linear in the parameters, so every
    # upstream gradient must give the same parameter gradient.
    fourier = FourierImage(height, width)
    rng = np.random.default_rng(1)
    parameters = tf.constant(rng.normal(size=(2, *fourier.parameter_shape)), tf.float32)
    upstream = tf.constant(rng.normal(size=(2, height, width, 3)), tf.float32)

    def reference(parameters):
        spectrum = tf.complex(parameters[..., 0], parameters[..., 1]) * tf.cast(fourier.scale, tf.complex64)
        image = tf.signal.irfft2d(spectrum, fft_length=[height, width])
        return tf.transpose(image, [0, 2, 3, 1]) / 4.0

    with tf.GradientTape(persistent=True) as tape:
        tape.watch(parameters)
        ours, theirs = fourier.to_image(parameters), reference(parameters)
        ours_total, theirs_total = tf.reduce_sum(ours * upstream), tf.reduce_sum(theirs * upstream)
    np.testing.assert_allclose(ours.numpy(), theirs.numpy(), atol=1e-6)
    expected = tape.gradient(theirs_total, parameters).numpy()
    np.testing.assert_allclose(tape.gradient(ours_total, parameters).numpy(), expected, atol=1e-4 * np.abs(expected).max())


def test_initial_parameters_depend_only_on_their_seed():
    fourier = FourierImage(8, 8)
    together = fourier.initial_parameters([[0, 1, 0], [0, 2, 0]])
    alone = fourier.initial_parameters([[0, 2, 0]])
    np.testing.assert_array_equal(together[1], alone[0])
    assert not np.array_equal(together[0], together[1])
    assert PixelImage(8, 8).initial_parameters([1]).shape == (1, 8, 8, 3)


# --- param/color.py -----------------------------------------------------------


def test_color_correlation_matrix_has_orthogonal_columns_led_by_brightness():
    gram = COLOR_CORRELATION_SQRT.T @ COLOR_CORRELATION_SQRT
    off_diagonal = gram - np.diag(np.diag(gram))
    # U sqrt(S): orthogonal columns with decreasing norms (to the 2 decimals of the constants).
    assert np.abs(off_diagonal).max() < 2e-3
    norms = np.linalg.norm(COLOR_CORRELATION_SQRT, axis=0)
    assert norms[0] > norms[1] > norms[2]
    # The first axis is brightness: all three channels, with the same sign and about equal weights.
    assert np.all(COLOR_CORRELATION_SQRT[:, 0] > 0.25)
    np.testing.assert_allclose(np.linalg.norm(COLOR_CORRELATION_NORMALIZED, axis=0).max(), 1.0, rtol=1e-6)


def test_decorrelated_colours_map_to_rgb_through_the_matrix():
    pixel = tf.constant([[[[1.0, 0.0, 0.0]]]])
    np.testing.assert_allclose(
        decorrelated_to_rgb(pixel).numpy()[0, 0, 0], COLOR_CORRELATION_NORMALIZED[:, 0], rtol=1e-6
    )
    zeros = tf.zeros((1, 2, 2, 3))
    np.testing.assert_allclose(to_valid_rgb(zeros).numpy(), 0.5)
    large = tf.fill((1, 2, 2, 3), 50.0)
    assert np.all(to_valid_rgb(large, decorrelate=False).numpy() <= 1.0)


def test_colour_decorrelation_is_the_matrix_times_every_pixel():
    images = np.random.default_rng(2).normal(size=(2, 3, 5, 3)).astype(np.float32)
    expected = np.einsum("ij,bhwj->bhwi", COLOR_CORRELATION_NORMALIZED, images)
    np.testing.assert_allclose(decorrelated_to_rgb(tf.constant(images)).numpy(), expected, atol=1e-6)


# --- transform.py ---------------------------------------------------------------


@pytest.mark.parametrize(
    "step, expected_side",
    [
        (transform.pad(3), SIZE + 6),
        (transform.jitter(4), SIZE - 4),
        (transform.random_affine((0.9, 1.1), 10.0, 2.0), SIZE),
        (transform.random_scale(), SIZE),
        (transform.random_rotate(), SIZE),
        (transform.compose(transform.standard_transforms()), SIZE + render.TRANSFORM_GROWTH),
    ],
)
def test_transforms_keep_a_known_shape_and_are_differentiable(step, expected_side):
    images = tf.constant(np.random.default_rng(0).random((2, SIZE, SIZE, 3)), tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(images)
        moved = step(images, tf.constant([1, 2]))
        total = tf.reduce_sum(moved * moved)
    assert tuple(moved.shape) == (2, expected_side, expected_side, 3)
    gradient = tape.gradient(total, images).numpy()
    assert np.all(np.isfinite(gradient)) and np.abs(gradient).sum() > 0
    np.testing.assert_array_equal(moved.numpy(), step(images, tf.constant([1, 2])).numpy())


def test_affine_identity_and_one_pixel_shift_are_exact():
    images = tf.constant(np.random.default_rng(0).random((1, 6, 7, 3)), tf.float32)
    one, zero = tf.ones((1,)), tf.zeros((1,))
    identity = transform.affine_matrices(one, zero, tf.zeros((1, 2)), 6, 7)
    np.testing.assert_allclose(transform.apply_affine(images, identity).numpy(), images.numpy(), atol=1e-6)
    right = transform.affine_matrices(one, zero, tf.constant([[0.0, 1.0]]), 6, 7)
    shifted = transform.apply_affine(images, right).numpy()
    np.testing.assert_allclose(shifted[:, :, 1:], images.numpy()[:, :, :-1], atol=1e-6)


# --- objectives.py --------------------------------------------------------------


def hand_set_activations():
    """Two 3x3 maps of 2 channels: channel c of image i is (i + 1) * (c + 1) * [1..9]."""
    grid = np.arange(1, 10, dtype=np.float32).reshape(3, 3)
    return tf.constant(
        np.stack([np.stack([(i + 1) * (c + 1) * grid for c in range(2)], -1) for i in range(2)])
    )


def test_channel_and_neuron_objectives_have_known_values():
    activations, indices = hand_set_activations(), tf.constant([1, 0])
    # Image 0, channel 1: 2 * mean(1..9) = 10; image 1, channel 0: 2 * 5 = 10.
    np.testing.assert_allclose(objectives.channel()(activations, indices).numpy(), [10.0, 10.0])
    # The centre unit of [1..9] is 5.
    np.testing.assert_allclose(objectives.neuron()(activations, indices).numpy(), [10.0, 10.0])
    composed = objectives.channel() - 0.5 * objectives.neuron() + 1
    np.testing.assert_allclose(composed(activations, indices).numpy(), [6.0, 6.0])


def test_channel_objective_through_a_hand_set_convolution():
    model = one_by_one_model()
    images = np.zeros((2, 4, 4, 3), np.float32)
    images[0, ..., 0] = 10.0  # Red image: filter 0 reads 10.
    images[1, :2, :, 1] = 8.0  # Half-green image: filter 1 reads 8 on half the pixels.
    captured, _ = model.plan.run(model.preprocess(images), taps=("pick",))
    values = objectives.channel()(captured["pick"], tf.constant([0, 1])).numpy()
    np.testing.assert_allclose(values, [10.0, 4.0])
    centre = objectives.neuron()(captured["pick"], tf.constant([0, 1])).numpy()
    np.testing.assert_allclose(centre, [10.0, 0.0])  # The centre (2, 2) of image 1 is not green.


def test_diversity_is_minus_the_gram_similarity_among_images_of_one_filter():
    first = np.zeros((3, 3, 2), np.float32)
    first[..., 0] = 1.0
    second = np.zeros((3, 3, 2), np.float32)
    second[..., 1] = 1.0
    activations = tf.constant(np.stack([first, first, second]))
    # Images 0 and 1 share filter 0 and a Gram matrix (similarity 1); image 2 is alone.
    values = objectives.diversity()(activations, tf.constant([0, 0, 1])).numpy()
    np.testing.assert_allclose(values, [-1.0, -1.0, 0.0], atol=1e-6)
    # Orthogonal Gram matrices are fully diverse.
    values = objectives.diversity()(activations[1:], tf.constant([0, 0])).numpy()
    np.testing.assert_allclose(values, [0.0, 0.0], atol=1e-6)


def test_unknown_objective_is_refused(model):
    with pytest.raises(InputError, match="objective"):
        render_patterns(model, "conv_b", [0], objective="banana", size=SIZE, steps=1)
    with pytest.raises(InputError, match="filters 0 to 3"):
        render_patterns(model, "conv_b", [4], size=SIZE, steps=1)


# --- render.py ------------------------------------------------------------------


@pytest.mark.parametrize(
    "parameterization, objective, transforms",
    [
        ("fourier", "channel", "standard"),
        ("pixel", "channel", "standard"),
        # One unit of a 16-pixel image is a moving target under 8-pixel jitter:
        # the neuron objective is checked without transforms.
        ("fourier", "neuron", "none"),
        ("pixel", "neuron", "none"),
    ],
)
def test_a_few_steps_improve_the_objective(model, parameterization, objective, transforms):
    images, final, start = render.render_images(
        model,
        "conv_b",
        [0, 1, 2, 3],
        objective=objective,
        size=SIZE,
        steps=12,
        learning_rate=0.1,
        parameterization=parameterization,
        transforms=transforms,
    )
    assert images.shape == (4, SIZE, SIZE, 3)
    assert np.all(images >= 0) and np.all(images <= 1)
    assert np.all(final > start), (final, start)


def test_the_default_schedule_climbs_most_of_the_way_of_lucids_in_fewer_steps(model):
    # Lucid's Adam takes 0.05 steps; the default takes fewer, larger ones
    # (`render.DEFAULT_STEPS` at `render.DEFAULT_LEARNING_RATE`). Measured as
    # the rise of each filter's objective from the same start: the default
    # must keep most of what 128 steps at 0.05 reach (on EfficientNet-Lite0
    # 85-90%), and beat its own number of steps at 0.05.
    assert render.DEFAULT_STEPS <= 48
    filters = [0, 1, 2, 3]
    _, lucid, start = render.render_images(model, "conv_b", filters, size=SIZE, steps=128, learning_rate=0.05)
    _, default, same_start = render.render_images(model, "conv_b", filters, size=SIZE)
    _, small_steps, _ = render.render_images(
        model, "conv_b", filters, size=SIZE, steps=render.DEFAULT_STEPS, learning_rate=0.05
    )
    np.testing.assert_array_equal(start, same_start)
    assert np.all(lucid > start)
    reached = (default - start) / (lucid - start)
    assert reached.mean() >= 0.75 and reached.min() >= 0.6, reached
    assert np.all(default > small_steps), (default, small_steps)


def test_one_channel_objectives_compute_the_same_as_the_whole_layer(monkeypatch):
    # The channel and neuron objectives compute only each image's own channel
    # of the layer (`patterns.chosen_channels`); computing the whole layer
    # and picking the channel is the reference. Compiled functions are cached
    # per `VisionModel`, so each way gets a model of its own (same weights).
    options = {"size": SIZE, "steps": 6, "learning_rate": 0.1, "seed": 2}
    fast_model = VisionModel(build_free_model(), preprocess=scale_pixels)
    fast = {objective: render.render_images(fast_model, "conv_b", [3, 1], objective=objective, **options)
            for objective in ("channel", "neuron")}
    monkeypatch.setattr(render, "ONE_CHANNEL_OBJECTIVES", ())
    whole_model = VisionModel(build_free_model(), preprocess=scale_pixels)
    for objective, (images, final, start) in fast.items():
        reference = render.render_images(whole_model, "conv_b", [3, 1], objective=objective, **options)
        np.testing.assert_allclose(images, reference[0], atol=1e-4)
        np.testing.assert_allclose(final, reference[1], rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(start, reference[2], rtol=1e-5, atol=1e-5)


def test_patterns_are_uint8_and_the_same_for_the_same_seed(model):
    first = render_patterns(model, "conv_b", [2, 0], size=SIZE, steps=4, seed=3)
    again = render_patterns(model, "conv_b", [0, 2], size=SIZE, steps=4, seed=3)
    other = render_patterns(model, "conv_b", [2, 0], size=SIZE, steps=4, seed=4)
    assert first.dtype == np.uint8 and first.shape == (2, SIZE, SIZE, 3)
    np.testing.assert_array_equal(first, render_patterns(model, "conv_b", [2, 0], size=SIZE, steps=4, seed=3))
    # Starts depend on (seed, filter) only; the per-step transforms are drawn per batch.
    assert again.shape == first.shape
    assert not np.array_equal(first, other)


def test_diversity_gives_patterns_less_alike_than_the_channel_objective(model):
    options = dict(size=SIZE, steps=16, learning_rate=0.1, transforms="none")
    plain, _, _ = render.render_images(model, "conv_b", [1, 1, 1], objective="channel", **options)
    diverse, _, _ = render.render_images(
        model, "conv_b", [1, 1, 1], objective="diversity", diversity_weight=4.0, **options
    )

    def mean_similarity(images):
        captured, _ = model.plan.run(model.preprocess(images * 255.0), taps=("conv_b",))
        grams = objectives.gram_matrices(captured["conv_b"]).numpy()
        similarity = grams @ grams.T
        return similarity[~np.eye(len(images), dtype=bool)].mean()

    assert mean_similarity(diverse) < mean_similarity(plain)
    patterns = diversity_set(model, "conv_b", 1, count=2, size=SIZE, steps=4)
    assert patterns.shape == (2, SIZE, SIZE, 3) and not np.array_equal(patterns[0], patterns[1])


def test_progress_is_reported_and_can_cancel(model):
    calls = []
    render_patterns(
        model, "conv_b", [0], size=SIZE, steps=render.STEPS_PER_CALL * 2, progress=lambda *a: calls.append(a)
    )
    assert calls == [(1, 2), (2, 2)]

    class Cancelled(Exception):
        pass

    def cancel(done, total):
        raise Cancelled

    with pytest.raises(Cancelled):
        render_patterns(model, "conv_b", [0, 1], size=SIZE, steps=render.STEPS_PER_CALL * 3, progress=cancel)


def test_one_trace_serves_new_filters_and_step_counts(model):
    render_patterns(model, "conv_b", [0], size=SIZE + 2, steps=1)
    traces = render.TRACE_COUNTS["render_patterns"]
    render_patterns(model, "conv_b", [1, 2, 3], size=SIZE + 2, steps=3, seed=5)
    assert render.TRACE_COUNTS["render_patterns"] == traces


def test_fixed_input_models_render_at_the_chosen_size_when_fully_convolutional():
    keras_model = build_free_model()
    inputs = keras.Input((32, 32, 3))
    fixed = VisionModel(keras.Model(inputs, keras_model(inputs)), preprocess=scale_pixels)
    weights = [w.copy() for w in fixed.keras_model.get_weights()]
    assert fixed.has_fixed_input_size
    assert free_size_supported(fixed, "free/conv_b", SIZE)
    assert render_size(fixed, "free/conv_b", SIZE) == (SIZE, SIZE)
    assert render_patterns(fixed, "free/conv_b", [0], size=SIZE, steps=2).shape == (1, SIZE, SIZE, 3)
    for before, after in zip(weights, fixed.keras_model.get_weights()):
        np.testing.assert_array_equal(before, after)


def test_a_dense_layer_before_the_target_falls_back_to_the_input_size():
    inputs = keras.Input((20, 20, 3))
    x = keras.layers.Flatten()(inputs)
    x = keras.layers.Dense(20 * 20 * 2)(x)
    x = keras.layers.Reshape((20, 20, 2))(x)
    outputs = keras.layers.Conv2D(2, 3, name="late_conv")(x)
    fixed = VisionModel(keras.Model(inputs, outputs))
    assert not free_size_supported(fixed, "late_conv", SIZE)
    assert render_size(fixed, "late_conv", SIZE) == (20, 20)
    # A Dense layer mixes every pixel, so the check is made without random transforms.
    images, final, start = render.render_images(
        fixed, "late_conv", [0, 1], size=SIZE, steps=6, learning_rate=0.1, transforms="none"
    )
    assert images.shape == (2, 20, 20, 3) and np.all(final > start)


# --- quality.py -----------------------------------------------------------------


def test_high_frequency_share_of_known_patterns():
    columns = np.arange(16)
    flat = np.full((16, 16, 3), 100.0)
    checkerboard = ((columns[:, None] + columns[None, :]) % 2 * 255.0)[..., None].repeat(3, -1)
    slow = (np.cos(2 * np.pi * columns / 16)[None, :].repeat(16, 0) * 100 + 128)[..., None].repeat(3, -1)
    shares = high_frequency_share(np.stack([flat, checkerboard, slow]))
    np.testing.assert_allclose(shares, [0.0, 1.0, 0.0], atol=1e-9)


def test_transform_robustness_of_a_flat_pattern_is_one_and_a_dead_filter_is_nan():
    model = one_by_one_model((16, 16, 3))
    patterns = np.zeros((2, 16, 16, 3), np.uint8)
    patterns[..., 0] = 200  # Red everywhere: filter 0 reads 200 wherever the copy is moved.
    ratios = transform_robustness(model, "pick", patterns, [0, 1])
    np.testing.assert_allclose(ratios[0], 1.0, rtol=1e-5)
    assert np.isnan(ratios[1])  # Filter 1 (green) never fires on a red pattern.


def test_transform_robustness_is_low_for_a_pattern_tied_to_its_pixels():
    model = one_by_one_model((32, 32, 3))
    tied = np.zeros((1, 32, 32, 3), np.uint8)
    tied[0, 16, 16, 0] = 255  # One red pixel: a shifted copy moves it, the mean stays but blurs.
    stripes = np.zeros((1, 32, 32, 3), np.uint8)
    stripes[0, :, ::2, 0] = 255
    ratios = transform_robustness(model, "pick", np.concatenate([tied, stripes]), [0, 0])
    assert np.all(ratios > 0.5) and np.all(ratios < 1.5)

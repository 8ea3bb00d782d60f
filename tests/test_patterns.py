"""Tests for filter patterns by gradient ascent and their grid (book §5.4.2)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from convviz_core import InputError, VisionModel, filter_patterns, pattern_grid, patterns
from convviz_core.features.patterns import deprocess_image, optimize_patterns, start_images

from book_reference import book_pattern

SIZE = 10


def scale_pixels(images):
    return images / 127.5 - 1.0


def build_plain_model(input_size=(SIZE, SIZE)):
    """A small convnet with hand-set weights; `conv_b` has 6 filters."""
    inputs = keras.Input((*input_size, 3))
    x = keras.layers.Conv2D(4, 3, activation="relu", padding="same", name="conv_a")(inputs)
    x = keras.layers.Conv2D(6, 3, name="conv_b")(x)
    x = keras.layers.ReLU(name="relu_b")(x)
    outputs = keras.layers.Dense(2, activation="softmax", name="dense")(
        keras.layers.GlobalAveragePooling2D(name="gap")(x)
    )
    model = keras.Model(inputs, outputs, name="plain")
    rng = np.random.default_rng(0)
    for layer in model.layers:
        layer.set_weights(
            [rng.normal(0, 0.5, w.shape).astype(np.float32) for w in layer.get_weights()]
        )
    # Positive biases keep every filter alive (above its ReLU) from the gray start.
    for name, bias in (("conv_a", 0.5), ("conv_b", 2.0)):
        layer = model.get_layer(name)
        layer.set_weights([layer.get_weights()[0], np.full(layer.filters, bias, np.float32)])
    return model


@pytest.fixture(scope="module")
def keras_model():
    return build_plain_model()


@pytest.fixture(scope="module")
def model(keras_model):
    return VisionModel(keras_model, preprocess=scale_pixels)


def mean_activation(layer_model, preprocess, images, filter_indices):
    output = layer_model(preprocess(tf.constant(images, tf.float32))).numpy()
    return np.array([output[i, :, :, f].mean() for i, f in enumerate(filter_indices)])


def test_batched_patterns_equal_the_book_loop_one_filter_at_a_time(keras_model, model):
    filters, steps, step_size, seed = [0, 3, 5, 1], 7, 2.5, 4
    layer_model = keras.Model(keras_model.input, keras_model.get_layer("conv_b").output)
    starts = start_images(filters, SIZE, SIZE, seed)
    reference = np.stack(
        [
            book_pattern(layer_model, scale_pixels, f, s, steps, step_size)
            for f, s in zip(filters, starts, strict=True)
        ]
    )

    raw, _ = optimize_patterns(
        model, "conv_b", filters, steps=steps, step_size=step_size, seed=seed, precision="float32"
    )
    images = filter_patterns(
        model, "conv_b", filters, steps=steps, step_size=step_size, seed=seed, precision="float32"
    )

    # The images moved (7 steps of RMS 2.5 each) and moved the same way.
    moved = reference - starts
    assert np.sqrt(np.mean(moved**2)) > 5
    np.testing.assert_allclose(raw - starts, moved, rtol=1e-3, atol=1e-4 * np.abs(moved).max())
    assert images.dtype == np.uint8 and images.shape == (4, SIZE, SIZE, 3)
    expected = np.stack([deprocess_image(image) for image in reference])
    assert np.abs(images.astype(int) - expected).max() <= 1
    assert np.mean(images == expected) > 0.99


@pytest.mark.parametrize(
    "conv_arguments",
    [
        {"kernel_size": 3, "padding": "same"},
        {"kernel_size": 3, "strides": 2, "padding": "same", "activation": "relu"},
        {"kernel_size": (2, 3), "strides": (2, 1), "padding": "valid", "use_bias": False},
        {"kernel_size": 3, "dilation_rate": 2, "padding": "same", "activation": "tanh"},
        {"kernel_size": 1, "padding": "valid", "activation": "sigmoid"},
    ],
    ids=["same", "strided_relu", "rectangular_no_bias", "dilated_tanh", "pointwise_sigmoid"],
)
def test_batched_patterns_equal_the_book_loop_for_conv_variants(conv_arguments):
    inputs = keras.Input((11, 11, 3))
    x = keras.layers.Conv2D(3, 3, activation="relu", padding="same", name="first")(inputs)
    target = keras.layers.Conv2D(5, name="target", **conv_arguments)(x)
    keras_model = keras.Model(inputs, target)
    rng = np.random.default_rng(1)
    for layer in keras_model.layers[1:]:
        layer.set_weights(
            [rng.normal(0.1, 0.5, w.shape).astype(np.float32) for w in layer.get_weights()]
        )
    model = VisionModel(keras_model, preprocess=scale_pixels)
    filters, steps = [4, 0, 2], 4
    starts = start_images(filters, 11, 11, seed=3)
    reference = np.stack(
        [
            book_pattern(keras_model, scale_pixels, f, s, steps, 1.5)
            for f, s in zip(filters, starts, strict=True)
        ]
    )
    raw, _ = optimize_patterns(
        model, "target", filters, steps=steps, step_size=1.5, seed=3, precision="float32"
    )
    moved = reference - starts
    assert np.abs(moved).max() > 1
    np.testing.assert_allclose(raw - starts, moved, rtol=1e-3, atol=1e-4 * np.abs(moved).max())


@pytest.mark.parametrize(
    "layer_name, filters",
    [("conv_a", [0, 1, 2, 3]), ("conv_b", [0, 1, 2, 3, 4, 5]), ("relu_b", [1, 2, 3, 4, 5])],
)
def test_gradient_ascent_improves_the_objective(keras_model, model, layer_name, filters):
    layer_model = keras.Model(keras_model.input, keras_model.get_layer(layer_name).output)
    starts = start_images(filters, SIZE, SIZE, seed=0)
    raw, losses = optimize_patterns(model, layer_name, filters, steps=10, precision="float32")
    before = mean_activation(layer_model, scale_pixels, starts, filters)
    after = mean_activation(layer_model, scale_pixels, raw, filters)
    assert np.all(after > before + 0.01), (before, after)
    # The reported losses are those of the last step (before its update).
    assert np.all(losses > before) and np.all(losses <= after + 1e-5)


def test_a_dead_filter_keeps_its_start_image_without_nan(keras_model, model):
    # Filter 0 of relu_b is below zero everywhere from the gray start: its
    # gradient is zero, and dividing by (RMS + 1e-5) must leave the image as it is.
    layer_model = keras.Model(keras_model.input, keras_model.get_layer("relu_b").output)
    starts = start_images([0], SIZE, SIZE, seed=0)
    assert mean_activation(layer_model, scale_pixels, starts, [0])[0] == 0
    raw, losses = optimize_patterns(model, "relu_b", [0], steps=5, precision="float32")
    np.testing.assert_array_equal(raw, starts)
    assert losses.tolist() == [0.0]


def test_same_seed_same_patterns_other_seed_other_patterns(model):
    first = filter_patterns(model, "conv_b", [0, 2], steps=3, seed=7, precision="float32")
    again = filter_patterns(model, "conv_b", [0, 2], steps=3, seed=7, precision="float32")
    other = filter_patterns(model, "conv_b", [0, 2], steps=3, seed=8, precision="float32")
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first[0], other[0]) and not np.array_equal(first[1], other[1])


def test_start_images_are_the_books_gray_with_noise_per_filter():
    starts = start_images([3, 1, 3], 5, 6, seed=2)
    assert starts.shape == (3, 5, 6, 3) and starts.dtype == np.float32
    assert starts.min() >= 128 and starts.max() < 148
    np.testing.assert_array_equal(starts[0], starts[2])
    np.testing.assert_array_equal(starts[1], start_images([1], 5, 6, seed=2)[0])
    assert not np.array_equal(starts[0], starts[1])


def test_a_pattern_does_not_depend_on_the_other_filters_requested(model, monkeypatch):
    alone, _ = optimize_patterns(model, "conv_b", [4], steps=6, precision="float32")
    together, _ = optimize_patterns(model, "conv_b", [1, 4, 0], steps=6, precision="float32")
    np.testing.assert_allclose(together[1], alone[0], rtol=1e-6, atol=1e-4)
    # Split into batches of one pattern each: the same images.
    monkeypatch.setattr(patterns, "MAX_BATCH_PIXELS", SIZE * SIZE)
    split, _ = optimize_patterns(model, "conv_b", [1, 4, 0], steps=6, precision="float32")
    np.testing.assert_allclose(split, together, rtol=1e-6, atol=1e-4)


def test_progress_is_reported_per_compiled_call(model):
    reports = []
    filter_patterns(
        model,
        "conv_b",
        [0, 1],
        steps=12,
        precision="float32",
        progress=lambda *a: reports.append(a),
    )
    # 12 steps in calls of 5: 3 calls, and a report before the first.
    assert reports == [(0, 3), (1, 3), (2, 3), (3, 3)]


class Stop(Exception):
    pass


@pytest.mark.parametrize("stop_at", [0, 2])
def test_an_exception_from_progress_stops_the_ascent_at_once(model, stop_at):
    # A job pool cancels a computation by raising from its progress callback.
    reports = []

    def progress(done, total):
        reports.append(done)
        if done == stop_at:
            raise Stop

    with pytest.raises(Stop):
        filter_patterns(model, "conv_b", [0, 1], steps=1000, precision="float32", progress=progress)
    assert reports == list(range(stop_at + 1))


@pytest.mark.parametrize(
    "arguments, message",
    [
        ({"steps": 1001}, "between 0 and 1000 steps"),
        ({"steps": 3.5}, "whole number"),
        ({"step_size": 0.0}, "positive number"),
        ({"step_size": "big"}, "must be a number"),
    ],
)
def test_steps_and_step_size_follow_the_same_rules_everywhere(model, arguments, message):
    # `optimize_patterns` and `atlas_request` share `check_pattern_request`.
    with pytest.raises(InputError, match=message):
        optimize_patterns(model, "conv_b", [0], **arguments)


def test_zero_steps_give_the_deprocessed_start(model):
    images = filter_patterns(model, "conv_b", [2], steps=0, seed=1, precision="float32")
    np.testing.assert_array_equal(images[0], deprocess_image(start_images([2], SIZE, SIZE, 1)[0]))


def test_no_retracing_for_new_filters_steps_step_sizes_or_seeds(model):
    filter_patterns(model, "conv_b", [0], steps=2, precision="float32")
    traces = dict(patterns.TRACE_COUNTS)
    filter_patterns(model, "conv_b", [1, 2, 3], steps=3, step_size=0.5, precision="float32")
    filter_patterns(model, "conv_b", [5], steps=7, step_size=3.0, seed=9, precision="float32")
    filter_patterns(model, "conv_b", [4, 0], steps=1, step_size=1.5, seed=2, precision="float32")
    assert patterns.TRACE_COUNTS == traces


@pytest.mark.parametrize(
    "filters, bad",
    [([6], "6"), ([-1], "-1"), ([0, 100], "100")],
)
def test_filter_index_out_of_range_names_the_range(model, filters, bad):
    with pytest.raises(InputError, match=f"filters 0 to 5; there is no filter {bad}"):
        filter_patterns(model, "conv_b", filters, steps=1)


@pytest.mark.parametrize(
    "arguments, error",
    [
        ({"layer_name": "nope", "filter_indices": [0]}, InputError),
        ({"layer_name": "dense", "filter_indices": [0]}, InputError),
        ({"layer_name": "gap", "filter_indices": [0]}, InputError),
        ({"layer_name": "conv_b", "filter_indices": []}, InputError),
        ({"layer_name": "conv_b", "filter_indices": [0], "steps": -1}, InputError),
        ({"layer_name": "conv_b", "filter_indices": [0], "step_size": float("nan")}, InputError),
        ({"layer_name": "conv_b", "filter_indices": [0], "precision": "float16"}, ValueError),
    ],
)
def test_bad_arguments(model, arguments, error):
    with pytest.raises(error):
        filter_patterns(model, **arguments)


def test_unknown_layer_message_lists_the_valid_names(model):
    with pytest.raises(InputError) as raised:
        filter_patterns(model, "dense", [0])
    assert "conv_a, conv_b, relu_b" in str(raised.value)


def test_size_applies_where_the_graph_to_the_layer_is_convolutional(model):
    any_size = VisionModel(build_plain_model(input_size=(None, None)), preprocess=scale_pixels)
    assert any_size.input_size == (224, 224) and not any_size.has_fixed_input_size
    assert filter_patterns(any_size, "conv_b", [0, 1], size=12, steps=2).shape == (2, 12, 12, 3)
    assert filter_patterns(any_size, "conv_b", [0], size=7, steps=2).shape == (1, 7, 7, 3)
    # conv_b of the fixed-size model is reached by convolutions only: any size works there.
    assert filter_patterns(model, "conv_b", [0], size=30, steps=2).shape == (1, 30, 30, 3)
    assert filter_patterns(model, "conv_b", [0], steps=2).shape == (1, SIZE, SIZE, 3)


def test_fourier_patterns_come_from_the_clear_mode_and_keep_the_shape(model):
    images = filter_patterns(model, "conv_b", [0, 1], size=24, steps=4, method="fourier")
    assert images.shape == (2, 24, 24, 3) and images.dtype == np.uint8
    with pytest.raises(InputError, match="needs method='fourier'"):
        filter_patterns(model, "conv_b", [0], steps=1, objective="diversity")


@pytest.mark.skipif(not patterns.cpu_has_bf16(), reason="the CPU has no bf16 instructions")
def test_bfloat16_runs_in_bf16_and_converges_near_float32(keras_model, model):
    filters = [0, 1, 2, 3, 4, 5]
    single, single_losses = optimize_patterns(
        model, "conv_b", filters, steps=10, precision="float32"
    )
    half, half_losses = optimize_patterns(model, "conv_b", filters, steps=10, precision="bfloat16")
    images = filter_patterns(model, "conv_b", filters, steps=10, precision="bfloat16")
    assert images.shape == (6, SIZE, SIZE, 3) and images.dtype == np.uint8
    assert half.dtype == np.float32

    # The network really ran in bf16, on a private copy of the model.
    twin = model.cached_function(("bfloat16_twin",), lambda: None)
    assert twin is not None and twin.model is not keras_model
    assert twin.model.get_layer("conv_b").compute_dtype == "bfloat16"
    assert keras_model.get_layer("conv_b").compute_dtype == "float32"

    # Measured in float32, the bf16 patterns excite their filters about as much.
    layer_model = keras.Model(keras_model.input, keras_model.get_layer("conv_b").output)
    starts = start_images(filters, SIZE, SIZE, 0)
    before = mean_activation(layer_model, scale_pixels, starts, filters)
    reached_single = mean_activation(layer_model, scale_pixels, single, filters)
    reached_half = mean_activation(layer_model, scale_pixels, half, filters)
    np.testing.assert_allclose(reached_half - before, reached_single - before, rtol=0.05)
    np.testing.assert_allclose(half_losses, single_losses, rtol=0.05, atol=0.05)


def test_default_precision_can_be_forced(monkeypatch):
    monkeypatch.setenv("CONVVIZ_PRECISION", "float32")
    assert patterns.default_precision() == "float32"
    monkeypatch.setenv("CONVVIZ_PRECISION", "BFloat16")
    assert patterns.default_precision() == "bfloat16"
    monkeypatch.setenv("CONVVIZ_PRECISION", "")
    assert patterns.default_precision() == ("bfloat16" if patterns.cpu_has_bf16() else "float32")


# --- Deprocessing and the grid -----------------------------------------------------


def book_deprocess_image(x):
    """The book's listing 5.37, verbatim (it changes x in place)."""
    x -= x.mean()
    x /= x.std() + 1e-5
    x *= 0.1
    x += 0.5
    x = np.clip(x, 0, 1)
    x *= 255
    x = np.clip(x, 0, 255).astype("uint8")
    return x


@pytest.mark.parametrize(
    "image",
    [
        np.random.default_rng(0).normal(138, 5, (8, 9, 3)),
        np.random.default_rng(1).normal(0, 100, (4, 4, 3)),
        np.full((3, 3, 3), 140.0),
    ],
    ids=["pattern", "wide", "flat"],
)
def test_deprocess_matches_the_books_formula_and_keeps_its_input(image):
    before = image.copy()
    result = deprocess_image(image)
    np.testing.assert_array_equal(result, book_deprocess_image(image.copy()))
    np.testing.assert_array_equal(image, before)
    assert result.dtype == np.uint8


def test_deprocess_known_values():
    # Mean 0, std 1 (+1e-5): 0.5 -+ 0.1 / 1.00001 -> 102.0003 and 152.9997, truncated.
    image = np.array([-1.0, 1.0]).reshape(1, 2, 1) * np.ones((1, 1, 3))
    result = deprocess_image(image)
    np.testing.assert_array_equal(result[0, :, 0], [102, 152])


@pytest.mark.parametrize(
    "count, height, width, cols, margin, shape",
    [
        (64, 64, 64, 8, 5, (547, 547, 3)),
        (10, 3, 4, 4, 2, (13, 22, 3)),
        (3, 5, 5, 8, 5, (5, 25, 3)),
        (1, 2, 3, 8, 5, (2, 3, 3)),
        (6, 2, 2, 3, 0, (4, 6, 3)),
    ],
)
def test_pattern_grid_size_order_and_black_margins(count, height, width, cols, margin, shape):
    values = np.arange(1, count + 1, dtype=np.uint8)
    tiles = np.broadcast_to(values[:, None, None, None], (count, height, width, 3)).copy()
    grid = pattern_grid(tiles, cols=cols, margin=margin)
    assert grid.shape == shape and grid.dtype == np.uint8
    columns = min(cols, count)
    for index in range(count):
        # Reading order: left to right, then top to bottom.
        row, column = divmod(index, columns)
        top, left = row * (height + margin), column * (width + margin)
        np.testing.assert_array_equal(grid[top : top + height, left : left + width], index + 1)
    # Everything else (margins and empty slots) is black.
    assert np.count_nonzero(grid) == count * height * width * 3


def test_pattern_grid_of_eight_by_eight_puts_pattern_one_right_of_pattern_zero():
    tiles = np.zeros((64, 64, 64, 3), np.uint8)
    tiles[1] = 200
    tiles[8] = 100
    grid = pattern_grid(tiles)
    np.testing.assert_array_equal(grid[:64, 69:133], 200)
    np.testing.assert_array_equal(grid[69:133, :64], 100)
    np.testing.assert_array_equal(grid[:, 64:69], 0)


@pytest.mark.parametrize(
    "tiles, cols, margin",
    [
        (np.zeros((0, 4, 4, 3), np.uint8), 8, 5),
        (np.zeros((4, 4, 3), np.uint8), 8, 5),
        (np.zeros((2, 4, 4, 3), np.uint8), 0, 5),
        (np.zeros((2, 4, 4, 3), np.uint8), 8, -1),
    ],
)
def test_pattern_grid_rejects_bad_arguments(tiles, cols, margin):
    with pytest.raises(ValueError):
        pattern_grid(tiles, cols=cols, margin=margin)


# --- The matched schedule: Nesterov momentum, as far as the book's steps go ---------------------------


def build_linear_model():
    """One 1x1 linear convolution: each filter's mean activation is linear in the image, with a constant gradient."""
    inputs = keras.Input((SIZE, SIZE, 3))
    outputs = keras.layers.Conv2D(3, 1, name="linear")(inputs)
    model = keras.Model(inputs, outputs, name="linear")
    kernel = np.array([[1.0, -1.0, 0.5], [2.0, 0.5, 0.0], [-1.0, 1.0, 1.0]], np.float32)  # (in, out)
    model.get_layer("linear").set_weights([kernel[np.newaxis, np.newaxis], np.array([0.5, 2.0, -1.0], np.float32)])
    return model, kernel


def nesterov_displacement(steps, momentum=patterns.MATCHED_MOMENTUM):
    """How far, in units of the (constant) normalised gradient, `steps` Nesterov steps go."""
    velocity, total = 0.0, 0.0
    for _ in range(steps):
        velocity = momentum * velocity + 1.0
        total += 1.0 + momentum * velocity
    return total


def test_matched_steps_on_a_linear_model_are_the_fewest_that_reach_the_margin():
    # With a constant gradient g, the normalised direction d = g / rms(g) is
    # constant too: the book's k steps move the image by k d, Nesterov's by
    # nesterov_displacement(k) d, and each filter's mean activation grows by
    # its mean of w . d per unit. So the matched steps are known by hand.
    keras_model, kernel = build_linear_model()
    model = VisionModel(keras_model, preprocess=lambda images: images / 255.0)
    filters = patterns.calibration_filters(model, "linear")
    assert filters == [1]  # 3 channels, 2 asked for: the spread gives the middle one once
    steps = 40
    start = start_images(filters, SIZE, SIZE, seed=0)[0] / 255.0
    bias = np.array([0.5, 2.0, -1.0])
    k = filters[0]
    start_objective = float((start @ kernel[:, k]).mean() + bias[k])
    # d/dpixel of mean(w . x / 255) is w / 255 (per channel, everywhere); its RMS over (h, w, 3):
    gradient = kernel[:, k] / 255.0 / (SIZE * SIZE)
    rms = np.sqrt(np.mean(gradient**2))
    gain = float((kernel[:, k] / 255.0 * gradient / (rms + 1e-5)).sum())  # objective change per unit of d
    book = start_objective + steps * gain
    expected = next(
        count
        for count in range(max(patterns.MATCHED_STEP_GRAIN, steps // 4), steps + 1, patterns.MATCHED_STEP_GRAIN)
        if start_objective + nesterov_displacement(count) * gain >= book + (patterns.MATCHED_MARGIN - 1) * abs(book)
    )

    matched, momentum = patterns.matched_steps(model, "linear", steps=steps, precision="float32")

    assert (matched, momentum) == (expected, patterns.MATCHED_MOMENTUM)
    assert steps // 4 < matched < steps // 2  # the floor (steps // 4) does not decide here


def test_matched_patterns_follow_nesterovs_rule_exactly():
    keras_model, _ = build_linear_model()
    model = VisionModel(keras_model, preprocess=lambda images: images / 255.0)
    filters = [0, 2]
    matched, _ = patterns.matched_steps(model, "linear", steps=12, precision="float32")
    raw, _ = optimize_patterns(model, "linear", filters, steps=12, precision="float32", schedule="matched")
    book, _ = optimize_patterns(model, "linear", filters, steps=1, precision="float32")
    starts = start_images(filters, SIZE, SIZE, seed=0)
    # One book step moves by d; `matched` Nesterov steps by nesterov_displacement(matched) d.
    np.testing.assert_allclose(raw - starts, (book - starts) * nesterov_displacement(matched), rtol=1e-4)


def test_matched_schedule_reaches_at_least_the_books_objective_in_fewer_steps(keras_model, model):
    layer_model = keras.Model(keras_model.input, keras_model.get_layer("conv_b").output)
    filters = list(range(6))
    book, _ = optimize_patterns(model, "conv_b", filters, steps=40, precision="float32")
    matched_steps, momentum = patterns.matched_steps(model, "conv_b", steps=40, precision="float32")
    fast, _ = optimize_patterns(model, "conv_b", filters, steps=40, precision="float32", schedule="matched")

    assert momentum == patterns.MATCHED_MOMENTUM and matched_steps < 40
    reached = mean_activation(layer_model, scale_pixels, fast, filters)
    by_the_book = mean_activation(layer_model, scale_pixels, book, filters)
    assert np.all(reached >= by_the_book), (reached, by_the_book)


def test_matched_schedule_falls_back_to_the_book_when_momentum_cannot_catch_up(model, monkeypatch):
    # A margin no ascent reaches: the schedule is the book's loop itself.
    monkeypatch.setattr(patterns, "MATCHED_MARGIN", 1e9)
    model_copy = VisionModel(model.keras_model, preprocess=scale_pixels)
    assert patterns.matched_steps(model_copy, "conv_b", steps=8, precision="float32") == (8, 0.0)
    book, _ = optimize_patterns(model_copy, "conv_b", [1, 4], steps=8, precision="float32")
    fallback, _ = optimize_patterns(model_copy, "conv_b", [1, 4], steps=8, precision="float32", schedule="matched")
    np.testing.assert_array_equal(fallback, book)


def test_unknown_schedule_is_refused(model):
    with pytest.raises(InputError, match=r"Choose a schedule among book, matched\. Received: schedule='fast'"):
        filter_patterns(model, "conv_b", [0], steps=2, schedule="fast")

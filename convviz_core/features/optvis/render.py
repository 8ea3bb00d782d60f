"""The render loop: optimise patterns for many filters at once, in one compiled graph.

`render_patterns` is the clear mode of the Filters view, the recipe of Olah
et al., "Feature Visualization", Distill 2017 and Mordvintsev et al.,
"Differentiable Image Parameterizations", Distill 2018: the image lives in a
1/f-scaled Fourier space (`param.spatial`) and a decorrelated colour space
squashed by a sigmoid (`param.color`); at every step it is randomly padded,
jittered, scaled and rotated (`transform`) before the model; Adam climbs the
objective (`objectives`).

Compiled functions are built once per (model, layer, objective, size, ...)
and cached on the `VisionModel`; filter indices, step counts, the seed and
the learning rate are tensors, so a new value never retraces the graph.
"""

import numpy as np
import tensorflow as tf

from convviz_core.errors import InputError
from convviz_core.features.optvis import objectives as objectives_module
from convviz_core.features.optvis.param.color import to_valid_rgb
from convviz_core.features.optvis.param.spatial import PARAMETERIZATIONS, image_parameterization
from convviz_core.features.optvis.transform import TRANSFORM_SETS, compose, transforms_named
from convviz_core.features.patterns import chosen_channels

TRACE_COUNTS = {"render_patterns": 0}

# Images optimised together in one call: 16 patterns of 128 px. Larger
# patterns go in smaller batches, which bounds the memory of one request.
MAX_BATCH_PIXELS = 16 * 128 * 128
# Steps per call of the compiled function; progress is reported (and a
# request can be cancelled) between calls.
STEPS_PER_CALL = 16
# Pixels the standard transforms add to the image's side (their padding and
# crops cancel out: the model sees the pattern's own size).
TRANSFORM_GROWTH = 0
ADAM_BETA_1, ADAM_BETA_2, ADAM_EPSILON = 0.9, 0.999, 1e-8
MIN_SIZE, MAX_SIZE = 16, 512
# Adam steps and step size by default. Lucid runs 512 steps at 0.05; the
# quality measures of bench/bench_pattern_quality.py (transform robustness,
# high-frequency share) are the same after 32 steps as after 128 on
# EfficientNet-Lite0, but at 0.05 the pictures are still pale: the objective
# climbs with steps times step size. 40 steps at 0.12 reach 85-90% of the
# objective of 128 steps at 0.05 (0.05 for 40 steps: 65-75%) and look the
# same, in under a third of the time. A larger step size in fewer steps
# (0.15 for 32, 0.3 for 24) gave busier, noisier pictures, and a step size
# decaying over the steps (cosine, to a tenth) reached less
# (measured 2026-12-06 with bench_pattern_quality.py's measures).
DEFAULT_STEPS = 40
DEFAULT_LEARNING_RATE = 0.12
# Objectives that read one channel of the layer per image.
ONE_CHANNEL_OBJECTIVES = ("channel", "neuron")


def _layer_runs_at(model, layer_name, side):
    """Whether the graph up to a layer runs on a (1, side, side, 3) input with a spatial output."""
    try:
        inputs = model.preprocess(tf.fill((1, side, side, 3), 128.0))
        captured, _ = model.plan.run(inputs, taps=(layer_name,))
        shape = captured[layer_name].shape
    except (ValueError, TypeError, tf.errors.OpError):
        return False
    return len(shape) == 4 and shape[1] >= 1 and shape[2] >= 1


def free_size_supported(model, layer_name, size=128):
    """Whether patterns of a layer can be optimised at `size` pixels, whatever the model's input size.

    A model whose classification input is fixed (EfficientNet-Lite0 and VGG16
    at 224) is usually fully convolutional up to its pooling: its layers,
    called on real tensors, accept any spatial size. This runs the graph up
    to the layer once on a gray image of the sizes the render loop feeds it,
    and says whether that works. A Flatten/Dense before the layer, a Reshape
    to a fixed shape, or a layer too deep for so small an image, makes it
    fail; then patterns are optimised at the model's own input size.
    The answer is cached on the model.

    Args:
        model: A `VisionModel`.
        layer_name: A layer from `model.layer_names`.
        size: The pattern side in pixels.

    Returns:
        bool.
    """
    model.layer_info(layer_name)
    if not model.has_fixed_input_size:
        return True
    size = int(size)
    return model.cached_function(
        ("optvis_free_size", layer_name, size),
        lambda: all(_layer_runs_at(model, layer_name, side) for side in {size, size + TRANSFORM_GROWTH}),
    )


def render_size(model, layer_name, size=128):
    """The (height, width) at which `render_patterns` optimises a layer's patterns.

    `size` × `size` where the graph up to the layer accepts it (see
    `free_size_supported`), else the model's input size.
    """
    if free_size_supported(model, layer_name, size):
        return (int(size), int(size))
    return tuple(model.input_size)


def _build_render_function(model, layer_name, settings):
    """Builds the compiled optimiser for one (layer, objective, size, ...) setting."""
    parameterization = image_parameterization(settings["parameterization"], *settings["size"])
    objective = objectives_module.objective_named(settings["objective"], settings["diversity_weight"])
    transform = compose(transforms_named(settings["transforms"]))
    model_size = settings["model_size"]
    decorrelate = settings["decorrelate"]
    # Float32 whatever the CPU: in bf16 a step took twice as long on
    # EfficientNet-Lite0 on an AVX512-BF16 CPU (its depthwise convolutions).
    plan = model.plan
    # The channel and neuron objectives read one channel per image, so the
    # layer computes only that one (`patterns.chosen_channels`); the
    # diversity term compares whole layers.
    one_channel_each = settings["objective"] in ONE_CHANNEL_OBJECTIVES

    def pixels_of(parameters):
        return to_valid_rgb(parameterization.to_image(parameters), decorrelate)

    def objective_of_pixels(images, filter_indices):
        if model_size is not None:
            images = tf.image.resize(images, model_size)
        if one_channel_each:
            chosen = chosen_channels(model, plan, layer_name, images * 255.0, filter_indices)
            return objective(chosen[..., tf.newaxis], tf.zeros_like(filter_indices))
        captured, _ = plan.run(model.preprocess(images * 255.0), taps=(layer_name,))
        return objective(captured[layer_name], filter_indices)

    def objective_values(parameters, filter_indices, seed):
        return objective_of_pixels(transform(pixels_of(parameters), seed), filter_indices)

    parameter_spec = tf.TensorSpec((None, *parameterization.parameter_shape), tf.float32)

    @tf.function(
        input_signature=[
            parameter_spec,
            parameter_spec,
            parameter_spec,
            tf.TensorSpec((None,), tf.int32),
            tf.TensorSpec((), tf.int32),
            tf.TensorSpec((), tf.int32),
            tf.TensorSpec((), tf.int32),
            tf.TensorSpec((), tf.float32),
        ]
    )
    def optimize(
        parameters,
        first_moment,
        second_moment,
        filter_indices,
        first_step,
        steps,
        seed,
        learning_rate,
    ):
        TRACE_COUNTS["render_patterns"] += 1

        def step(index, parameters, first_moment, second_moment, _):
            with tf.GradientTape(watch_accessed_variables=False) as tape:
                tape.watch(parameters)
                values = objective_values(parameters, filter_indices, tf.stack([seed, index]))
                total = tf.reduce_sum(values)
            gradient = tape.gradient(total, parameters)
            # Adam, ascending: each image's parameters only see their own
            # gradient, so patterns do not depend on their batch mates
            # (except through the diversity term, on purpose).
            first_moment = ADAM_BETA_1 * first_moment + (1 - ADAM_BETA_1) * gradient
            second_moment = ADAM_BETA_2 * second_moment + (1 - ADAM_BETA_2) * tf.square(gradient)
            count = tf.cast(index + 1, tf.float32)
            corrected_first = first_moment / (1 - ADAM_BETA_1**count)
            corrected_second = second_moment / (1 - ADAM_BETA_2**count)
            parameters = parameters + learning_rate * corrected_first / (
                tf.sqrt(corrected_second) + ADAM_EPSILON
            )
            return index + 1, parameters, first_moment, second_moment, values

        start_values = tf.zeros(tf.shape(filter_indices)[:1], tf.float32)
        _, parameters, first_moment, second_moment, values = tf.while_loop(
            lambda index, *_: index < first_step + steps,
            step,
            (first_step, parameters, first_moment, second_moment, start_values),
        )
        return parameters, first_moment, second_moment, values

    @tf.function(input_signature=[parameter_spec])
    def pixels(parameters):
        return pixels_of(parameters)

    @tf.function(input_signature=[parameter_spec, tf.TensorSpec((None,), tf.int32)])
    def evaluate(parameters, filter_indices):
        """The objective on the untransformed image (at the model size if fixed)."""
        return objective_of_pixels(pixels_of(parameters), filter_indices)

    return parameterization, optimize, pixels, evaluate


def _check_arguments(
    model, layer_name, filter_indices, objective, size, steps, learning_rate, parameterization, transforms
):
    channels = model.layer_info(layer_name).output_shape[-1]
    filter_indices = [int(index) for index in filter_indices]
    if not filter_indices:
        raise InputError("Choose at least one filter.")
    bad = [index for index in filter_indices if not 0 <= index < channels]
    if bad:
        raise InputError(
            f"Layer '{layer_name}' has filters 0 to {channels - 1}; there is no filter "
            f"{bad[0]}. Choose filters in that range."
        )
    if objective not in objectives_module.OBJECTIVE_NAMES:
        raise InputError(
            f"There is no objective '{objective}'. Choose one of: "
            f"{', '.join(objectives_module.OBJECTIVE_NAMES)}."
        )
    if not MIN_SIZE <= int(size) <= MAX_SIZE:
        raise InputError(f"Pattern size must be {MIN_SIZE} to {MAX_SIZE} pixels. Received: size={size}")
    if int(steps) < 0 or not np.isfinite(learning_rate) or learning_rate <= 0:
        raise InputError(
            f"steps must be 0 or more and learning_rate a positive number. "
            f"Received: steps={steps}, learning_rate={learning_rate}"
        )
    if parameterization not in PARAMETERIZATIONS:
        raise ValueError(
            f"parameterization must be one of {sorted(PARAMETERIZATIONS)}. Received: {parameterization!r}"
        )
    if transforms not in TRANSFORM_SETS:
        raise ValueError(f"transforms must be one of {sorted(TRANSFORM_SETS)}. Received: {transforms!r}")
    return filter_indices


def _batches(filter_indices, batch_size, keep_groups):
    """Positions of `filter_indices`, split into batches.

    With `keep_groups`, all images of one filter share a batch (the diversity
    term compares them), even if that batch is larger than `batch_size`.
    """
    positions = list(range(len(filter_indices)))
    if not keep_groups:
        return [positions[i : i + batch_size] for i in range(0, len(positions), batch_size)]
    groups = {}
    for position, index in enumerate(filter_indices):
        groups.setdefault(index, []).append(position)
    batches, current = [], []
    for group in groups.values():
        if current and len(current) + len(group) > batch_size:
            batches.append(current)
            current = []
        current = current + group
    if current:
        batches.append(current)
    return batches


def render_images(
    model,
    layer_name,
    filter_indices,
    objective="channel",
    size=128,
    steps=DEFAULT_STEPS,
    learning_rate=DEFAULT_LEARNING_RATE,
    seed=0,
    parameterization="fourier",
    decorrelate=True,
    transforms="standard",
    diversity_weight=1.0,
    progress=None,
):
    """Runs the optimisation of `render_patterns` and returns float images and objective values.

    Args and Raises: see `render_patterns`.

    Returns:
        (float32 images (n, height, width, 3) in [0, 1], float32 objective
        values (n,) of the final images without transforms, float32
        objective values (n,) of the initial images without transforms).
    """
    filter_indices = _check_arguments(
        model, layer_name, filter_indices, objective, size, steps, learning_rate, parameterization, transforms
    )
    height, width = render_size(model, layer_name, size)
    model_size = None
    if model.has_fixed_input_size and not free_size_supported(model, layer_name, size):
        model_size = tuple(model.input_size)
    settings = {
        "objective": objective,
        "size": (height, width),
        "model_size": model_size,
        "parameterization": parameterization,
        "decorrelate": bool(decorrelate),
        "transforms": transforms,
        "diversity_weight": float(diversity_weight) if objective == "diversity" else 0.0,
    }
    key = ("optvis_render", layer_name, tuple(sorted(settings.items())))
    image_parameters, optimize, pixels, evaluate = model.cached_function(
        key, lambda: _build_render_function(model, layer_name, settings)
    )
    # Each image's start depends only on (seed, filter, how many times that
    # filter came before), not on the other filters of the request.
    occurrences, seeds = {}, []
    for index in filter_indices:
        seeds.append([int(seed), index, occurrences.get(index, 0)])
        occurrences[index] = occurrences.get(index, 0) + 1
    batch_size = max(1, MAX_BATCH_PIXELS // (height * width))
    batches = _batches(filter_indices, batch_size, keep_groups=objective == "diversity")
    calls_per_batch = max(1, -(-int(steps) // STEPS_PER_CALL))
    total_calls, done_calls = len(batches) * calls_per_batch, 0
    images = np.zeros((len(filter_indices), height, width, 3), np.float32)
    final_values = np.zeros(len(filter_indices), np.float32)
    start_values = np.zeros(len(filter_indices), np.float32)
    seed_tensor, rate_tensor = tf.constant(int(seed), tf.int32), tf.constant(float(learning_rate))
    for batch in batches:
        indices = tf.constant([filter_indices[position] for position in batch], tf.int32)
        parameters = tf.constant(image_parameters.initial_parameters([seeds[p] for p in batch]))
        start_values[batch] = evaluate(parameters, indices).numpy()
        first_moment, second_moment = tf.zeros_like(parameters), tf.zeros_like(parameters)
        done_steps = 0
        for _ in range(calls_per_batch):
            count = min(STEPS_PER_CALL, int(steps) - done_steps)
            parameters, first_moment, second_moment, _ = optimize(
                parameters,
                first_moment,
                second_moment,
                indices,
                tf.constant(done_steps, tf.int32),
                tf.constant(count, tf.int32),
                seed_tensor,
                rate_tensor,
            )
            done_steps += count
            done_calls += 1
            if progress is not None:
                progress(done_calls, total_calls)
        images[batch] = pixels(parameters).numpy()
        final_values[batch] = evaluate(parameters, indices).numpy()
    return images, final_values, start_values


def render_patterns(
    model,
    layer_name,
    filter_indices,
    objective="channel",
    size=128,
    steps=DEFAULT_STEPS,
    learning_rate=DEFAULT_LEARNING_RATE,
    seed=0,
    parameterization="fourier",
    decorrelate=True,
    transforms="standard",
    diversity_weight=1.0,
    progress=None,
):
    """Finds, for each filter, a clear picture of what it responds to (the Lucid recipe).

    The image is parameterised by 1/f-scaled Fourier coefficients in a
    decorrelated colour space and squashed to pixels by a sigmoid; at every
    step it is padded, jittered, scaled and rotated at random before the
    model, and Adam climbs the objective (Olah et al., "Feature
    Visualization", Distill 2017; Mordvintsev et al., "Differentiable Image
    Parameterizations", Distill 2018). All filters of a batch are optimised
    together in one compiled graph that runs only up to the layer.

    Models whose graph up to the layer is fully convolutional are run at
    `size` even if their classification input is fixed (see
    `free_size_supported`); others at their input size.

    Args:
        model: A `VisionModel` (never changed).
        layer_name: A layer from `model.layer_names`.
        filter_indices: Channels of that layer, one pattern each. With
            `objective="diversity"`, repeat a channel to get several
            different patterns of it (see `diversity_set`).
        objective: "channel" (the mean of the channel over space, the
            book's), "neuron" (the centre unit of the channel) or
            "diversity" (the channel, while the patterns of one channel are
            pushed apart).
        size: Pattern side in pixels.
        steps: Adam steps.
        learning_rate: Adam's step size.
        seed: The same seed gives the same patterns.
        parameterization: "fourier", or "pixel" for plain pixels (a baseline).
        decorrelate: Whether to optimise in the decorrelated colour space.
        transforms: "standard" (pad, jitter, scale, rotate) or "none".
        diversity_weight: How much diversity counts against activation, for
            `objective="diversity"` (see `objectives.channel_with_diversity`).
        progress: Optional function called with (done, total) between
            compiled chunks of steps; an exception it raises cancels the
            request and propagates.

    Returns:
        uint8 array (n, height, width, 3), (height, width) = `render_size`.

    Raises:
        InputError: For an unknown layer or objective, a filter out of
            range, or a size or step count out of range.
    """
    images, _, _ = render_images(
        model,
        layer_name,
        filter_indices,
        objective=objective,
        size=size,
        steps=steps,
        learning_rate=learning_rate,
        seed=seed,
        parameterization=parameterization,
        decorrelate=decorrelate,
        transforms=transforms,
        diversity_weight=diversity_weight,
        progress=progress,
    )
    return np.round(images * 255.0).astype(np.uint8)


def diversity_set(model, layer_name, filter_index, count=4, **options):
    """Several different patterns of one filter (Lucid's diversity).

    Args:
        model: A `VisionModel`.
        layer_name: A layer from `model.layer_names`.
        filter_index: One channel of that layer.
        count: How many patterns.
        **options: Passed to `render_patterns`.

    Returns:
        uint8 array (count, height, width, 3).
    """
    if int(count) < 2:
        raise InputError(f"A diversity set needs 2 patterns or more. Received: count={count}")
    return render_patterns(
        model, layer_name, [int(filter_index)] * int(count), objective="diversity", **options
    )

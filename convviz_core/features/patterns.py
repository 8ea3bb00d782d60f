"""Filter patterns (book §5.4.2): the input that maximises each filter, by gradient ascent."""

import functools
import os

import keras
import numpy as np
import tensorflow as tf

from convviz_core.errors import InputError
from convviz_core.graph.plan import GraphPlan

TRACE_COUNTS = {"filter_patterns": 0}

# Pixels optimised together in one call of the compiled graph, in batches of
# at most MAX_BATCH patterns. Measured on a 2-core AVX512-BF16 CPU
# (bench/bench_core.py), batches of 8 patterns of 64x64 run about twice as
# fast per pattern as one batch of 64: the activations of a small batch stay
# in the CPU caches. On a 2-core AVX2 CPU, EfficientNet-Lite0's patterns of
# 128x128 ran 25% faster per pattern in batches of 4 than of 2 (8: no
# better), VGG16's of 64x64 the same in batches of 4, 8 or 16. Larger
# patterns go in smaller batches, which also bounds the memory one request
# can take.
MAX_BATCH_PIXELS = 4 * 128 * 128
MAX_BATCH = 8
# Steps per call of the compiled function; progress is reported between calls.
STEPS_PER_CALL = 5
PRECISIONS = ("float32", "bfloat16")
# How patterns are found: the book's gradient ascent, or the Lucid recipe (`optvis`).
METHODS = ("gradient-ascent", "fourier")
OBJECTIVES = ("channel", "neuron", "diversity")
BOOK_STEPS, BOOK_STEP_SIZE, BOOK_PATTERN_SIZE = 40, 1.0, 150
# How gradient ascent steps: "book", the book's plain loop of `steps` steps;
# "matched", Nesterov momentum for as few steps as reach the objective the
# book's `steps` reach (see `matched_steps`).
SCHEDULES = ("book", "matched")
MATCHED_MOMENTUM = 0.9
# The filters `matched_steps` runs both ways: fixed for a layer, so a pattern
# never depends on which other filters were asked for with it.
CALIBRATION_FILTERS = 2
# `matched_steps` checks the objective every this many steps.
MATCHED_STEP_GRAIN = 2
# ... and stops when each calibration filter is this far above the book's
# objective: the other filters of the layer vary around the calibration
# filters (measured on EfficientNet-Lite0's deep layers, 16 filters each:
# with no margin 2-3 of 16 stayed 6-8% below the book's objective).
MATCHED_MARGIN = 1.1
# The most gradient-ascent steps one request may ask for (the book uses 30 to 40).
MAX_STEPS = 1000


@functools.lru_cache(maxsize=1)
def cpu_has_bf16():
    """Whether this CPU has bf16 matrix instructions (AVX512-BF16 or AMX)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as cpuinfo:
            flags = set(cpuinfo.read().split())
    except OSError:
        return False
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def default_precision():
    """The precision filter patterns use: bf16 where the CPU computes it natively.

    `CONVVIZ_PRECISION=float32` (or `bfloat16`) overrides the choice.
    """
    chosen = os.environ.get("CONVVIZ_PRECISION", "").strip().lower()
    if chosen in PRECISIONS:
        return chosen
    return "bfloat16" if cpu_has_bf16() else "float32"


def _with_policy(config, policy_name):
    """Returns a copy of a serialised model config with every layer's dtype policy replaced."""
    if isinstance(config, dict):
        if config.get("class_name") == "DTypePolicy":
            return {**config, "config": {**config["config"], "name": policy_name}}
        return {key: _with_policy(value, policy_name) for key, value in config.items()}
    if isinstance(config, list):
        return [_with_policy(value, policy_name) for value in config]
    return config


def _bfloat16_twin(model):
    """Builds a private copy of the Keras model that computes in bf16.

    Variables stay float32 (Keras's "mixed_bfloat16" policy); the shared model
    is left untouched. Returns None when the model cannot be rebuilt from its
    config (then patterns are computed in float32).
    """
    try:
        config = _with_policy(keras.saving.serialize_keras_object(model.keras_model), "mixed_bfloat16")
        with keras.saving.custom_object_scope({}):
            twin = keras.saving.deserialize_keras_object(config, safe_mode=True)
        twin.set_weights(model.keras_model.get_weights())
        return GraphPlan(twin)
    except (ValueError, TypeError, KeyError, AttributeError, NotImplementedError):
        return None


def _computes_one_channel_each(layer):
    """Whether `_chosen_channel_conv` can stand in for this layer.

    Dilated convolutions are left out: a dilated depthwise convolution needs a
    static channel count, and the folded batch × channels axis is dynamic. So
    are unequal strides, such as (2, 1): TensorFlow's CPU depthwise kernel
    refuses them on CPUs without oneDNN's AVX-512 path ("Current
    implementation only supports equal length strides"); such a layer is run
    whole and the chosen channels gathered.
    """
    return (
        type(layer) is keras.layers.Conv2D
        and layer.groups == 1
        and layer.data_format == "channels_last"
        and layer.padding in ("same", "valid")
        and tuple(layer.dilation_rate) == (1, 1)
        and layer.strides[0] == layer.strides[1]
    )


def _chosen_channel_conv(layer, inputs, filter_indices):
    """Computes only the chosen output channel of a Conv2D, one per image.

    Each image of the batch needs one channel of the layer, not all of them:
    the per-image kernels are stacked into one depthwise convolution over the
    batch folded into the channel axis, and summed over input channels. This
    skips the (channels - 1) / channels of the layer's work, forward and
    backward, that the loss never sees.

    Args:
        layer: A `keras.layers.Conv2D` (see `_computes_one_channel_each`).
        inputs: Its input (n, height, width, input channels).
        filter_indices: int32 (n,), the channel each image needs.

    Returns:
        (n, out height, out width, 1): the layer's output channel per image,
        bias and activation included.
    """
    dtype = layer.compute_dtype
    inputs = tf.cast(inputs, dtype)
    batch = tf.shape(inputs)[0]
    height, width, channels = tf.shape(inputs)[1], tf.shape(inputs)[2], inputs.shape[-1]
    kernel_height, kernel_width = layer.kernel_size
    # (n, h, w, c) -> (1, h, w, n * c): image-major, then channel.
    folded = tf.reshape(tf.transpose(inputs, [1, 2, 0, 3]), [1, height, width, batch * channels])
    kernels = tf.gather(tf.cast(layer.kernel, dtype), filter_indices, axis=3)  # (kh, kw, c, n)
    kernels = tf.reshape(
        tf.transpose(kernels, [0, 1, 3, 2]), [kernel_height, kernel_width, batch * channels, 1]
    )
    per_channel = tf.nn.depthwise_conv2d(
        folded,
        kernels,
        strides=(1, *layer.strides, 1),
        padding=layer.padding.upper(),
        dilations=layer.dilation_rate,
    )
    out_height, out_width = tf.shape(per_channel)[1], tf.shape(per_channel)[2]
    per_channel = tf.reshape(per_channel, [out_height, out_width, batch, channels])
    outputs = tf.transpose(tf.reduce_sum(per_channel, axis=3), [2, 0, 1])[..., tf.newaxis]
    if layer.use_bias:
        outputs = outputs + tf.gather(tf.cast(layer.bias, dtype), filter_indices)[:, None, None, None]
    return layer.activation(outputs)


def precision_plan(model, precision):
    """The `GraphPlan` that computes in `precision`: the model's own, or its private bf16 twin.

    Falls back to the model's own plan (float32) when the twin cannot be built.
    """
    if precision == "bfloat16":
        return model.cached_function(("bfloat16_twin",), lambda: _bfloat16_twin(model)) or model.plan
    return model.plan


def chosen_channels(model, plan, layer_name, images, filter_indices):
    """Runs a plan from pixels to a layer and returns each image's own channel of it.

    Where the layer allows it (`_computes_one_channel_each`), only the chosen
    channel of each image is computed (`_chosen_channel_conv`); otherwise the
    layer is run whole and the channels gathered. Only the graph up to the
    layer runs.

    Args:
        model: A `VisionModel` (for its preprocessing).
        plan: `model.plan` or `precision_plan(model, ...)`.
        layer_name: A layer from `model.layer_names`.
        images: float32 (n, height, width, 3) in pixel space (0-255).
        filter_indices: int32 (n,), the channel each image needs.

    Returns:
        float32 (n, out height, out width).
    """
    layer = plan.layers[layer_name][0].layer
    overrides = {}
    one_channel = _computes_one_channel_each(layer)
    if one_channel:
        overrides[layer_name] = lambda layer, inputs, **_: _chosen_channel_conv(layer, inputs, filter_indices)
    captured, _ = plan.run(model.preprocess(images), taps=(layer_name,), overrides=overrides)
    activation = tf.cast(captured[layer_name], tf.float32)
    if one_channel:
        return activation[..., 0]
    return tf.gather(activation, filter_indices, axis=3, batch_dims=1)


def _build_ascent_function(model, layer_name, precision):
    plan = precision_plan(model, precision)

    def mean_activations(images, filter_indices):
        return tf.reduce_mean(chosen_channels(model, plan, layer_name, images, filter_indices), axis=[1, 2])

    @tf.function(
        input_signature=[
            tf.TensorSpec((None, None, None, 3), tf.float32),
            tf.TensorSpec((None, None, None, 3), tf.float32),
            tf.TensorSpec((None,), tf.int32),
            tf.TensorSpec((), tf.float32),
            tf.TensorSpec((), tf.float32),
            tf.TensorSpec((), tf.int32),
        ]
    )
    def ascend(images, velocity, filter_indices, step_size, momentum, steps):
        TRACE_COUNTS["filter_patterns"] += 1

        def step(index, images, velocity, _):
            with tf.GradientTape(watch_accessed_variables=False) as tape:
                tape.watch(images)
                losses = mean_activations(images, filter_indices)
                total = tf.reduce_sum(losses)
            gradients = tape.gradient(total, images)
            # Each pattern's gradient is normalised by its own RMS, as in the book.
            rms = tf.sqrt(tf.reduce_mean(tf.square(gradients), axis=[1, 2, 3], keepdims=True))
            direction = gradients / (rms + 1e-5)
            # Nesterov momentum (Sutskever et al., 2013, in the form of
            # Bengio et al., 2013). With momentum 0 both lines give
            # `direction` exactly, and the step is the book's.
            velocity = momentum * velocity + direction
            update = direction + momentum * velocity
            return index + 1, images + step_size * update, velocity, losses

        start_losses = tf.zeros(tf.shape(filter_indices)[:1], tf.float32)
        _, images, velocity, losses = tf.while_loop(
            lambda index, *_: index < steps, step, (tf.constant(0), images, velocity, start_losses)
        )
        return images, velocity, losses

    @tf.function(
        input_signature=[tf.TensorSpec((None, None, None, 3), tf.float32), tf.TensorSpec((None,), tf.int32)]
    )
    def objective(images, filter_indices):
        return mean_activations(images, filter_indices)

    return ascend, objective


_CONVOLUTION_TYPES = (keras.layers.Conv2D, keras.layers.SeparableConv2D)


def convolution_layers(model):
    """The names of a model's convolution layers (those with filters to visualise), in order."""
    return [name for name in model.layer_names if isinstance(model.layer_info(name).layer, _CONVOLUTION_TYPES)]


def default_pattern_layer(model, filters=64):
    """The layer whose patterns the Filters view shows first.

    The book starts with VGG16's `block3_conv1`: the first convolution with
    64 filters or more whose output is at most a quarter of the input's side,
    deep enough for textures and shallow enough to compute quickly. The same
    rule picks `conv2d_3` of the book's small convnet. A model without such a
    layer gets its convolution with the most filters, else its last layer with
    a spatial output.

    Args:
        model: A `VisionModel`.
        filters: The number of filters the first atlas shows.

    Returns:
        A name from `model.layer_names`.

    Raises:
        InputError: If the model has no layer with a spatial output.
    """
    input_side = min(model.input_size)
    convolutions = [
        info
        for info in (model.layer_info(name) for name in model.layer_names)
        if isinstance(info.layer, _CONVOLUTION_TYPES)
    ]
    for info in convolutions:
        side = info.output_shape[1]
        if info.output_shape[-1] >= filters and side is not None and side * 4 <= input_side:
            return info.path
    if convolutions:
        return max(convolutions, key=lambda info: info.output_shape[-1]).path
    if not model.layer_names:
        raise InputError(
            f"The model '{model.name}' has no layer with a spatial (height, width, channels) "
            "output, so there are no filters to show. Choose a convolutional model."
        )
    return model.layer_names[-1]


def start_images(filter_indices, height, width, seed):
    """The book's start image, gray with a little noise, one per filter.

    Each filter's noise depends only on (seed, filter index), so a pattern does
    not change with the other filters requested alongside it.

    Returns:
        float32 array (n, height, width, 3) in [128, 148).
    """
    return np.stack(
        [
            np.random.default_rng([seed, int(index)]).random((height, width, 3)) * 20 + 128
            for index in filter_indices
        ]
    ).astype(np.float32)


def check_pattern_request(model, layer_name, filter_indices, steps, step_size, precision=None, max_filters=None):
    """Validates the parameters of filter patterns: the one place that knows their rules.

    Args:
        model: A `VisionModel`.
        layer_name: A layer from `model.layer_names`.
        filter_indices: Channels of that layer.
        steps: Gradient-ascent steps, 0 to `MAX_STEPS`.
        step_size: A positive, finite number.
        precision: "float32", "bfloat16" or None for `default_precision()`.
        max_filters: If given, the most filters allowed at once.

    Returns:
        (filter indices as a tuple of ints, steps as an int, step size as a
        float, the precision's name).

    Raises:
        InputError: For a layer that is unknown or not 4-D, no filters, too
            many, a filter out of the layer's range, or steps or a step size
            out of range.
        ValueError: For an unknown precision (a programming error).
    """
    info = model.layer_info(layer_name)
    channels = info.output_shape[-1]
    filter_indices = tuple(int(index) for index in filter_indices)
    if not filter_indices:
        raise InputError("Choose at least one filter.")
    if max_filters is not None and len(filter_indices) > max_filters:
        raise InputError(
            f"An atlas shows at most {max_filters} filters at once (an 8x8 grid); "
            f"{len(filter_indices)} were chosen. Choose a smaller range."
        )
    bad = [index for index in filter_indices if not 0 <= index < channels]
    if bad:
        raise InputError(
            f"Layer '{layer_name}' has filters 0 to {channels - 1}; there is no filter "
            f"{bad[0]}. Choose filters in that range."
        )
    if not isinstance(steps, (int, np.integer)) and not (isinstance(steps, float) and steps.is_integer()):
        raise InputError(f"The number of steps must be a whole number. Received: steps={steps}")
    if not 0 <= int(steps) <= MAX_STEPS:
        raise InputError(f"Choose between 0 and {MAX_STEPS} steps. Received: steps={steps}")
    try:
        step_size = float(step_size)
    except (TypeError, ValueError):
        raise InputError(f"The step size must be a number. Received: step_size={step_size!r}") from None
    if not (np.isfinite(step_size) and step_size > 0):
        raise InputError(f"The step size must be a positive number. Received: step_size={step_size}")
    precision = precision or default_precision()
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}. Received: precision={precision}")
    return filter_indices, int(steps), step_size, precision


def pattern_size(model, size, layer_name=None):
    """The (height, width) at which patterns of a layer are optimised.

    `size` × `size` for a model that accepts any input size, and for a layer
    whose graph from the input is fully convolutional even though the model's
    classification input is fixed (EfficientNet-Lite0 and VGG16 up to their
    pooling; see `optvis.render.free_size_supported`). Otherwise, and when no
    layer is named, the model's own input size.

    With `size` None: the model's input size, or the book's 150 for a model
    that accepts any size.
    """
    if size is None:
        if model.has_fixed_input_size:
            return tuple(model.input_size)
        size = BOOK_PATTERN_SIZE
    if not model.has_fixed_input_size:
        return (int(size), int(size))
    if layer_name is not None:
        from convviz_core.features.optvis.render import free_size_supported

        if free_size_supported(model, layer_name, int(size)):
            return (int(size), int(size))
    return tuple(model.input_size)


def _ascent_functions(model, layer_name, precision):
    """The compiled (ascend, objective) functions of a layer, built once per model."""
    return model.cached_function(
        ("filter_patterns", layer_name, precision),
        lambda: _build_ascent_function(model, layer_name, precision),
    )


def _ascend_batch(ascend, batch, height, width, seed, steps, step_size, momentum, after_call=None, grain=STEPS_PER_CALL):
    """Runs the ascent of one batch of filters from the book's start images, `grain` steps per compiled call.

    `after_call(images, steps done)` is called after every call; the ascent
    stops early when it returns True.

    Returns:
        (images, mean activations at the last step) as tensors.
    """
    images = tf.constant(start_images(batch, height, width, seed))
    velocity = tf.zeros_like(images)
    indices = tf.constant(batch, tf.int32)
    losses = tf.zeros((len(batch),))
    step_tensor = tf.constant(float(step_size), tf.float32)
    momentum_tensor = tf.constant(float(momentum), tf.float32)
    done = 0
    # One call even for 0 steps: it returns the start images.
    for _ in range(max(1, -(-steps // grain))):
        count = min(grain, steps - done)
        images, velocity, losses = ascend(
            images, velocity, indices, step_tensor, momentum_tensor, tf.constant(count, tf.int32)
        )
        done += count
        if after_call is not None and after_call(images, done):
            break
    return images, losses


def calibration_filters(model, layer_name):
    """The filters `matched_steps` runs both ways: fixed for the layer, spread over its channels."""
    channels = model.layer_info(layer_name).output_shape[-1]
    count = min(CALIBRATION_FILTERS, channels)
    return sorted({int(round(index)) for index in np.linspace(0, channels - 1, count + 2)[1:-1]}) or [0]


def matched_steps(
    model, layer_name, size=None, steps=BOOK_STEPS, step_size=BOOK_STEP_SIZE, seed=0, precision=None, heartbeat=None
):
    """How many Nesterov steps reach what the book's `steps` plain steps reach, on this layer.

    The book's figure needs the objective its loop reaches, not its number of
    steps. Gradient ascent with Nesterov momentum (0.9; the same normalised
    gradient, the same step size) gets there in fewer steps. How many depends
    on the layer (measured with float32 for 40 book steps: 12 for VGG16's
    `block3_conv1`; on EfficientNet-Lite0 28 for `block2b_expand_conv`, 24
    for `block5a_expand_conv`, 38 for `top_conv`), so this finds out: both ascents run on
    `calibration_filters` of the layer, and the answer is the first multiple
    of `MATCHED_STEP_GRAIN` at which every calibration filter's mean
    activation is at least `MATCHED_MARGIN` times the book's after `steps`
    (its absolute value, for a negative one). It is at least
    `steps // 4`: a calibration filter the book cannot move (dead on the gray
    start) says nothing. It is computed once per model, layer, size, seed and
    precision. `heartbeat()`, if given, is called after each compiled call (a
    job pool stops the computation by raising from it).

    Returns:
        (steps, momentum): the matched steps and `MATCHED_MOMENTUM`, or
        (`steps`, 0.0) -- the book's loop itself -- when momentum does not
        catch up within `steps`.
    """
    filter_indices, steps, step_size, precision = check_pattern_request(
        model, layer_name, calibration_filters(model, layer_name), steps, step_size, precision
    )
    height, width = pattern_size(model, size, layer_name)

    def compute():
        if steps == 0:
            return 0, 0.0
        ascend, objective = _ascent_functions(model, layer_name, precision)
        beat = (lambda *_: heartbeat()) if heartbeat is not None else None
        book_images, _ = _ascend_batch(ascend, filter_indices, height, width, seed, steps, step_size, 0.0, beat)
        indices = tf.constant(filter_indices, tf.int32)
        target = objective(book_images, indices).numpy()
        # A layer without its activation (a linear convolution) may have a negative objective.
        threshold = target + (MATCHED_MARGIN - 1) * np.abs(target)
        floor = max(MATCHED_STEP_GRAIN, steps // 4)
        reached_at = steps + 1  # Not reached.

        def check(images, done):
            nonlocal reached_at
            if beat is not None:
                beat()
            if done >= floor and np.all(objective(images, indices).numpy() >= threshold):
                reached_at = done
                return True
            return False

        _ascend_batch(
            ascend, filter_indices, height, width, seed, steps, step_size, MATCHED_MOMENTUM, check,
            grain=MATCHED_STEP_GRAIN,
        )
        return (reached_at, MATCHED_MOMENTUM) if reached_at <= steps else (steps, 0.0)

    # Not computed under `cached_function`'s lock, which would hold up every
    # other user of the model for seconds.
    known = model.cached_function(("matched_steps",), dict)
    key = (layer_name, height, width, steps, step_size, seed, precision)
    if key not in known:
        known.setdefault(key, compute())
    return known[key]


def pattern_objective(model, layer_name, images, filter_indices, precision="float32"):
    """The objective gradient ascent maximises: each image's mean activation of its filter.

    Args:
        model: A `VisionModel`.
        layer_name: A layer from `model.layer_names`.
        images: float (n, height, width, 3) in pixel space, at a size the
            layer accepts (`pattern_size`).
        filter_indices: n channels of the layer, one per image.
        precision: "float32" (to compare patterns found in any precision) or
            "bfloat16".

    Returns:
        float32 array (n,).
    """
    _, objective = _ascent_functions(model, layer_name, precision)
    return objective(tf.constant(images, tf.float32), tf.constant(list(filter_indices), tf.int32)).numpy()


def check_schedule(schedule):
    """Validates a gradient-ascent schedule (`SCHEDULES`)."""
    if schedule not in SCHEDULES:
        raise InputError(f"Choose a schedule among {', '.join(SCHEDULES)}. Received: schedule={schedule!r}")
    return schedule


def optimize_patterns(
    model,
    layer_name,
    filter_indices,
    size=None,
    steps=40,
    step_size=1.0,
    seed=0,
    precision=None,
    progress=None,
    schedule="book",
):
    """Runs the gradient ascent of `filter_patterns` and returns the raw images.

    `progress(done, total)` is called before the first compiled call and
    after each one (every `STEPS_PER_CALL` steps); a job pool stops the
    computation by raising from it (`convviz_core.jobs.JobProgress`), which
    this function lets through.

    `schedule="matched"` first finds, once per layer, how many Nesterov
    steps reach the objective of the book's `steps` (`matched_steps`), then
    takes that many.

    Returns:
        (images float32 (n, h, w, 3) in pixel space, mean activations (n,) at
        the last step).
    """
    filter_indices, steps, step_size, precision = check_pattern_request(
        model, layer_name, filter_indices, steps, step_size, precision
    )
    check_schedule(schedule)
    height, width = pattern_size(model, size, layer_name)
    ascend, _ = _ascent_functions(model, layer_name, precision)
    batch_size = max(1, min(MAX_BATCH, MAX_BATCH_PIXELS // (height * width)))
    batches = [filter_indices[i : i + batch_size] for i in range(0, len(filter_indices), batch_size)]
    total_calls = len(batches) * max(1, -(-int(steps) // STEPS_PER_CALL))
    if progress is not None:
        # Before the first compiled call, which may trace for seconds: a job
        # cancelled while it waited stops here.
        progress(0, total_calls)
    momentum = 0.0
    if schedule == "matched":
        heartbeat = (lambda: progress(0, total_calls)) if progress is not None else None
        steps, momentum = matched_steps(model, layer_name, size, steps, step_size, seed, precision, heartbeat)
    calls_per_batch = max(1, -(-int(steps) // STEPS_PER_CALL))
    total_calls, done_calls = len(batches) * calls_per_batch, 0
    results, final_losses = [], []

    def report(images, done):
        nonlocal done_calls
        done_calls += 1
        if progress is not None:
            progress(done_calls, total_calls)

    for batch in batches:
        images, losses = _ascend_batch(ascend, batch, height, width, seed, steps, step_size, momentum, report)
        results.append(images.numpy())
        final_losses.append(losses.numpy())
    return np.concatenate(results), np.concatenate(final_losses)


def filter_patterns(
    model,
    layer_name,
    filter_indices,
    size=None,
    steps=None,
    step_size=None,
    seed=0,
    precision=None,
    progress=None,
    method="gradient-ascent",
    objective="channel",
    schedule="book",
):
    """Finds, for each filter, the input image that maximises it (book §5.4.2).

    `method="gradient-ascent"` is the book's algorithm: the loss is the mean
    over space of one filter's activation; from gray with a little noise,
    `steps` gradient-ascent steps each add `step_size` times the gradient
    divided by its RMS (+1e-5). All filters are optimised together as one
    batch in one compiled graph that runs only up to the layer.

    Unlike the book, which feeds raw 0-255 pixels to VGG16 without its
    preprocessing, the image is optimised in pixel space and the model's own
    preprocessing is applied inside the graph, so every pattern is a
    displayable image the model actually sees.

    Where the CPU computes bf16 natively, the network runs in bf16 by default
    (the image itself and the update stay float32); see `default_precision`.

    `method="fourier"` is the clear mode of Olah et al., "Feature
    Visualization" (Distill 2017) and Mordvintsev et al., "Differentiable
    Image Parameterizations" (Distill 2018): a 1/f-scaled Fourier image in a
    decorrelated colour space, random transforms at every step, Adam
    (`convviz_core.features.optvis.render.render_patterns`).

    Args:
        model: A `VisionModel`.
        layer_name: A layer from `model.layer_names`.
        filter_indices: Channels of that layer.
        size: Pattern height and width, where the layer allows any size
            (`pattern_size`); other models use their input size. None: the
            model's input size (150, the book's, for a model of any size).
        steps: Optimisation steps. Default: 40 (the book's) for
            gradient ascent, `optvis.render.DEFAULT_STEPS` for fourier.
        step_size: Size of each step. Default: 1.0 (the book's) for gradient
            ascent, Adam's learning rate
            `optvis.render.DEFAULT_LEARNING_RATE` for fourier.
        seed: The same seed gives the same patterns.
        precision: "float32", "bfloat16" or None for `default_precision()`
            (gradient ascent only).
        progress: Optional function called with (done, total) units of work.
        method: "gradient-ascent" or "fourier" (`METHODS`).
        objective: For fourier: "channel" (the book's), "neuron" or
            "diversity" (`OBJECTIVES`); gradient ascent takes "channel" only.
        schedule: For gradient ascent: "book" (the book's loop of `steps`
            steps) or "matched" (Nesterov momentum, as few steps as reach the
            objective of the book's `steps`; see `matched_steps`).

    Returns:
        uint8 array (n, height, width, 3): deprocessed as in the book for
        gradient ascent, the sigmoid's pixels for fourier.

    Raises:
        InputError: For a layer that is unknown or not 4-D, a filter index
            out of range, or an unknown method or objective.
    """
    method, objective = check_method(method, objective)
    default_steps, default_step_size = method_defaults(method)
    steps = default_steps if steps is None else steps
    step_size = default_step_size if step_size is None else step_size
    check_schedule(schedule)
    if method == "fourier":
        from convviz_core.features.optvis.render import render_patterns

        return render_patterns(
            model,
            layer_name,
            filter_indices,
            objective=objective,
            size=size,
            steps=steps,
            learning_rate=step_size,
            seed=seed,
            progress=progress,
        )
    images, _ = optimize_patterns(
        model, layer_name, filter_indices, size, steps, step_size, seed, precision, progress, schedule=schedule
    )
    return np.stack([deprocess_image(image) for image in images])


def method_defaults(method):
    """(steps, step size) a method uses when none are given."""
    if method == "fourier":
        from convviz_core.features.optvis.render import DEFAULT_LEARNING_RATE, DEFAULT_STEPS

        return DEFAULT_STEPS, DEFAULT_LEARNING_RATE
    return BOOK_STEPS, BOOK_STEP_SIZE


def check_method(method, objective="channel"):
    """Validates a pattern method and objective.

    Returns:
        (method, objective).

    Raises:
        InputError: If either is unknown, or gradient ascent is asked for
            another objective than the book's channel mean.
    """
    if method not in METHODS:
        raise InputError(f"Choose a pattern method among {', '.join(METHODS)}. Received: method={method!r}")
    if objective not in OBJECTIVES:
        raise InputError(
            f"Choose an objective among {', '.join(OBJECTIVES)}. Received: objective={objective!r}"
        )
    if method == "gradient-ascent" and objective != "channel":
        raise InputError(
            f"The book's gradient ascent maximises a channel's mean; the '{objective}' objective "
            "needs method='fourier'."
        )
    return method, objective


def deprocess_image(image):
    """Turns an optimised image into a displayable one, as the book does.

    Subtract the mean, divide by (std + 1e-5), scale by 0.1, shift by 0.5,
    clip to [0, 1] and map to 0-255.

    Args:
        image: float array (height, width, 3). It is not changed.

    Returns:
        uint8 array (height, width, 3).
    """
    image = np.asarray(image, dtype=np.float64)
    image = (image - image.mean()) / (image.std() + 1e-5) * 0.1 + 0.5
    return (np.clip(image, 0, 1) * 255).astype(np.uint8)


def pattern_grid(patterns, cols=8, margin=5):
    """Tiles patterns into one picture separated by black margins (book fig. 5-30).

    Patterns are laid out in reading order: left to right, then top to bottom.

    Args:
        patterns: uint8 array (n, height, width, 3).
        cols: Patterns per row.
        margin: Black pixels between patterns.

    Returns:
        uint8 array (rows * height + (rows - 1) * margin,
        cols * width + (cols - 1) * margin, 3).
    """
    patterns = np.asarray(patterns)
    if patterns.ndim != 4 or patterns.shape[0] == 0:
        raise ValueError(
            f"patterns must have shape (n, height, width, channels) with n > 0. "
            f"Received: {patterns.shape}"
        )
    if cols < 1 or margin < 0:
        raise ValueError(f"cols must be >= 1 and margin >= 0. Received: {cols}, {margin}")
    count, height, width, channels = patterns.shape
    cols = min(cols, count)
    rows = -(-count // cols)
    grid = np.zeros(
        (rows * height + (rows - 1) * margin, cols * width + (cols - 1) * margin, channels),
        dtype=np.uint8,
    )
    for index, pattern in enumerate(patterns):
        row, column = divmod(index, cols)
        top, left = row * (height + margin), column * (width + margin)
        grid[top : top + height, left : left + width] = pattern
    return grid

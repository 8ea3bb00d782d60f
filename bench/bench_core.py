"""Benchmarks the core's three views side by side, in one run, and prints ratios.

    python bench/bench_core.py [--quick]

(a) The 8x8 filter atlas of VGG16 block3_conv1 (64 filters, 64x64, 40 steps),
    made four ways: the book's loop run eagerly one filter at a time; the
    keras.io example's approach (a compiled gradient-ascent step called per
    step and per filter); ConvViz's batched graph with the book's 40 plain
    steps ("book" schedule), in float32 and bf16; and ConvViz's default
    "matched" schedule (Nesterov momentum for as few steps as reach the
    book's 40-step objective, found on two filters of the layer, included in
    the time). The objective each filter reached is compared with the
    keras.io loop's (the book's arithmetic, same start images), in float32.
    The bf16 run must reach a final mean activation within 5% of float32's.
(a2) The default Filters atlas of EfficientNet-Lite0 (block2b_expand_conv, 64
    filters): the keras.io approach (40 steps) at the model's 224x224 input
    against ConvViz at 128x128 (the layer is reached by convolutions only,
    so patterns need not have the classification size): the book's 40
    steps, and the page's default, the matched schedule (calibration
    included), whose objective is compared with the book's at 128.
(p) Where a step's time goes: the convolutions' arithmetic of one gradient-
    ascent step of VGG16 up to block3_conv1 (forward, and backward to the
    input: twice the forward's multiply-adds), counted from the layers'
    shapes, over its measured time, against this CPU's float32 throughput
    on one large 3x3 convolution (the most the convolutions can do here).
(b) Grad-CAM time / one plain compiled forward pass of VGG16 (224x224).
(c) All-layer activations time / one plain compiled forward pass.

Weights are random (`weights=None`): timing does not depend on them. The
machine is shared and noisy, so the methods are interleaved and the medians
compared; the ratios are what counts, not the absolute seconds.
"""

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from convviz_core import VisionModel, activations, grad_cam, load_model  # noqa: E402
from convviz_core.features import atlas_service  # noqa: E402
from convviz_core.features.patterns import (  # noqa: E402
    cpu_has_bf16,
    matched_steps,
    optimize_patterns,
    pattern_objective,
    start_images,
)

LAYER = "block3_conv1"
SIZE, STEPS, FILTERS = 64, 40, 64


def book_loop(model, filter_index, size, steps):
    """The book's code 5-38, eager: one filter, one step at a time."""
    extractor = keras.Model(model.inputs, model.get_layer(LAYER).output)
    image = tf.Variable(start_images([filter_index], size, size, seed=0))
    for _ in range(steps):
        with tf.GradientTape() as tape:
            activation = extractor(keras.applications.vgg16.preprocess_input(image * 1.0))
            loss = tf.reduce_mean(activation[:, :, :, filter_index])
        gradients = tape.gradient(loss, image)
        gradients /= tf.sqrt(tf.reduce_mean(tf.square(gradients))) + 1e-5
        image.assign_add(gradients)
    return image.numpy()


def keras_io_atlas(model, filter_indices, size, steps):
    """The keras.io "visualizing what convnets learn" structure: a compiled step per filter.

    As in that example, the filter index is a Python int, so each filter
    traces the step again; the loss and update are the book's.
    """
    extractor = keras.Model(model.inputs, model.get_layer(LAYER).output)
    return keras_io_atlas_of(
        extractor, lambda image: keras.applications.vgg16.preprocess_input(image * 1.0), filter_indices, size, steps
    )


def objective_ratio(reached, reference):
    """How the objective reached compares with a reference, filter by filter (filters alive in either)."""
    alive = (reached > 1e-6) | (reference > 1e-6)
    ratios = reached[alive] / np.maximum(reference[alive], 1e-6)
    if not len(ratios):
        return "no filter is alive in either"
    return (f"mean of the activations {reached.mean() / max(reference.mean(), 1e-9):.2f}x; per filter min "
            f"{ratios.min():.2f}x, median {np.median(ratios):.2f}x; {int(np.sum(reached < reference))} of "
            f"{len(reached)} below")


def timed(function):
    start = time.perf_counter()
    result = function()
    return time.perf_counter() - start, result


def mean_activation_float32(model, images, filter_indices):
    """The objective reached, always measured in float32 so precisions compare."""
    extractor = keras.Model(model.inputs, model.get_layer(LAYER).output)
    activation = extractor(keras.applications.vgg16.preprocess_input(tf.constant(images)))
    return np.array([float(tf.reduce_mean(activation[i, :, :, f])) for i, f in enumerate(filter_indices)])


def bench_atlas(quick):
    base = keras.applications.VGG16(weights=None, include_top=False)
    model = VisionModel(base, preprocess=keras.applications.vgg16.preprocess_input)
    filters = list(range(FILTERS))
    book_filters = filters[:4] if quick else filters[:8]
    keras_io_filters = filters[:8] if quick else filters

    # bf16 only where the CPU computes it natively: elsewhere it is emulated, slowly,
    # and ConvViz never uses it.
    precisions = ("float32", "bfloat16") if cpu_has_bf16() else ("float32",)
    # Warm up our compiled functions so tracing is not timed (the app reuses them).
    for precision in precisions:
        optimize_patterns(model, LAYER, [0, 1], size=SIZE, steps=1, precision=precision)

    book_time, _ = timed(lambda: [book_loop(base, f, SIZE, STEPS) for f in book_filters])
    book_time *= len(filters) / len(book_filters)
    keras_io_time, keras_io_images = timed(lambda: keras_io_atlas(base, keras_io_filters, SIZE, STEPS))
    keras_io_time *= len(filters) / len(keras_io_filters)
    runs = [(precision, "book") for precision in precisions] + [(precisions[-1], "matched")]
    ours, reached = {}, {}
    for precision, schedule in runs:
        seconds, (images, _) = timed(
            lambda: optimize_patterns(
                model, LAYER, filters, size=SIZE, steps=STEPS, precision=precision, schedule=schedule
            )
        )
        ours[precision, schedule] = seconds
        reached[precision, schedule] = mean_activation_float32(base, images, filters)
    keras_io_reached = mean_activation_float32(base, keras_io_images, keras_io_filters)

    print(f"(a) 8x8 atlas, VGG16 {LAYER}, {FILTERS} filters at {SIZE}x{SIZE}, {STEPS} steps")
    print(f"    book's eager loop, per filter      {book_time:8.1f} s  (timed on {len(book_filters)} filters, scaled)")
    print(f"    keras.io compiled step per filter  {keras_io_time:8.1f} s  (timed on {len(keras_io_filters)} filters, scaled)"
          f"  = {keras_io_time / FILTERS:.2f} s per filter")
    for (precision, schedule), seconds in ours.items():
        matched = ""
        if schedule == "matched":
            steps, momentum = matched_steps(model, LAYER, SIZE, STEPS, precision=precision)
            matched = f" ({steps} Nesterov steps, momentum {momentum})"
        print(f"    ConvViz, {precision:8s} {schedule:7s}      {seconds:8.1f} s"
              f"  -> {keras_io_time / seconds:4.1f}x keras.io, {book_time / seconds:5.1f}x book{matched}")
        print("        objective reached / keras.io's: " + objective_ratio(reached[precision, schedule][
            :len(keras_io_filters)], keras_io_reached))
    if "bfloat16" in precisions:
        relative = reached["bfloat16", "book"].mean() / reached["float32", "book"].mean() - 1
        print(f"    final mean activation: float32 {reached['float32', 'book'].mean():.3f}, "
              f"bfloat16 {reached['bfloat16', 'book'].mean():.3f} ({relative:+.1%}; must be within 5%)")
    print(f"    CPU has native bf16: {cpu_has_bf16()}")


def cpu_flags():
    """The CPU's name and the flags that decide ConvViz's speed."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as cpuinfo:
            text = cpuinfo.read()
    except OSError:
        return "unknown CPU"
    name = next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name")), "?")
    flags = set(text.split())
    wanted = ["avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile"]
    return f"{name}; {os.cpu_count()} cores; " + " ".join(f"{flag}={'yes' if flag in flags else 'no'}" for flag in wanted)


def keras_io_atlas_of(extractor, preprocess, filter_indices, size, steps):
    """The keras.io structure for any feature extractor: a compiled step called per step and per filter."""

    @tf.function
    def gradient_ascent_step(image, filter_index, learning_rate):
        with tf.GradientTape() as tape:
            tape.watch(image)
            activation = extractor(preprocess(image))
            loss = tf.reduce_mean(activation[:, :, :, filter_index])
        gradients = tape.gradient(loss, image)
        gradients /= tf.sqrt(tf.reduce_mean(tf.square(gradients))) + 1e-5
        return loss, image + learning_rate * gradients

    images = []
    for filter_index in filter_indices:
        image = tf.constant(start_images([filter_index], size, size, seed=0))
        for _ in range(steps):
            _, image = gradient_ascent_step(image, filter_index, 1.0)
        images.append(image.numpy()[0])
    return np.stack(images)


def bench_efficientnet_atlas(quick):
    model = load_model("efficientnet-lite0")
    choice = atlas_service.default_atlas_choice(model)
    request = atlas_service.grid_request(model, choice)
    filters = list(request.filter_indices)
    extractor = keras.Model(model.keras_model.inputs, model.keras_model.get_layer(choice.layer).output)
    keras_io_filters = filters[:4] if quick else filters[:16]
    keras_io_atlas_of(extractor, model.preprocess, [0], 224, 1)  # Trace once.
    keras_io_time, _ = timed(lambda: keras_io_atlas_of(extractor, model.preprocess, keras_io_filters, 224, STEPS))
    keras_io_time *= len(filters) / len(keras_io_filters)
    optimize_patterns(model, choice.layer, [0, 1], size=request.height, steps=1)  # Trace once.
    book, (book_images, _) = timed(
        lambda: optimize_patterns(model, choice.layer, filters, size=request.height, steps=request.steps)
    )
    # The page's default; the time includes finding the matched steps for the layer.
    ours, (images, _) = timed(
        lambda: optimize_patterns(
            model, choice.layer, filters, size=request.height, steps=request.steps, schedule=request.schedule
        )
    )
    steps, momentum = matched_steps(model, choice.layer, request.height, request.steps)

    def reached(patterns):
        return pattern_objective(model, choice.layer, patterns, filters)

    print(f"(a2) default Filters atlas, EfficientNet-Lite0 {choice.layer}, {len(filters)} filters")
    print(f"    keras.io compiled step per filter at 224x224, {STEPS} steps  {keras_io_time:7.1f} s"
          f"  (timed on {len(keras_io_filters)} filters, scaled)")
    print(f"    ConvViz, the book's {request.steps} steps at {request.height}x{request.width}"
          f"             {book:7.1f} s  -> {keras_io_time / book:4.1f}x keras.io")
    print(f"    ConvViz default ({request.schedule}: {steps} Nesterov steps) at {request.height}x{request.width}"
          f"   {ours:7.1f} s  -> {keras_io_time / ours:4.1f}x keras.io (target: <= 10 s, >= 7x)")
    print("        objective reached / the book's 40 steps at the same size: "
          + objective_ratio(reached(images), reached(book_images)))


def convolution_flops(model, layer_name, height, width):
    """Multiply-adds x 2 of the convolutions up to a layer, one image, forward; the layer itself for one channel."""
    flops = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            _, out_height, out_width, channels = layer.compute_output_shape((1, height, width, layer.input.shape[-1]))
            kernel_height, kernel_width, inputs, _ = layer.kernel.shape
            per_channel = out_height * out_width * kernel_height * kernel_width * inputs * 2
            flops += per_channel * (1 if layer.name == layer_name else channels)
            height, width = out_height, out_width
        elif isinstance(layer, keras.layers.MaxPooling2D):
            height, width = height // 2, width // 2
        if layer.name == layer_name:
            return flops
    raise ValueError(layer_name)


def bench_step_profile(repeats):
    base = keras.applications.VGG16(weights=None, include_top=False)
    model = VisionModel(base, preprocess=keras.applications.vgg16.preprocess_input)
    batch, steps = 8, 10
    filters = list(range(batch))
    optimize_patterns(model, LAYER, filters, size=SIZE, steps=1, precision="float32")
    images = tf.random.normal((16, 56, 56, 128))
    kernel = tf.random.normal((3, 3, 128, 128))
    convolution = tf.function(lambda x: tf.nn.conv2d(x, kernel, 1, "SAME"))
    convolution(images)
    step_times, conv_times = [], []
    for _ in range(repeats):
        step_times.append(timed(lambda: optimize_patterns(model, LAYER, filters, size=SIZE, steps=steps,
                                                          precision="float32"))[0] / steps)
        conv_times.append(timed(lambda: convolution(images).numpy())[0])
    peak = 16 * 56 * 56 * 9 * 128 * 128 * 2 / statistics.median(conv_times)
    work = 2 * convolution_flops(base, LAYER, SIZE, SIZE) * batch
    step = statistics.median(step_times)
    print(f"(p) one gradient-ascent step, VGG16 up to {LAYER}, {batch} patterns of {SIZE}x{SIZE}, float32")
    print(f"    this CPU's float32 convolution throughput (one 3x3 conv, 128->128, 16x56x56): {peak / 1e9:6.1f} GFLOP/s")
    print(f"    a step: {step * 1000:6.1f} ms for {work / 1e9:.2f} GFLOP of convolutions (forward + backward to the input)"
          f" = {work / step / 1e9:6.1f} GFLOP/s, {work / step / peak:.0%} of that throughput")


def bench_forward_ratios(repeats):
    full = keras.applications.VGG16(weights=None)
    model = VisionModel(full, preprocess=keras.applications.vgg16.preprocess_input)
    image = np.random.default_rng(0).integers(0, 256, (224, 224, 3), dtype=np.uint8)

    @tf.function(input_signature=[tf.TensorSpec((None, 224, 224, 3), tf.uint8)])
    def forward(images):
        return full(keras.applications.vgg16.preprocess_input(tf.cast(images, tf.float32)), training=False)

    batch = tf.constant(image[np.newaxis])
    methods = {
        "forward": lambda: forward(batch).numpy(),
        "grad_cam": lambda: grad_cam(model, image),
        "activations": lambda: activations(model, image, model.layer_names),
    }
    for method in methods.values():  # Warm-up: trace once.
        method()
    times = {name: [] for name in methods}
    for _ in range(repeats):
        for name, method in methods.items():
            times[name].append(timed(method)[0])
    medians = {name: statistics.median(values) for name, values in times.items()}
    print(f"(b,c) VGG16 at 224x224, median of {repeats} interleaved runs")
    print(f"    plain compiled forward pass     {medians['forward'] * 1000:7.1f} ms")
    print(f"    grad_cam (block5_conv3)         {medians['grad_cam'] * 1000:7.1f} ms"
          f"  ratio {medians['grad_cam'] / medians['forward']:.2f} (target <= 1.5)")
    print(f"    activations, all {len(model.layer_names)} layers     {medians['activations'] * 1000:7.1f} ms"
          f"  ratio {medians['activations'] / medians['forward']:.2f} (target <= 1.3)")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="time fewer filters and repeats")
    parser.add_argument("--only", choices=("atlas", "efficientnet", "forward", "profile"), help="run one part")
    arguments = parser.parse_args()
    from convviz_core.features.patterns import default_precision

    print(f"CPU: {cpu_flags()}; patterns in {default_precision()} (CONVVIZ_PRECISION={os.environ.get('CONVVIZ_PRECISION', '')!r})")
    if arguments.only in (None, "efficientnet"):
        bench_efficientnet_atlas(arguments.quick)
    if arguments.only in (None, "profile"):
        bench_step_profile(repeats=3 if arguments.quick else 7)
    if arguments.only in (None, "forward"):
        bench_forward_ratios(repeats=3 if arguments.quick else 9)
    if arguments.only in (None, "atlas"):
        bench_atlas(arguments.quick)


if __name__ == "__main__":
    main()

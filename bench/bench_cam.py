"""Benchmarks the CAM family on EfficientNet-Lite0, in one run, and prints ratios.

    python bench/bench_cam.py [--repeats 9] [--no-score-cam]

(a) Each fast method (`class_activation_map`, one image, top class, the
    default layer `top_activation`) / one plain compiled forward pass of the
    same image (`class_probabilities`). Target: <= 1.5 each.
(b) All six fast methods from one shared pass (`class_activation_maps`) /
    one Grad-CAM. Target: <= 1.3.
(c) Score-CAM at `top_activation` (1280 channels at 7x7) on the cat, in
    seconds (target <= 20 s on 2 cores), and how many masked inputs sharing
    equal masks saved (all-zero channels share the blank mask).
(d) RISE deletion + insertion of the cat's Grad-CAM map with the default
    steps, in seconds (target <= 3 s on 2 cores), and the random baseline.
(e) With --sanity: the cascading randomisation curves (Spearman rank
    correlation with the original map, per method, top block first).

The machine is shared and noisy, so (a) and (b) interleave the calls and
compare medians; the ratios are what counts, not the absolute seconds.
"""

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import numpy as np  # noqa: E402

import convviz_core  # noqa: E402
from convviz_core.cam.methods import (  # noqa: E402
    FAST_METHODS,
    class_activation_map,
    class_activation_maps,
    class_activation_maps_with_probabilities,
)
from convviz_core.cam.passes import run_layer_pass, score_masked_inputs  # noqa: E402
from convviz_core.cam.scorecam import DEFAULT_BATCH_SIZE, score_cam_masks  # noqa: E402
from convviz_core.metrics.deletion_insertion import DEFAULT_STEPS, deletion_insertion  # noqa: E402
from convviz_core.metrics.random_baseline import random_baseline  # noqa: E402
from convviz_core.metrics.sanity import cascading_randomization  # noqa: E402
from convviz_core.predictions import class_probabilities  # noqa: E402


def timed(function):
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def bench_fast_methods(model, image, repeats):
    calls = {"forward": lambda: class_probabilities(model, image)}
    for method in FAST_METHODS:
        calls[method] = lambda method=method: class_activation_map(model, image, method)
    calls["all six"] = lambda: class_activation_maps(model, image, FAST_METHODS)
    for call in calls.values():  # Warm-up: trace once.
        call()
    times = {name: [] for name in calls}
    for _ in range(repeats):
        for name, call in calls.items():
            times[name].append(timed(call))
    medians = {name: statistics.median(values) for name, values in times.items()}
    forward = medians["forward"]
    print(f"(a) EfficientNet-Lite0, cat, top_activation, median of {repeats} interleaved runs")
    print(f"    plain compiled forward pass      {forward * 1000:7.1f} ms")
    for method in FAST_METHODS:
        print(f"    {method:12s}                     {medians[method] * 1000:7.1f} ms"
              f"  ratio {medians[method] / forward:.2f} (target <= 1.5)")
    print(f"(b) all six from one pass            {medians['all six'] * 1000:7.1f} ms"
          f"  ratio {medians['all six'] / medians['grad-cam']:.2f} of one Grad-CAM (target <= 1.3)")


def bench_score_cam(model, image, batch_sizes):
    layer_pass = run_layer_pass(model, image, with_gradients=False)
    channels = layer_pass.features.shape[-1]
    masks, _ = score_cam_masks(layer_pass.features)
    zero_channels = int((layer_pass.features.max(axis=(0, 1)) == 0).sum())
    print(f"(c) Score-CAM, cat, top_activation: {channels} channels, {zero_channels} all zero; "
          f"{len(masks)} distinct masks scored ({1 - len(masks) / channels:.0%} fewer forward passes)")
    # Warm-up: trace the masked-scoring function once, on one blank mask.
    score_masked_inputs(model, layer_pass.inputs, np.zeros((1,) + model.input_size, np.float32), 0)
    for batch_size in batch_sizes:
        options = {} if batch_size is None else {"batch_size": batch_size}
        seconds = timed(
            lambda: class_activation_maps_with_probabilities(model, image, ["score-cam"], **options)
        )
        print(f"    batch {batch_size or DEFAULT_BATCH_SIZE}: {seconds:6.1f} s (target <= 20 s on 2 cores); "
              f"{seconds / len(masks) * 1000:.1f} ms per masked input, so about "
              f"{seconds / len(masks) * channels:.0f} s if every channel were scored")


def bench_deletion_insertion(model, image, repeats):
    heatmap = class_activation_map(model, image, "grad-cam")
    layer = model.default_cam_layer()
    deletion_insertion(model, image, heatmap, layer_name=layer)  # Warm-up.
    seconds = statistics.median(
        timed(lambda: deletion_insertion(model, image, heatmap, layer_name=layer)) for _ in range(repeats)
    )
    result = deletion_insertion(model, image, heatmap, layer_name=layer)
    start = time.perf_counter()
    chance = random_baseline(model, image, heatmap.shape, layer_name=layer)
    chance_seconds = time.perf_counter() - start
    print(f"(d) deletion + insertion, {DEFAULT_STEPS} steps: {seconds:.2f} s (target <= 3 s on 2 cores);"
          f" Grad-CAM deletion AUC {result.deletion_auc:.3f}, insertion AUC {result.insertion_auc:.3f}")
    print(f"    random baseline ({chance.count} maps, {chance_seconds:.1f} s): deletion "
          f"{chance.deletion_auc:.3f} +- {chance.deletion_auc_spread:.3f}, insertion "
          f"{chance.insertion_auc:.3f} +- {chance.insertion_auc_spread:.3f}")


def bench_sanity(model, image):
    start = time.perf_counter()
    curves = cascading_randomization(model, image)
    print(f"(e) cascading randomisation, {len(curves.steps) - 1} blocks, "
          f"{time.perf_counter() - start:.1f} s; rank correlation after: "
          + ", ".join(curves.steps[1:6]) + ", ...")
    for method, values in curves.rank_correlation.items():
        print(f"    {method:12s} " + " ".join(f"{value:5.2f}" for value in values[:8]) + " ...")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--no-score-cam", action="store_true")
    parser.add_argument("--batch-sizes", type=int, nargs="*", default=[])
    parser.add_argument("--sanity", action="store_true")
    arguments = parser.parse_args()
    model = convviz_core.load_model("efficientnet-lite0")
    image = convviz_core.sample_images()["chelsea"]
    print(f"CPUs: {os.cpu_count()}, OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS')}, "
          f"load average {os.getloadavg()[0]:.1f}")
    bench_fast_methods(model, image, arguments.repeats)
    bench_deletion_insertion(model, image, max(1, arguments.repeats // 3))
    if not arguments.no_score_cam:
        bench_score_cam(model, image, [None] + arguments.batch_sizes)
    if arguments.sanity:
        bench_sanity(model, image)


if __name__ == "__main__":
    main()

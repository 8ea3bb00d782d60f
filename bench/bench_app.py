"""Benchmarks the dashboard's responsiveness with AppTest on the real pages, and prints the numbers.

    python bench/bench_app.py [--repeats 7]

(a) The first Grad-CAM page for the default model and image, once the model
    is loaded (the Activations page opened first, as a visitor would): goal
    at most 3 s on 2 cores. It includes tracing the Grad-CAM graph, the top-5
    table, the overlay and drawing the page.
(b) The rerun after a slider move over data already computed (the channel
    slider and the layer slider of Activations, the overlay strength of
    Grad-CAM): goal at most 0.3 s. AppTest's own work (running the script in
    a thread, parsing its output) is included, so these are upper bounds of
    what a browser session waits for on the server.

Every number comes from one process, in one run; the machine is shared, so
medians of several moves are printed next to the worst one.
"""

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from streamlit.testing.v1 import AppTest  # noqa: E402

APP = str(ROOT / "app.py")
MODEL_KEY = "builtin:efficientnet-lite0"
GOAL_FIRST_GRAD_CAM = 3.0
GOAL_RERUN = 0.3


def timed_run(at):
    """Runs the app once and returns the seconds it took."""
    start = time.perf_counter()
    at.run()
    seconds = time.perf_counter() - start
    if at.exception:
        raise RuntimeError(f"The app raised: {[exception.value for exception in at.exception]}")
    return seconds


def moves(at, set_value, values, repeats):
    """Moves a widget through values it has shown before and times each rerun."""
    for value in values:  # Fill the caches.
        set_value(value)
        timed_run(at)
    seconds = []
    for index in range(repeats):
        set_value(values[index % len(values)])
        seconds.append(timed_run(at))
    return seconds


def report(label, seconds, goal):
    median = statistics.median(seconds)
    verdict = "meets" if median <= goal else "MISSES"
    print(f"    {label:44s} median {median * 1000:6.0f} ms, worst {max(seconds) * 1000:6.0f} ms"
          f"  ({verdict} the goal of {goal * 1000:.0f} ms)")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7, help="slider moves timed per widget")
    arguments = parser.parse_args()

    at = AppTest.from_file(APP, default_timeout=600)
    first_open = timed_run(at)
    print("EfficientNet-Lite0 on the cat (the defaults), AppTest, one process")
    print(f"    first run: import TensorFlow, load the model, Activations  {first_open:6.2f} s")

    at.switch_page("pages/grad-cam.py")
    first_cam = timed_run(at)
    verdict = "meets" if first_cam <= GOAL_FIRST_GRAD_CAM else "MISSES"
    print(f"(a) first Grad-CAM page, model loaded              {first_cam:6.2f} s"
          f"  ({verdict} the goal of {GOAL_FIRST_GRAD_CAM:.0f} s)")
    print("(b) rerun after a slider move on cached data")
    report(
        "Grad-CAM overlay strength 0.4 <-> 0.6",
        moves(at, lambda value: at.slider(key="gradcam_alpha").set_value(value), [0.6, 0.4], arguments.repeats),
        GOAL_RERUN,
    )

    at.switch_page("pages/activation-maps.py")
    timed_run(at)
    channel_key = f"activations_channel:{MODEL_KEY}:stem_activation"
    report(
        "Activations channel slider, stem_activation",
        moves(at, lambda value: at.slider(key=channel_key).set_value(value), [3, 17, 30], arguments.repeats),
        GOAL_RERUN,
    )
    layer_key = f"activations_layer:{MODEL_KEY}"
    layers = ["block2a_activation", "block4a_expand_activation", "top_activation"]
    report(
        "Activations layer slider over visited layers",
        moves(at, lambda value: at.select_slider(key=layer_key).set_value(value), layers, arguments.repeats),
        GOAL_RERUN,
    )
    at.select_slider(key=layer_key).set_value("block6a_activation")
    print(f"    (for comparison: a layer not computed yet       {timed_run(at) * 1000:6.0f} ms)")


if __name__ == "__main__":
    main()

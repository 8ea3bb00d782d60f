"""Compares the clear mode (`optvis.render_patterns`) with the book's gradient ascent, in one run.

    CONVVIZ_PRECISION=float32 python bench/bench_pattern_quality.py [--quick] [--save-images]

For 16 filters of one early and one deep layer of EfficientNet-Lite0 and of
VGG16-shaped weights, both methods make a pattern per filter and each
pattern is scored by the two measures of `convviz_core.features.optvis.quality`:

- transform robustness (higher is better): the filter's mean activation on
  copies of the pattern jittered by ±8 px, scaled by 0.9-1.1 and rotated by
  ±5°, over its activation on the pattern itself;
- high-frequency share (lower is better): the share of spectral energy
  above a quarter of the Nyquist frequency.

The book's method runs as the Filters view runs it (`filter_patterns`, 40
steps); `fourier` runs `render_patterns` at its defaults (128 px,
`render.DEFAULT_STEPS` Adam steps at `render.DEFAULT_LEARNING_RATE`, 16
patterns batched), and, side by side, at Lucid's step size (128 steps at
0.05, the default until 2026-12-06). It prints, per layer, the medians, the
share of filters on which `fourier` wins each measure (target: at least
90%), the objective the default reaches as a share of Lucid's schedule's,
and seconds per pattern of each (after a first call that traces), with their
ratio (target for the clear mode: 64 patterns of 128 px in at most 15 s on
2 cores, float32, that is 0.23 s per pattern).

VGG16's ImageNet weights are not available offline, so its weights are
random (`weights=None`, seed 0): the measures still compare the methods on
VGG16's architecture, but its patterns are not meaningful pictures, and
some of its random ReLU filters are dead (zero for every image); those are
left out of the win shares. VGG16 is built without its Dense top
(`include_top=False`) so that both methods run at the same size, and at 64 px
with 64 Adam steps: its convolutions cost far more than EfficientNet-Lite0's
(about 12 s per step for 16 patterns of block4_conv1 at 128 px on 2 cores,
so 128 steps would take 25 minutes per layer).

The machine may be shared with other work: seconds are noisy; the quality
measures are not.
"""

import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import keras  # noqa: E402
import numpy as np  # noqa: E402

from convviz_core import VisionModel, load_model  # noqa: E402
from convviz_core.features.optvis import (  # noqa: E402
    high_frequency_share,
    render_size,
    transform_robustness,
)
from convviz_core.features.optvis.render import DEFAULT_LEARNING_RATE, DEFAULT_STEPS, render_images  # noqa: E402
from convviz_core.features.patterns import default_precision, filter_patterns, pattern_size  # noqa: E402
from convviz_core.models.registry import preprocess_preset  # noqa: E402

IMAGES_DIRECTORY = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "docs", "images")


def cases(quick):
    """(model builder, layers, pattern size, fourier steps (None: the default), Lucid's schedule too) per model."""
    yield (
        lambda: load_model("efficientnet-lite0"),
        ["block2b_expand_conv", "block5a_expand_conv"],
        128,
        32 if quick else None,
        True,
    )

    def vgg16():
        keras.utils.set_random_seed(0)
        return VisionModel(
            keras.applications.VGG16(weights=None, include_top=False),
            preprocess=preprocess_preset("caffe"),
            name="vgg16 (random weights)",
        )

    # Lucid's 128 steps would take most of an hour on VGG16's block4_conv1.
    yield vgg16, ["block1_conv2", "block4_conv1"], 64, 32 if quick else None, False


def timed(function):
    start = time.perf_counter()
    result = function()
    return result, time.perf_counter() - start


# Lucid's step size, over the steps the clear mode took by default until 2026-12-06.
LUCID_STEPS, LUCID_LEARNING_RATE = 128, 0.05


def render(model, layer, filters, size, **options):
    """The clear mode's patterns (uint8) and each one's final objective."""
    images, final, _ = render_images(model, layer, filters, size=size, **options)
    return np.round(images * 255.0).astype(np.uint8), final


def compare_layer(model, layer, filters, size, steps, compare_lucid=True):
    # One traced call for each method first, so that no timing below includes a trace.
    filter_patterns(model, layer, filters[:1], size=size, steps=1)
    render(model, layer, filters[:1], size, steps=1)
    book, book_seconds = timed(lambda: filter_patterns(model, layer, filters, size=size, steps=40))
    options = {} if steps is None else {"steps": steps}
    (clear, clear_objective), clear_seconds = timed(lambda: render(model, layer, filters, size, **options))
    lucid_steps = LUCID_STEPS if steps is None else 4 * steps
    lucid, lucid_objective, lucid_seconds = clear, clear_objective, clear_seconds
    if compare_lucid:
        (lucid, lucid_objective), lucid_seconds = timed(
            lambda: render(model, layer, filters, size, steps=lucid_steps, learning_rate=LUCID_LEARNING_RATE)
        )
    book_robust = transform_robustness(model, layer, book, filters)
    clear_robust = transform_robustness(model, layer, clear, filters)
    book_high = high_frequency_share(book)
    clear_high = high_frequency_share(clear)
    alive = np.isfinite(book_robust) & np.isfinite(clear_robust)
    count = max(int(alive.sum()), 1)
    robust_wins = float(np.sum(clear_robust[alive] > book_robust[alive])) / count
    high_wins = float(np.sum(clear_high[alive] < book_high[alive])) / count
    both_wins = float(np.sum((clear_robust > book_robust)[alive] & (clear_high < book_high)[alive])) / count
    book_side = pattern_size(model, size)[0]
    clear_side = render_size(model, layer, size)[0]
    lucid_robust = transform_robustness(model, layer, lucid, filters)
    lucid_high = high_frequency_share(lucid)
    lucid_alive = np.isfinite(book_robust) & np.isfinite(lucid_robust)
    lucid_count = max(int(lucid_alive.sum()), 1)
    positive = lucid_objective > 0
    reached = np.median(clear_objective[positive] / lucid_objective[positive]) if positive.any() else np.nan
    clear_steps = steps if steps is not None else "default"
    print(
        f"{model.name:24s} {layer:22s} live filters {int(alive.sum()):2d}/{len(filters)}\n"
        f"    robustness median   book {np.nanmedian(book_robust):5.2f}  fourier {np.nanmedian(clear_robust):5.2f}"
        f"   fourier wins {robust_wins:4.0%}\n"
        f"    high-freq median    book {np.median(book_high[alive]) if alive.any() else np.nan:5.2f}  "
        f"fourier {np.median(clear_high[alive]) if alive.any() else np.nan:5.2f}   fourier wins {high_wins:4.0%}"
        f"   (both measures: {both_wins:4.0%})\n"
        f"    s/pattern           book {book_seconds / len(filters):5.2f} ({book_side} px, 40 steps)  "
        f"fourier {clear_seconds / len(filters):5.2f} ({clear_side} px, {clear_steps} steps)\n"
        + (f"    Lucid's step size   robustness {np.nanmedian(lucid_robust):5.2f}, high-freq "
        f"{np.median(lucid_high[lucid_alive]) if lucid_alive.any() else np.nan:5.2f}, wins over the book "
        f"{np.sum(lucid_robust[lucid_alive] > book_robust[lucid_alive]) / lucid_count:4.0%}/"
        f"{np.sum(lucid_high[lucid_alive] < book_high[lucid_alive]) / lucid_count:4.0%}, "
        f"{lucid_seconds / len(filters):5.2f} s/pattern ({lucid_steps} steps at {LUCID_LEARNING_RATE})\n"
        f"    default vs Lucid's  {lucid_seconds / clear_seconds:4.1f}x faster, objective reached: median "
        f"{reached:4.0%} of Lucid's" if compare_lucid else ""),
        flush=True,
    )
    # The Filters page's default for the book's method: momentum to the book's objective.
    matched, matched_seconds = timed(
        lambda: filter_patterns(model, layer, filters, size=size, steps=40, schedule="matched")
    )
    matched_robust = transform_robustness(model, layer, matched, filters)
    matched_high = high_frequency_share(matched)
    live = alive & np.isfinite(matched_robust)
    beaten = float(np.sum((clear_robust > matched_robust)[live] & (clear_high < matched_high)[live])) / max(
        int(live.sum()), 1
    )
    print(
        f"    matched schedule    robustness {np.nanmedian(matched_robust):5.2f}, high-freq "
        f"{np.median(matched_high[live]) if live.any() else np.nan:5.2f}, {matched_seconds / len(filters):5.2f} s/pattern"
        f"   fourier better on both: {beaten:4.0%}",
        flush=True,
    )
    return book, clear, lucid, alive, robust_wins, high_wins


def save_comparison(rows, path):
    """Saves a labelled grid: per layer, the book's patterns, then the clear mode's (before and after 2026-12-06)."""
    from PIL import Image, ImageDraw

    tile, margin, label_height = 128, 4, 18
    columns = max(len(book) for _, book, _, _ in rows)
    width = columns * (tile + margin) + margin
    height = len(rows) * 3 * (tile + margin + label_height) + margin
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    top = margin
    for title, book, lucid, clear in rows:
        for name, patterns in (
            (f"{title}: book (gradient ascent, 40 steps)", book),
            (f"{title}: clear mode before ({LUCID_STEPS} Adam steps at {LUCID_LEARNING_RATE})", lucid),
            (f"{title}: clear mode now ({DEFAULT_STEPS} Adam steps at {DEFAULT_LEARNING_RATE})", clear),
        ):
            draw.text((margin, top + 3), name, fill=(0, 0, 0))
            top += label_height
            for column, pattern in enumerate(patterns):
                picture = Image.fromarray(pattern).resize((tile, tile), Image.BILINEAR)
                canvas.paste(picture, (margin + column * (tile + margin), top))
            top += tile + margin
    canvas.save(path)
    print(f"saved {os.path.normpath(path)}")


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fewer steps and filters, for a smoke test")
    parser.add_argument("--save-images", action="store_true", help="save docs/images/patterns_*.png")
    parser.add_argument("--only", choices=["efficientnet", "vgg16"], help="run one model only")
    arguments = parser.parse_args()
    filters = list(range(4 if arguments.quick else 16))
    print(f"precision {default_precision()}, {os.cpu_count()} CPUs, {len(filters)} filters per layer")
    flags = (
        open("/proc/cpuinfo").read().split("flags")[1].split("\n")[0]
        if os.path.exists("/proc/cpuinfo")
        else ""
    )
    print(
        "CPU flags: "
        + " ".join(
            flag for flag in ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16") if flag in flags.split()
        )
    )
    totals = []
    for index, (build, layers, size, steps, compare_lucid) in enumerate(cases(arguments.quick)):
        if arguments.only and arguments.only not in ("efficientnet", "vgg16")[index]:
            continue
        model = build()
        rows = []
        for layer in layers:
            book, clear, lucid, alive, robust_wins, high_wins = compare_layer(
                model, layer, filters, size, steps, compare_lucid
            )
            totals.append((robust_wins, high_wins, int(alive.sum())))
            rows.append((layer, book[:8], lucid[:8], clear[:8]))
        if arguments.save_images:
            slug = model.name.split(" ")[0].replace("-", "_")
            save_comparison(rows, os.path.join(IMAGES_DIRECTORY, f"patterns_{slug}_book_vs_fourier.png"))
    weights = np.array([count for _, _, count in totals], float)
    if weights.sum():
        print(
            f"overall (live filters): fourier wins robustness on "
            f"{np.dot([r for r, _, _ in totals], weights) / weights.sum():.0%}, "
            f"high-frequency share on {np.dot([h for _, h, _ in totals], weights) / weights.sum():.0%} (target >= 90%)"
        )


if __name__ == "__main__":
    main()

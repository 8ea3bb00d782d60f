"""A folder of images explained in batches: 1,000 images, Grad-CAM + deletion/insertion at 32 steps.

Makes the images offline from the bundled sample photos (random crops,
flips, scales and colour shifts, written as JPEGs to a temporary folder),
then, in one run and on the same images:

1. the one-image path the dashboard takes for each of the first --compare
   images (`load_image`, `class_activation_map`, `deletion_insertion`);
2. the batched path (`convviz_core.reports.batch.explain_images`, no chance
   level, no ROAD) over all of them;

and prints the per-image times side by side, their ratio, and the largest
difference between the two paths' maps and areas on the compared images
(it must be below 1e-6).

    python bench/bench_batch.py [--images 1000] [--compare 20]

The issue's target: 1,000 images in at most 10 minutes on 2 cores.
"""

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
from PIL import Image, ImageEnhance  # noqa: E402

import convviz_core  # noqa: E402
from convviz_core.cam.methods import class_activation_map  # noqa: E402
from convviz_core.metrics.deletion_insertion import deletion_insertion  # noqa: E402
from convviz_core.predictions import class_probabilities  # noqa: E402
from convviz_core.reports.batch import IMAGES_PER_POOL, explain_images  # noqa: E402
from bench_core import cpu_flags  # noqa: E402

STEPS = 32


def make_images(folder, count, seed=0):
    """Writes `count` JPEG variations of the sample photos to `folder`; returns their paths."""
    rng = np.random.default_rng(seed)
    photos = list(convviz_core.sample_images().items())
    paths = []
    for index in range(count):
        name, pixels = photos[index % len(photos)]
        picture = Image.fromarray(pixels)
        width, height = picture.size
        scale = rng.uniform(0.6, 1.0)
        crop_width, crop_height = int(width * scale), int(height * scale)
        left = int(rng.integers(0, width - crop_width + 1))
        top = int(rng.integers(0, height - crop_height + 1))
        picture = picture.crop((left, top, left + crop_width, top + crop_height))
        if rng.random() < 0.5:
            picture = picture.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        side = int(rng.integers(160, 400))
        picture = picture.resize((side, int(side * crop_height / crop_width)), Image.Resampling.BILINEAR)
        picture = ImageEnhance.Color(picture).enhance(rng.uniform(0.6, 1.4))
        picture = ImageEnhance.Brightness(picture).enhance(rng.uniform(0.8, 1.2))
        path = Path(folder, f"{index:04d}-{name}.jpg")
        picture.save(path, quality=90)
        paths.append(path)
    return paths


def one_image_path(model, path, layer):
    """What the dashboard computes for one image: its Grad-CAM map and the map's curves."""
    image = convviz_core.load_image(path)
    heatmap = class_activation_map(model, image, "grad-cam", layer_name=layer)
    probabilities = class_probabilities(model, image)
    curves = deletion_insertion(model, image, heatmap, int(np.argmax(probabilities)), layer, STEPS)
    return heatmap, curves


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--compare", type=int, default=20, help="images also run through the one-image path")
    parser.add_argument("--model", default="efficientnet-lite0")
    arguments = parser.parse_args()

    model = convviz_core.load_model(arguments.model)
    layer = model.default_cam_layer()
    with tempfile.TemporaryDirectory(prefix="convviz-bench-batch-") as folder:
        started = time.perf_counter()
        paths = make_images(folder, arguments.images)
        print(f"{len(paths)} JPEGs made in {time.perf_counter() - started:.1f} s; model {arguments.model}, "
              f"layer {layer}, Grad-CAM + deletion/insertion at {STEPS} steps, cores: {os.cpu_count()}")
        print(f"CPU: {cpu_flags()}; load average at the start: {os.getloadavg()[0]:.2f}")
        compared = paths[: arguments.compare]

        # Warm both paths up (tracing) on an image outside the timed ones.
        warm = make_images(Path(folder), 1, seed=99)
        one_image_path(model, warm[0], layer)
        list(explain_images(model, warm, methods=["grad-cam"], layer_name=layer, steps=STEPS, chance_seeds=()))

        # The compared images go through both paths in alternating blocks,
        # so that both see the same load on a shared machine.
        references, batched = [], []
        one_image_seconds = compared_batch_seconds = 0.0
        for start in range(0, len(compared), IMAGES_PER_POOL):
            block = compared[start : start + IMAGES_PER_POOL]
            started = time.perf_counter()
            references.extend(one_image_path(model, path, layer) for path in block)
            one_image_seconds += time.perf_counter() - started
            started = time.perf_counter()
            batched.extend(explain_images(model, block, methods=["grad-cam"], layer_name=layer, steps=STEPS,
                                          chance_seeds=()))
            compared_batch_seconds += time.perf_counter() - started
        started = time.perf_counter()
        batched.extend(explain_images(model, paths[len(compared) :], methods=["grad-cam"], layer_name=layer,
                                      steps=STEPS, chance_seeds=()))
        batch_seconds = compared_batch_seconds + time.perf_counter() - started
        one_image_seconds /= max(1, len(compared))
        compared_batch_seconds /= max(1, len(compared))

    failed = [result.name for result in batched if result.error]
    map_difference = max(
        float(np.abs(result.methods["grad-cam"].heatmap - heatmap).max())
        for result, (heatmap, _) in zip(batched, references)
    )
    area_difference = max(
        max(abs(result.methods["grad-cam"].curves.deletion_auc - curves.deletion_auc),
            abs(result.methods["grad-cam"].curves.insertion_auc - curves.insertion_auc))
        for result, (_, curves) in zip(batched, references)
    )
    per_image = batch_seconds / len(paths)
    print(f"batched path: {len(paths)} images in {batch_seconds:.1f} s ({batch_seconds / 60:.2f} min), "
          f"{per_image * 1000:.0f} ms per image; failed images: {len(failed)}")
    print(f"side by side on {len(compared)} of the images (alternating blocks of {IMAGES_PER_POOL}): one-image path "
          f"{one_image_seconds * 1000:.0f} ms per image, batched {compared_batch_seconds * 1000:.0f} ms per image, "
          f"ratio {one_image_seconds / compared_batch_seconds:.2f}x")
    print(f"largest difference on the compared images: map {map_difference:.2e}, area {area_difference:.2e} "
          f"({'equal to 1e-6' if max(map_difference, area_difference) <= 1e-6 else 'NOT equal to 1e-6'})")
    print(f"target: {len(paths)} images in <= 10 min: {'met' if batch_seconds <= 600 else 'NOT met'}; "
          f"load average at the end: {os.getloadavg()[0]:.2f} (other work on the machine slows every figure)")


if __name__ == "__main__":
    main()

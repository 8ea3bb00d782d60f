"""Renders the pictures of the README from the offline models (core only, no app).

    python tools/make_readme_images.py [--out docs/images]

Writes:
- gradcam_<sample>.png: photo | Grad-CAM heatmap | overlay, EfficientNet-Lite0,
  for every sample photo, titled with the top class.
- small_convnet_activations.png: the book's figure 5-27 for the small convnet
  (its first eight layers, every channel) on a generated picture.
- filters_<model>_<layer>.png: 8x8 filter-pattern atlases.
"""

import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import cv2  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

import convviz_core as core  # noqa: E402
from convviz_core.cam.gradcam import grad_cam_with_probabilities  # noqa: E402
from convviz_core.inputs.images import resize_to  # noqa: E402
from tools.synthetic import make_shapes_dataset  # noqa: E402


def save(path, pixels):
    Image.fromarray(pixels).save(path)
    print(f"wrote {path} {pixels.shape}")


def label_strip(text, width, height=28):
    strip = np.full((height, width, 3), 255, np.uint8)
    cv2.putText(strip, text, (6, height - 9), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (0, 0, 0), 1, cv2.LINE_AA)
    return strip


def gradcam_panels(model, out):
    for name, image in core.sample_images().items():
        heatmap, probabilities = grad_cam_with_probabilities(model, image)
        top = int(np.argmax(probabilities))
        shown = resize_to(image, (320, int(320 * image.shape[1] / image.shape[0])))
        placed = model.heatmap_on_input(model.default_cam_layer(), heatmap)
        panels = [shown, core.colorize(cv2.resize(placed, shown.shape[1::-1])), core.overlay(shown, placed)]
        gap = np.full((shown.shape[0], 6, 3), 255, np.uint8)
        row = np.concatenate([panels[0], gap, panels[1], gap, panels[2]], axis=1)
        title = f"{name}: {model.class_label(top)} ({probabilities[top]:.2f}), layer {model.default_cam_layer()}"
        save(os.path.join(out, f"gradcam_{name}.png"), np.concatenate([label_strip(title, row.shape[1]), row]))


def activation_figure(model, out):
    images, labels, _ = make_shapes_dataset(8, seed=2024)
    image = images[int(np.argmax(labels))]
    layers = model.layer_names[:8]
    values = core.activations(model, image, layers)
    blocks = []
    for layer in layers:
        grid = cv2.applyColorMap(core.activation_grid(values[layer]), cv2.COLORMAP_VIRIDIS)
        grid = cv2.cvtColor(grid, cv2.COLOR_BGR2RGB)
        scale = 1024 / grid.shape[1]
        grid = cv2.resize(grid, (1024, int(grid.shape[0] * scale)), interpolation=cv2.INTER_NEAREST)
        blocks += [label_strip(f"{layer}  {values[layer].shape}", 1024), grid]
    save(os.path.join(out, "small_convnet_input.png"), image)
    save(os.path.join(out, "small_convnet_activations.png"), np.concatenate(blocks))


def filter_atlas(model, layer, out, filters=64):
    start = time.perf_counter()
    patterns = core.filter_patterns(model, layer, range(filters))
    print(f"{model.name} {layer}: {filters} patterns in {time.perf_counter() - start:.1f} s")
    name = f"filters_{model.name}_{layer.replace('/', '_')}.png"
    save(os.path.join(out, name), core.pattern_grid(patterns))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="docs/images")
    parser.add_argument("--skip-filters", action="store_true")
    arguments = parser.parse_args()
    os.makedirs(arguments.out, exist_ok=True)
    lite = core.load_model("efficientnet-lite0")
    small = core.load_model("small-convnet")
    gradcam_panels(lite, arguments.out)
    activation_figure(small, arguments.out)
    if not arguments.skip_filters:
        for layer in ("conv2d_1", "conv2d_2", "conv2d_3", "conv2d_4"):
            filter_atlas(small, layer, arguments.out)
        filter_atlas(lite, "block3a_expand_conv", arguments.out, filters=16)


if __name__ == "__main__":
    main()

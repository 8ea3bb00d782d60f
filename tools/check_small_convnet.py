"""Checks the shipped small convnet on fresh images and draws pictures of it.

A development aid for `tools/train_small_convnet.py`, independent of ConvViz's
own Grad-CAM (`convviz_core.grad_cam`, which `tests/test_small_convnet.py`
checks): it measures held-out accuracy and the Grad-CAM "pointing game" (does
the heatmap's peak fall inside the object's bounding box?) with a minimal
batched Grad-CAM written out here, and saves

- `training_images.png`: 16 training images (decoys included) with their
  boxes and labels;
- `grad_cam_overlays.png`: Grad-CAM of the predicted class, in the jet
  colormap over held-out images, placed where each map pixel looks, with
  the box (green) and the peak (white); the first 12 images, then misses;

to an output folder outside the repository.

Usage (from the repository root):

    python tools/check_small_convnet.py --output-dir /tmp/small_convnet_check
"""

import argparse
import sys
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[1]
# Lets the script run from a plain checkout, before ConvViz is installed.
sys.path.insert(0, str(REPOSITORY))

import cv2  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from train_small_convnet import DECOY_FRACTION, TRAIN_SEED_BASE  # noqa: E402

from convviz_core.models.vision_model import VisionModel  # noqa: E402
from tools.synthetic import SHAPE_CLASS_NAMES, make_shapes_dataset  # noqa: E402

MODEL_PATH = REPOSITORY / "convviz_core" / "models" / "data" / "small_convnet.keras"
# Not a seed the training script draws from (it uses 7 and 1000 onwards).
HELD_OUT_SEED = 424242
CAM_LAYER = "conv2d_4"


def make_grad_cam_function(model, layer_name):
    """Builds a batched Grad-CAM of the predicted class for a sigmoid model.

    The score explained is the logit (the last Dense layer without its
    sigmoid), negated for images predicted as class 0.

    Args:
        model: The loaded small convnet (Sequential, ending in Dense(1, sigmoid)).
        layer_name: The convolution layer whose output is weighed.

    Returns:
        A function mapping a float32 batch of images in [0, 1] to
        `(heatmaps (n, h, w) >= 0, logits (n,))`.
    """
    layer_index = [layer.name for layer in model.layers].index(layer_name)
    feature_model = keras.Model(model.inputs, model.layers[layer_index].output)
    head_layers = model.layers[layer_index + 1:-1]
    final_dense = model.layers[-1]

    @tf.function
    def compute(images):
        features = feature_model(images, training=False)
        with tf.GradientTape() as tape:
            tape.watch(features)
            hidden = features
            for layer in head_layers:
                hidden = layer(hidden, training=False)
            logits = tf.matmul(hidden, final_dense.kernel) + final_dense.bias
            # Images in a batch do not interact, so the gradient of the summed
            # logits gives every image's own gradient.
            total = tf.reduce_sum(logits)
        gradients = tape.gradient(total, features)
        signs = tf.where(logits[:, 0] >= 0, 1.0, -1.0)[:, None, None, None]
        weights = tf.reduce_mean(signs * gradients, axis=(1, 2), keepdims=True)
        heatmaps = tf.nn.relu(tf.reduce_mean(features * weights, axis=-1))
        return heatmaps, logits[:, 0]

    return compute


def find_peaks(maps):
    """Returns the (row, column) of each image-sized map's first maximum, as int (n, 2)."""
    return np.array([np.unravel_index(np.argmax(values), values.shape) for values in maps])


def distances_outside(peaks, boxes):
    """Returns how far each peak lies outside its (top, left, bottom, right) box.

    Args:
        peaks: int array (n, 2) of (row, column).
        boxes: int array (n, 4), bottom and right exclusive.

    Returns:
        float array (n,) of pixel distances, 0 inside the box.
    """
    rows = np.maximum(np.maximum(boxes[:, 0] - peaks[:, 0], peaks[:, 0] - (boxes[:, 2] - 1)), 0)
    columns = np.maximum(
        np.maximum(boxes[:, 1] - peaks[:, 1], peaks[:, 1] - (boxes[:, 3] - 1)), 0
    )
    return np.hypot(rows, columns)


def draw_tile(image, box, colour=(0, 255, 0), caption=None, peak=None):
    """Returns a copy of `image` with its box, an optional caption and peak drawn."""
    tile = image.copy()
    top, left, bottom, right = (int(value) for value in box)
    cv2.rectangle(tile, (left, top), (right - 1, bottom - 1), colour, 1)
    if peak is not None:
        cv2.drawMarker(tile, (int(peak[1]), int(peak[0])), (255, 255, 255),
                       cv2.MARKER_CROSS, 12, 2)
    if caption:
        cv2.putText(tile, caption, (3, 12), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 3)
        cv2.putText(tile, caption, (3, 12), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1)
    return tile


def save_grid(tiles, columns, path):
    """Saves RGB tiles of one size as a PNG grid."""
    rows = [np.concatenate(tiles[start:start + columns], axis=1)
            for start in range(0, len(tiles), columns)]
    cv2.imwrite(str(path), cv2.cvtColor(np.concatenate(rows, axis=0), cv2.COLOR_RGB2BGR))


def main():
    """Loads the model, scores it on fresh images and saves the pictures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output-dir", type=Path, required=True)
    parser.add_argument("--count", type=int, default=400)
    arguments = parser.parse_args()
    arguments.output_dir.mkdir(parents=True, exist_ok=True)

    model = keras.saving.load_model(MODEL_PATH, compile=False, safe_mode=True)
    images, labels, boxes = make_shapes_dataset(arguments.count, seed=HELD_OUT_SEED)
    compute = make_grad_cam_function(model, CAM_LAYER)
    heatmaps, logits = [], []
    for start in range(0, len(images), 50):
        batch = tf.constant(images[start:start + 50].astype(np.float32) / 255.0)
        batch_heatmaps, batch_logits = compute(batch)
        heatmaps.append(batch_heatmaps.numpy())
        logits.append(batch_logits.numpy())
    heatmaps, logits = np.concatenate(heatmaps), np.concatenate(logits)
    predictions = (logits >= 0).astype(np.int64)
    size = images.shape[1]
    # The book's overlay resizes the map over the whole image; ConvViz places
    # each map pixel where it looks (core's layer geometry), which for this
    # network's unpadded layers moves it by up to 14 pixels.
    vision_model = VisionModel(model, class_names=SHAPE_CLASS_NAMES)
    placed = np.array([vision_model.heatmap_on_input(CAM_LAYER, heatmap) for heatmap in heatmaps])
    resized = np.array([cv2.resize(heatmap, (size, size)) for heatmap in heatmaps])
    # The peak is the centre of the map's highest pixel, where it looked
    # (`VisionModel.heatmap_peak`): the first maximum of the placed map would
    # land on the image border whenever an edge pixel is highest.
    peaks = np.array([vision_model.heatmap_peak(CAM_LAYER, heatmap) or (-1e3, -1e3)
                      for heatmap in heatmaps])
    distances = distances_outside(peaks, boxes)
    placed_distances = distances_outside(find_peaks(placed), boxes)
    resized_distances = distances_outside(find_peaks(resized), boxes)
    hits = distances == 0
    print(f"held-out accuracy: {np.mean(predictions == labels):.4f} on {len(labels)} images")
    print(f"pointing game ({CAM_LAYER}, predicted class, peak pixel centre): inside the box "
          f"{hits.mean():.4f}, within 15 pixels {np.mean(distances <= 15):.4f}")
    print(f"  first maximum of the placed map instead: inside {np.mean(placed_distances == 0):.4f}, "
          f"within 15 pixels {np.mean(placed_distances <= 15):.4f}")
    print(f"  first maximum of a plain resize instead: inside {np.mean(resized_distances == 0):.4f}, "
          f"within 15 pixels {np.mean(resized_distances <= 15):.4f}")
    for index, name in enumerate(SHAPE_CLASS_NAMES):
        chosen = labels == index
        print(f"  {name}: accuracy {np.mean(predictions[chosen] == index):.4f}, "
              f"inside {hits[chosen].mean():.4f} ({chosen.sum()} images)")
    flat = heatmaps.reshape(len(heatmaps), -1).max(axis=1) <= 0
    print(f"  all-zero heatmaps: {flat.sum()}")
    print(f"  misses: {np.flatnonzero(~hits)[:20].tolist()}")

    train_images, train_labels, train_boxes = make_shapes_dataset(
        16, seed=TRAIN_SEED_BASE, decoy_fraction=DECOY_FRACTION
    )
    save_grid(
        [draw_tile(image, box, caption=SHAPE_CLASS_NAMES[label] if label >= 0 else "decoy")
         for image, label, box in zip(train_images, train_labels, train_boxes)],
        4, arguments.output_dir / "training_images.png",
    )
    # The first images, then every miss, so the failures can be looked at too.
    shown = list(range(12)) + np.flatnonzero(~hits)[:8].tolist()
    tiles = []
    for index in shown:
        heatmap = placed[index] / max(float(placed[index].max()), 1e-12)
        colours = cv2.applyColorMap(np.uint8(255 * heatmap), cv2.COLORMAP_JET)
        blended = np.clip(
            cv2.cvtColor(colours, cv2.COLOR_BGR2RGB) * 0.4 + images[index], 0, 255
        ).astype(np.uint8)
        probability = 1.0 / (1.0 + np.exp(-logits[index]))
        caption = f"#{index} {SHAPE_CLASS_NAMES[predictions[index]]} p1={probability:.2f}"
        tiles.append(np.concatenate([
            draw_tile(images[index], boxes[index], caption=caption),
            draw_tile(blended, boxes[index], peak=peaks[index]),
        ], axis=1))
    while len(tiles) % 4:
        tiles.append(np.zeros_like(tiles[0]))
    save_grid(tiles, 4, arguments.output_dir / "grad_cam_overlays.png")
    print(f"saved pictures to {arguments.output_dir}")


if __name__ == "__main__":
    main()

"""Trains the book's small convnet (§5.2) on ConvViz's synthetic discs and crosses.

The book's §5.4.1 visualises the activations of the small convnet it trained
from scratch on cats and dogs in §5.2. Those photos are not available offline,
so this script trains exactly the same architecture on images drawn by
`tools.synthetic.make_shapes_dataset` and ships the result as
`convviz_core/models/data/small_convnet.keras`, with its class names in
`convviz_core/models/data/small_convnet_classes.json`.

Every epoch sees freshly drawn images (seed `TRAIN_SEED_BASE + epoch`), which
does what the book's data augmentation did -- the network never sees an image
twice -- without a separate augmentation step. Held-out accuracy is measured
on images drawn with `VALIDATION_SEED`, with objects anywhere in the image;
`tests/test_small_convnet.py` uses yet another seed, which this script never
draws from.

The objects start centred and spread out over the epochs (`POSITION_SPREADS`).
The book's convnet ends in Flatten + Dense, so its last layers must learn each
of the 7×7 positions separately: trained on objects anywhere from the start,
it was still at chance level after 10,000 images in our runs, while on
centred objects it reaches about 95% training accuracy within 5,000 images and
then carries the shapes it learned to other positions.

Usage (from the repository root; 15 to 20 minutes on two CPU cores shared
with other work, about 40 images a second):

    python tools/train_small_convnet.py
"""

import argparse
import json
import sys
import time
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[1]
# Lets the script run from a plain checkout, before ConvViz is installed.
sys.path.insert(0, str(REPOSITORY))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from tools.synthetic import (  # noqa: E402
    DECOY_LABEL,
    SHAPE_CLASS_NAMES,
    make_shapes_dataset,
)

MODEL_PATH = REPOSITORY / "convviz_core" / "models" / "data" / "small_convnet.keras"
CLASSES_PATH = REPOSITORY / "convviz_core" / "models" / "data" / "small_convnet_classes.json"
# Training draws from seeds TRAIN_SEED_BASE, TRAIN_SEED_BASE + 1, ... (one per
# epoch); held-out images come from VALIDATION_SEED, outside that range.
TRAIN_SEED_BASE = 1000
VALIDATION_SEED = 7
WEIGHT_SEED = 42
# Per epoch, how far from the centre objects may be (see make_shapes_dataset).
POSITION_SPREADS = (0.0, 0.0, 0.3, 0.6, 0.8) + (1.0,) * 11
# 30% of the training images show a decoy (a bar, an L, a T, a broken cross,
# a square, a triangle or no object) instead of a disc or a cross, with the target 0.5
# (see make_shapes_dataset's decoy_fraction).
DECOY_FRACTION = 0.3
DECOY_TARGET = 0.5
IMAGE_SIZE = 150
# The book's model is 13.8 MB of float32 weights; the issue caps the file.
MAX_MODEL_BYTES = 15 * 1024 * 1024


def build_small_convnet():
    """Builds the book's §5.2 convnet for 150×150 RGB images scaled to [0, 1].

    The layers and their order are the book's, so its activation figure
    (four conv and four pooling layers) can be reproduced layer by layer. The
    names are explicit so they do not depend on how many models were built
    before in the same process.

    Returns:
        An uncompiled `keras.Sequential` with 3,453,121 parameters whose output
        is the sigmoid probability of class 1 (`SHAPE_CLASS_NAMES[1]`).
    """
    layers = keras.layers
    return keras.Sequential(
        [
            keras.Input((IMAGE_SIZE, IMAGE_SIZE, 3)),
            layers.Conv2D(32, (3, 3), activation="relu", name="conv2d_1"),
            layers.MaxPooling2D((2, 2), name="max_pooling2d_1"),
            layers.Conv2D(64, (3, 3), activation="relu", name="conv2d_2"),
            layers.MaxPooling2D((2, 2), name="max_pooling2d_2"),
            layers.Conv2D(128, (3, 3), activation="relu", name="conv2d_3"),
            layers.MaxPooling2D((2, 2), name="max_pooling2d_3"),
            layers.Conv2D(128, (3, 3), activation="relu", name="conv2d_4"),
            layers.MaxPooling2D((2, 2), name="max_pooling2d_4"),
            layers.Flatten(name="flatten"),
            layers.Dropout(0.5, name="dropout"),
            layers.Dense(512, activation="relu", name="dense_1"),
            layers.Dense(1, activation="sigmoid", name="dense_2"),
        ],
        name="small_convnet",
    )


def make_batches(images, labels, batch_size):
    """Returns a `tf.data.Dataset` of `(images / 255, targets)` batches.

    The images stay uint8 in memory and are scaled batch by batch, the way the
    book's `ImageDataGenerator(rescale=1./255)` fed its model. The target is
    the label (0 or 1), or `DECOY_TARGET` for a decoy.

    Args:
        images: uint8 array of shape `(n, 150, 150, 3)`.
        labels: Integer array of shape `(n,)` from `make_shapes_dataset`.
        batch_size: Images per batch.

    Returns:
        The dataset, prefetching one batch ahead.
    """
    targets = np.where(labels == DECOY_LABEL, DECOY_TARGET, labels).astype(np.float32)
    dataset = tf.data.Dataset.from_tensor_slices((images, targets))
    return (
        dataset.batch(batch_size)
        .map(lambda batch, target: (tf.cast(batch, tf.float32) / 255.0, target))
        .prefetch(1)
    )


def train(position_spreads, images_per_epoch, batch_size, validation_count):
    """Trains the small convnet on freshly drawn images every epoch.

    Args:
        position_spreads: One `position_spread` of `make_shapes_dataset` per
            epoch.
        images_per_epoch: Newly drawn training images per epoch.
        batch_size: Images per gradient step.
        validation_count: Number of held-out images drawn with `VALIDATION_SEED`.

    Returns:
        A tuple `(model, held_out_accuracy)` with the trained (compiled) model.
    """
    epochs = len(position_spreads)
    keras.utils.set_random_seed(WEIGHT_SEED)
    model = build_small_convnet()
    steps_per_epoch = -(-images_per_epoch // batch_size)
    # Cosine decay lets the early epochs move fast and the last ones settle.
    learning_rate = keras.optimizers.schedules.CosineDecay(
        3e-4, decay_steps=epochs * steps_per_epoch, alpha=0.05
    )
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss="binary_crossentropy",
        metrics=["accuracy"],
    )
    validation_images, validation_labels, _ = make_shapes_dataset(
        validation_count, seed=VALIDATION_SEED
    )
    validation = make_batches(validation_images, validation_labels, 100)
    accuracy = float("nan")
    for epoch, position_spread in enumerate(position_spreads):
        started = time.perf_counter()
        images, labels, _ = make_shapes_dataset(
            images_per_epoch,
            seed=TRAIN_SEED_BASE + epoch,
            position_spread=position_spread,
            decoy_fraction=DECOY_FRACTION,
        )
        drawn = time.perf_counter()
        # The images are independent draws, so their order is already random.
        history = model.fit(
            make_batches(images, labels, batch_size), epochs=1, shuffle=False, verbose=0
        )
        _, accuracy = model.evaluate(validation, verbose=0)
        print(
            f"epoch {epoch + 1}/{epochs} (spread {position_spread:.1f}): "
            f"loss {history.history['loss'][-1]:.4f}, "
            f"held-out accuracy {accuracy:.4f} "
            f"(drawing {drawn - started:.0f} s, training {time.perf_counter() - drawn:.0f} s)",
            flush=True,
        )
    return model, float(accuracy)


def save_without_optimizer(model, path):
    """Saves only the architecture and weights of `model` to `path`.

    Keras 3 stores the optimizer's state in a compiled model's `.keras` file,
    and Adam's two moment estimates would triple the file; an uncompiled copy
    with the same weights keeps it at the size of the weights alone.

    Args:
        model: The trained model.
        path: The `.keras` file to write.

    Returns:
        The size of the written file in bytes.
    """
    inference_model = build_small_convnet()
    inference_model.set_weights(model.get_weights())
    path.parent.mkdir(parents=True, exist_ok=True)
    inference_model.save(path)
    return path.stat().st_size


def main():
    """Parses the command line, trains, checks and saves the model."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images-per-epoch", type=int, default=2500)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--validation-count", type=int, default=600)
    arguments = parser.parse_args()

    started = time.perf_counter()
    model, accuracy = train(
        POSITION_SPREADS,
        arguments.images_per_epoch,
        arguments.batch_size,
        arguments.validation_count,
    )
    size = save_without_optimizer(model, MODEL_PATH)
    CLASSES_PATH.write_text(
        json.dumps(
            {
                "class_names": SHAPE_CLASS_NAMES,
                "preprocess": "pixels / 255",
                "output": "sigmoid probability of class_names[1]",
                "generator": "tools.synthetic.make_shapes_dataset",
                "train_seeds": [TRAIN_SEED_BASE, TRAIN_SEED_BASE + len(POSITION_SPREADS) - 1],
                "validation_seed": VALIDATION_SEED,
                "decoy_fraction": DECOY_FRACTION,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"held-out accuracy: {accuracy:.4f} on {arguments.validation_count} images")
    print(f"saved {MODEL_PATH.relative_to(REPOSITORY)}: {size / 1e6:.2f} MB")
    print(f"total time: {time.perf_counter() - started:.0f} s")
    if size > MAX_MODEL_BYTES:
        raise SystemExit(
            f"The model file is {size} bytes, over the {MAX_MODEL_BYTES}-byte limit."
        )


if __name__ == "__main__":
    main()

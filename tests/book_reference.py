"""The book's own code, as references the tests compare ConvViz against.

Tests import this module by name (pytest puts `tests/` on the import path).
"""

import keras
import tensorflow as tf

# Layer names of the book's §5.2 convnet as its printed summary (§5.4.1) shows them.
BOOK_SUMMARY_NAMES = (
    "conv2d_5", "max_pooling2d_5", "conv2d_6", "max_pooling2d_6",
    "conv2d_7", "max_pooling2d_7", "conv2d_8", "max_pooling2d_8",
    "flatten_2", "dropout_1", "dense_3", "dense_4",
)  # fmt: skip


def book_small_convnet(names=BOOK_SUMMARY_NAMES, name="sequential_2"):
    """The book's small convnet for cats and dogs (listing 5.5), random weights.

    Args:
        names: Twelve layer names, in order.
        name: The model's name.
    """
    if len(names) != 12:
        raise ValueError(f"The book's convnet has 12 layers. Received {len(names)} names.")
    name_of = iter(names)

    def conv(filters):
        return keras.layers.Conv2D(filters, 3, activation="relu", name=next(name_of))

    def pool():
        return keras.layers.MaxPooling2D(2, name=next(name_of))

    layers = [conv(32), pool(), conv(64), pool(), conv(128), pool(), conv(128), pool()]
    layers += [
        keras.layers.Flatten(name=next(name_of)),
        keras.layers.Dropout(0.5, name=next(name_of)),
        keras.layers.Dense(512, activation="relu", name=next(name_of)),
        keras.layers.Dense(1, activation="sigmoid", name=next(name_of)),
    ]
    return keras.Sequential([keras.Input((150, 150, 3)), *layers], name=name)


def book_pattern(layer_model, preprocess, filter_index, start, steps, step_size):
    """The book's loop (listing 5.38), eagerly, one filter at a time.

    The image is optimised in pixel space and the model's preprocessing is
    applied to it inside the tape, as ConvViz does.

    Args:
        layer_model: A model from the input to the layer.
        preprocess: The model's preprocessing.
        filter_index: The filter to maximise.
        start: float32 (height, width, 3), the start image.
        steps: Gradient-ascent steps.
        step_size: Size of each step.

    Returns:
        float32 (height, width, 3), the optimised image.
    """
    image = tf.constant(start[None], tf.float32)
    for _ in range(steps):
        with tf.GradientTape() as tape:
            tape.watch(image)
            loss = tf.reduce_mean(layer_model(preprocess(image))[:, :, :, filter_index])
        grads = tape.gradient(loss, image)
        grads /= tf.sqrt(tf.reduce_mean(tf.square(grads))) + 1e-5
        image = image + grads * step_size
    return image.numpy()[0]

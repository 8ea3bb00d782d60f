"""Intermediate activations (book §5.4.1): every channel of the chosen layers."""

import numpy as np
import tensorflow as tf

# Tracing counter for tests: each new trace of a compiled view function adds one.
TRACE_COUNTS = {"activations": 0}


def _build_activation_function(model, layer_names):
    height, width = model.input_size

    @tf.function(
        input_signature=[tf.TensorSpec((None, height, width, 3), tf.uint8)],
        autograph=False,
    )
    def compute(images):
        TRACE_COUNTS["activations"] += 1
        captured, _ = model.plan.run(model.preprocess(images), taps=layer_names)
        return [tf.cast(captured[name], tf.float32) for name in layer_names]

    return compute


def activations(model, image, layer_names):
    """Computes the outputs of several layers for one image in one forward pass.

    As in the book, this is what a model from the input to the chosen layers'
    outputs computes; the pass stops at the deepest chosen layer, and layers
    inside nested models are reached too.

    Args:
        model: A `VisionModel`.
        image: RGB uint8 array (height, width, 3) of any size; it is resized to
            the model's input size.
        layer_names: Names from `model.layer_names`.

    Returns:
        {layer name: float32 array (height, width, channels)}.

    Raises:
        InputError: If a name is not a layer with a 4-D output, or the image is
            not an RGB uint8 array.
    """
    layer_names = tuple(dict.fromkeys(layer_names))
    for name in layer_names:
        model.layer_info(name)
    batch = model.prepare(image)
    compute = model.cached_function(
        ("activations", layer_names), lambda: _build_activation_function(model, layer_names)
    )
    outputs = compute(tf.constant(batch))
    return {name: output.numpy()[0] for name, output in zip(layer_names, outputs)}


def standardize_channels(activation):
    """Maps every channel of an activation to uint8 as the book displays it.

    Each channel is standardised (minus its mean, divided by its standard
    deviation), multiplied by 64, shifted by 128 and clipped to [0, 255]. A
    channel with no variation (a dead filter) becomes flat gray (128), never NaN.

    Args:
        activation: float array (height, width, channels).

    Returns:
        uint8 array (height, width, channels).
    """
    values = np.asarray(activation, dtype=np.float64)
    means = values.mean(axis=(0, 1))
    stds = values.std(axis=(0, 1))
    live = _varies(stds)
    scaled = (values - means) / np.where(live, stds, 1.0) * 64 + 128
    scaled = np.clip(np.nan_to_num(scaled, nan=128.0), 0, 255).astype(np.uint8)
    scaled[:, :, ~live] = 128
    return scaled


def activation_grid(activation, images_per_row=16):
    """Tiles every channel of one layer's activation into one picture (book fig. 5-27).

    Each channel is standardised as in the book (`standardize_channels`). Unlike
    the book, which drops channels that do not fill a whole row, every channel
    is shown: the last row is padded with black.

    Args:
        activation: float array (height, width, channels) of one image.
        images_per_row: Channels per row of the grid.

    Returns:
        uint8 array (rows * height, images_per_row * width).

    Raises:
        ValueError: If `activation` is not 3-D or `images_per_row` < 1.
    """
    activation = np.asarray(activation)
    if activation.ndim != 3:
        raise ValueError(
            f"activation must have shape (height, width, channels). Received: {activation.shape}"
        )
    if images_per_row < 1:
        raise ValueError(f"images_per_row must be at least 1. Received: {images_per_row}")
    height, width, channels = activation.shape
    columns = min(images_per_row, channels)
    rows = -(-channels // columns)
    scaled = standardize_channels(activation)
    grid = np.zeros((rows * height, columns * width), dtype=np.uint8)
    for index in range(channels):
        row, column = divmod(index, columns)
        grid[row * height : (row + 1) * height, column * width : (column + 1) * width] = scaled[
            :, :, index
        ]
    return grid


def dead_channels(activation):
    """Returns the indices of channels that do not vary over the image.

    After a ReLU that means a filter that never fired for this image (zero
    everywhere); such channels show as flat gray in the grid.

    Args:
        activation: float array (height, width, channels) of one image.

    Returns:
        int array of channel indices.
    """
    stds = np.asarray(activation, dtype=np.float64).std(axis=(0, 1))
    return np.flatnonzero(~_varies(stds))


def _varies(stds):
    """Which channels have a usable (finite, non-zero) standard deviation."""
    return np.isfinite(stds) & (stds >= 1e-12)

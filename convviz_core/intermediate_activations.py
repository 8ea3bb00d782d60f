"""Intermediate activations (book §5.4.1): every channel of the chosen layers."""

import keras
import numpy as np
import tensorflow as tf

# Tracing counter for tests: each new trace of a compiled view function adds one.
TRACE_COUNTS = {"activations": 0}
# The layers are cut into this many runs, one compiled function each (see `activations`).
DEPTH_SEGMENTS = 4


def _build_activation_function(model, taps):
    height, width = model.input_size

    @tf.function(
        input_signature=[
            tf.TensorSpec((None, height, width, 3), tf.uint8),
            tf.TensorSpec((len(taps),), tf.bool),
        ],
        autograph=False,
    )
    def compute(images, wanted):
        TRACE_COUNTS["activations"] += 1
        captured, _ = model.plan.run(model.preprocess(images), taps=taps)
        outputs = []
        for index, name in enumerate(taps):
            tensor = captured[name]
            # The whole batch of a wanted layer, an empty one of the others: only
            # the chosen activations leave the graph and are copied.
            keep = tf.where(wanted[index], tf.shape(tensor)[0], 0)
            outputs.append(tf.cast(tensor[:keep], tf.float32))
        return outputs

    return compute


def activations(model, image, layer_names):
    """Computes the outputs of some layers for one image in one forward pass.

    As in the book, this is what a model from the input to the chosen layers'
    outputs computes, and layers inside nested models are reached too. The
    model's layers are cut into `DEPTH_SEGMENTS` runs of consecutive layers;
    one compiled function per run (built on first use) computes the graph up
    to the run's last layer and returns only the layers asked for (the
    choice is a tensor). So moving the layer slider never traces a new graph
    after the first visit of each run, a shallow layer costs only the layers
    before its run's end, and no unwanted activation is copied out.

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
    batch = model.prepare(image)
    return {name: values[0] for name, values in batch_activations(model, batch, layer_names).items()}


def batch_activations(model, batch, layer_names):
    """Computes the outputs of some layers for a batch of images at the model's input size.

    Args:
        model: A `VisionModel`.
        batch: uint8 array (n, input height, input width, 3), e.g. stacked
            `model.prepare(image)` batches.
        layer_names: Names from `model.layer_names`.

    Returns:
        {layer name: float32 array (n, height, width, channels)}.

    Raises:
        InputError: If a name is not a layer with a 4-D output.
    """
    layer_names = tuple(dict.fromkeys(layer_names))
    for name in layer_names:
        model.layer_info(name)
    if not layer_names:
        return {}
    names = model.layer_names
    positions = {name: index for index, name in enumerate(names)}
    deepest = max(positions[name] for name in layer_names)
    segment_length = -(-len(names) // DEPTH_SEGMENTS)
    end = min(len(names), (deepest // segment_length + 1) * segment_length)
    taps = tuple(names[:end])
    compute = model.cached_function(
        ("activations", end), lambda: _build_activation_function(model, taps)
    )
    wanted = np.zeros(len(taps), dtype=bool)
    wanted[[positions[name] for name in layer_names]] = True
    outputs = compute(tf.constant(np.asarray(batch, np.uint8)), tf.constant(wanted))
    return {name: outputs[positions[name]].numpy() for name in layer_names}


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


def overview_layers(model, count=8):
    """Chooses the layers of the overview, the book's figure 5-27.

    The book shows the first eight layers of its small convnet: each
    convolution (with its ReLU) and each pooling layer. A model with more
    layers gets `count` of those layers spread evenly from the first to the
    last, so the overview still runs from edges to abstract features; layers
    that only rescale (batch norms, linear convolutions) are skipped when
    there are enough of the others.

    Args:
        model: A `VisionModel`.
        count: How many layers to show.

    Returns:
        A list of at most `count` names from `model.layer_names`, in order.
    """
    names = list(model.layer_names)
    if len(names) <= count:
        return names
    shown = [name for name in names if _is_nonlinear(model.layer_info(name).layer)]
    if len(shown) < count:
        shown = names
    positions = np.linspace(0, len(shown) - 1, count).round().astype(int)
    return [shown[position] for position in dict.fromkeys(positions.tolist())]


def _is_nonlinear(layer):
    """Whether a layer ends in a nonlinearity or pools, as the book's layers do."""
    if isinstance(layer, (keras.layers.ReLU, keras.layers.Activation, keras.layers.LeakyReLU)):
        return True
    if isinstance(
        layer,
        (keras.layers.MaxPooling2D, keras.layers.AveragePooling2D),
    ):
        return True
    activation = getattr(getattr(layer, "activation", None), "__name__", "linear")
    return activation != "linear"


def channel_map(activation, channel):
    """Scales one channel to [0, 1] to show where on the image it fires.

    Negative values (below a ReLU's threshold) become 0 and the maximum 1; a
    channel that never fires gives an all-zero map, never NaN.

    Args:
        activation: float array (height, width, channels) of one image.
        channel: The channel's index.

    Returns:
        float32 array (height, width) in [0, 1].

    Raises:
        ValueError: If `activation` is not 3-D or `channel` is out of range.
    """
    activation = np.asarray(activation)
    if activation.ndim != 3:
        raise ValueError(
            f"activation must have shape (height, width, channels). Received: {activation.shape}"
        )
    if not 0 <= int(channel) < activation.shape[-1]:
        raise ValueError(
            f"channel must be in 0..{activation.shape[-1] - 1}. Received: channel={channel}"
        )
    values = np.maximum(np.nan_to_num(activation[:, :, int(channel)].astype(np.float64)), 0.0)
    peak = values.max()
    if peak <= 1e-12:
        return np.zeros(values.shape, dtype=np.float32)
    return (values / peak).astype(np.float32)


def most_active_channel(activation, channels):
    """Returns the channel, among some, that responds most to this image.

    "Most" is the largest mean activation over the feature map, the quantity
    whose gradient ascent draws a filter's pattern; ties go to the first.

    Args:
        activation: float array (height, width, channels) of one image.
        channels: Candidate channel indices (e.g. the filters of an atlas).

    Returns:
        One of `channels`.

    Raises:
        ValueError: If `channels` is empty.
    """
    channels = [int(channel) for channel in channels]
    if not channels:
        raise ValueError("channels must not be empty.")
    means = np.nan_to_num(np.asarray(activation, dtype=np.float64).mean(axis=(0, 1)), nan=-np.inf)
    return channels[int(np.argmax(means[channels]))]

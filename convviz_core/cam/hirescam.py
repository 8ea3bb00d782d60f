"""HiResCAM: the gradient times the feature map, pixel by pixel."""

import numpy as np

from convviz_core.cam.base import CamMethod


def hires_cam_raw_map(layer_pass):
    """HiResCAM before the ReLU: sum over channels of g x A, pixel by pixel.

    Draelos and Carin, "Use HiResCAM instead of Grad-CAM for faithful
    explanations of convolutional neural networks", arXiv:2011.08891, 2020.
    As in pytorch-grad-cam 1.5.7 (`HiResCAM`), which, like for every method,
    applies the ReLU to the sum. When the layer is followed only by global
    average pooling and a dense layer, HiResCAM equals Grad-CAM.
    """
    features = np.asarray(layer_pass.features, np.float64)
    gradients = np.asarray(layer_pass.gradients, np.float64)
    return (gradients * features).sum(axis=-1)


HIRES_CAM = CamMethod(
    name="hires-cam",
    title="HiResCAM",
    needs_gradients=True,
    description="Gradient times activation pixel by pixel: shows exactly what raised the score at this layer.",
    paper="Draelos and Carin, HiResCAM, arXiv:2011.08891",
    raw_map=hires_cam_raw_map,
)

"""XGrad-CAM: channel weights from gradients weighted by the normalised activation."""

import numpy as np

from convviz_core.cam.base import CamMethod, weighted_sum

# pytorch-grad-cam 1.5.7's epsilon in the activation sum.
EPSILON = 1e-7


def xgrad_cam_weights(features, gradients):
    """XGrad-CAM's channel weights: w_k = sum_ij g_kij A_kij / (sum_ab A_kab + 1e-7).

    Args:
        features: float array (height, width, channels).
        gradients: float array (height, width, channels).

    Returns:
        float64 array (channels,).
    """
    features = np.asarray(features, np.float64)
    gradients = np.asarray(gradients, np.float64)
    activation_sums = features.sum(axis=(0, 1))
    return (gradients * features).sum(axis=(0, 1)) / (activation_sums + EPSILON)


def xgrad_cam_raw_map(layer_pass):
    """XGrad-CAM before the ReLU.

    Fu, Hu, Zhang, Yang, Zhu and Sun, "Axiom-based Grad-CAM: Towards Accurate
    Visualization and Explanation of CNNs", BMVC 2020 (arXiv:2008.02312).
    Paper and pytorch-grad-cam 1.5.7 (`XGradCAM`) agree; the library adds
    1e-7 to the activation sum, and so does ConvViz.
    """
    return weighted_sum(
        layer_pass.features, xgrad_cam_weights(layer_pass.features, layer_pass.gradients)
    )


XGRAD_CAM = CamMethod(
    name="xgrad-cam",
    title="XGrad-CAM",
    needs_gradients=True,
    description="Gradients weighted by the channel's normalised activation (derived from two axioms).",
    paper="Fu et al., Axiom-based Grad-CAM, BMVC 2020",
    raw_map=xgrad_cam_raw_map,
)

"""Layer-CAM: every feature-map pixel weighted by its own positive gradient."""

import numpy as np

from convviz_core.cam.base import CamMethod


def layer_cam_raw_map(layer_pass):
    """Layer-CAM before the ReLU: sum over channels of relu(g) x A, pixel by pixel.

    Jiang, Zhang, Hou, Cheng and Wei, "LayerCAM: Exploring Hierarchical Class
    Activation Maps for Localization", IEEE Transactions on Image Processing
    30, 2021. As in pytorch-grad-cam 1.5.7 (`LayerCAM`): one layer at a time,
    without the paper's tanh scaling of shallow layers (which the paper uses
    only to fuse maps of several layers).
    """
    features = np.asarray(layer_pass.features, np.float64)
    gradients = np.asarray(layer_pass.gradients, np.float64)
    return (np.maximum(gradients, 0) * features).sum(axis=-1)


LAYER_CAM = CamMethod(
    name="layer-cam",
    title="Layer-CAM",
    needs_gradients=True,
    description="Each pixel weighted by its own positive gradient; keeps detail at shallow layers.",
    paper="Jiang et al., LayerCAM, IEEE TIP 2021",
    raw_map=layer_cam_raw_map,
)

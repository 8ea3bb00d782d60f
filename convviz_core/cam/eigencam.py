"""Eigen-CAM: the first principal component of the layer's feature maps."""

import numpy as np

from convviz_core.cam.base import CamMethod


def eigen_cam_raw_map(layer_pass):
    """Eigen-CAM before the ReLU: the features projected on their first principal direction.

    Muhammad and Yeasin, "Eigen-CAM: Class Activation Map using Principal
    Components", IJCNN 2020 (arXiv:2008.00299). As in pytorch-grad-cam 1.5.7
    (`EigenCAM`, `get_2d_projection`): the (pixels x channels) matrix is
    centred on its channel means (the paper does not centre), NaN set to zero,
    and projected on the first right-singular vector, in float32. The sign of
    a singular vector is arbitrary; like the library, ConvViz keeps the one
    LAPACK returns, so a map can come out as the complement of the object
    (and after the ReLU, as the background). The map ignores the class.
    """
    features = np.array(layer_pass.features, dtype=np.float32)
    height, width, channels = features.shape
    matrix = np.nan_to_num(features.reshape(height * width, channels), nan=0.0)
    matrix = matrix - matrix.mean(axis=0)
    # The reduced SVD gives the same first singular vector (and sign) as the
    # library's full one, without a (pixels x pixels) matrix.
    _, _, right_vectors = np.linalg.svd(matrix, full_matrices=False)
    return (matrix @ right_vectors[0]).reshape(height, width)


EIGEN_CAM = CamMethod(
    name="eigen-cam",
    title="Eigen-CAM",
    needs_gradients=False,
    description="The main pattern of the layer's activations (class-agnostic, no gradients).",
    paper="Muhammad and Yeasin, Eigen-CAM, IJCNN 2020",
    raw_map=eigen_cam_raw_map,
    class_specific=False,
)

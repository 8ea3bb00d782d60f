"""Grad-CAM++: channel weights from pixel-wise weighted positive gradients."""

import numpy as np

from convviz_core.cam.base import CamMethod, weighted_sum

# pytorch-grad-cam 1.5.7's epsilon in the denominator of alpha (it matters:
# gradients at a deep layer are small, so their squares are near 1e-6).
EPSILON = 1e-6


def grad_cam_plus_plus_weights(features, gradients):
    """Grad-CAM++'s channel weights.

    w_k = sum_ij relu(g_kij) a_kij with a_kij = g^2 / (2 g^2 + sum_ab A_kab g^3
    + 1e-6), and a_kij = 0 where g_kij = 0 (g = d score / d A).

    Args:
        features: float array (height, width, channels).
        gradients: float array (height, width, channels).

    Returns:
        float64 array (channels,).
    """
    features = np.asarray(features, np.float64)
    gradients = np.asarray(gradients, np.float64)
    squares = gradients**2
    cubes = squares * gradients
    activation_sums = features.sum(axis=(0, 1))
    alphas = squares / (2 * squares + activation_sums * cubes + EPSILON)
    alphas = np.where(gradients != 0, alphas, 0.0)
    return (np.maximum(gradients, 0) * alphas).sum(axis=(0, 1))


def grad_cam_plus_plus_raw_map(layer_pass):
    """Grad-CAM++ before the ReLU.

    Chattopadhay, Sarkar, Howlader and Balasubramanian, "Grad-CAM++:
    Generalized Gradient-based Visual Explanations for Deep Convolutional
    Networks", WACV 2018 (arXiv:1710.11063), equation 19. As in
    pytorch-grad-cam 1.5.7 (`GradCAMPlusPlus`): the paper derives eq. 19 for
    the exponential of the class score, whose higher derivatives are powers of
    the first one; the library uses those powers of the plain score's gradient
    (before the softmax), adds 1e-6 to the denominator, and zeroes alpha
    where the gradient (not, as its comment says, the activation) is zero.
    """
    return weighted_sum(
        layer_pass.features, grad_cam_plus_plus_weights(layer_pass.features, layer_pass.gradients)
    )


GRAD_CAM_PLUS_PLUS = CamMethod(
    name="grad-cam++",
    title="Grad-CAM++",
    needs_gradients=True,
    description="Positive gradients weighted pixel by pixel; better when an object appears several times.",
    paper="Chattopadhay et al., Grad-CAM++, WACV 2018",
    raw_map=grad_cam_plus_plus_raw_map,
)

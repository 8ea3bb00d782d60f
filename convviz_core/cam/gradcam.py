"""Grad-CAM (book §5.4.3), and the `grad_cam` shortcut the views have always used."""

from convviz_core.cam.base import CamMethod, grad_cam_weights, normalize_map, weighted_sum
from convviz_core.cam.passes import TRACE_COUNTS, run_layer_pass

# `combine_channels` (once `class_activation_map(features, gradients)`) and
# `grad_cam_weights` lived here; they stay importable from here.
from convviz_core.cam.base import combine_channels  # noqa: F401, E402

__all__ = [
    "GRAD_CAM",
    "TRACE_COUNTS",
    "combine_channels",
    "grad_cam",
    "grad_cam_weights",
    "grad_cam_with_probabilities",
]


def grad_cam_raw_map(layer_pass):
    """Grad-CAM before the ReLU: sum over channels of (mean gradient) x feature map.

    Selvaraju et al., "Grad-CAM: Visual Explanations from Deep Networks via
    Gradient-based Localization", ICCV 2017. pytorch-grad-cam 1.5.7
    (`GradCAM.get_cam_weights`) and the paper agree: the weight of channel k
    is the spatial mean of d score / d A_k, the score being the class score
    before the softmax. (ConvViz used the mean over channels instead of the
    sum before; after dividing by the maximum the two are the same map.)
    """
    return weighted_sum(layer_pass.features, grad_cam_weights(None, layer_pass.gradients))


GRAD_CAM = CamMethod(
    name="grad-cam",
    title="Grad-CAM",
    needs_gradients=True,
    description="Each channel weighted by its gradient averaged over space (the book's method).",
    paper="Selvaraju et al., Grad-CAM, ICCV 2017",
    raw_map=grad_cam_raw_map,
)


def grad_cam(model, image, class_index=None, layer_name=None):
    """Computes the Grad-CAM heatmap of one class for one image.

    The gradient of the class score before the softmax (as the Grad-CAM paper
    defines it; computed without changing the model) with respect to the
    layer's output is averaged over space to weigh each channel; the heatmap is
    the sum of the weighted channels, through a ReLU, divided by its maximum.

    Args:
        model: A `VisionModel` with a class output.
        image: RGB uint8 array (height, width, 3) of any size.
        class_index: The class to explain. Default: the top predicted class.
            For a single sigmoid output, class 0 is explained by the negated
            score.
        layer_name: A layer from `model.layer_names`. Default: the last one
            that is not a pooling layer (`model.default_cam_layer()`).

    Returns:
        float32 array (layer height, layer width) in [0, 1].

    Raises:
        InputError: For an unknown or non-4-D layer, a class out of range, a
            model without classes or an image that is not RGB uint8.
    """
    heatmap, _ = grad_cam_with_probabilities(model, image, class_index, layer_name)
    return heatmap


def grad_cam_with_probabilities(model, image, class_index=None, layer_name=None):
    """Like `grad_cam`, and also returns the class probabilities of the same pass.

    Returns:
        (heatmap float32 (h, w) in [0, 1], probabilities float32 (classes,)).
    """
    layer_pass = run_layer_pass(model, image, layer_name, class_index, with_gradients=True)
    return normalize_map(grad_cam_raw_map(layer_pass)), layer_pass.probabilities

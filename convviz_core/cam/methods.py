"""The CAM family, in display order, and the functions that run it.

Every gradient method of one (image, class, layer) comes from one forward and
backward pass (`run_layer_pass`), and each method is then a few lines of numpy
over that pass. Eigen-CAM and Score-CAM need no backward pass; Score-CAM adds
one batched forward pass per channel of the layer.
"""

import inspect

from convviz_core.cam.base import normalize_map
from convviz_core.cam.eigencam import EIGEN_CAM
from convviz_core.cam.gradcam import GRAD_CAM
from convviz_core.cam.gradcam_plus_plus import GRAD_CAM_PLUS_PLUS
from convviz_core.cam.hirescam import HIRES_CAM
from convviz_core.cam.layercam import LAYER_CAM
from convviz_core.cam.passes import run_layer_pass
from convviz_core.cam.scorecam import SCORE_CAM
from convviz_core.cam.xgradcam import XGRAD_CAM
from convviz_core.errors import InputError

# Public name -> `CamMethod` (name, title, needs_gradients, description,
# paper, raw_map), in the order the views show them.
CAM_METHODS = {
    method.name: method
    for method in (
        GRAD_CAM,
        GRAD_CAM_PLUS_PLUS,
        XGRAD_CAM,
        LAYER_CAM,
        HIRES_CAM,
        EIGEN_CAM,
        SCORE_CAM,
    )
}

# The methods that cost about one pass; Score-CAM costs one per channel.
FAST_METHODS = tuple(name for name in CAM_METHODS if name != "score-cam")


def _check_methods(methods):
    methods = [methods] if isinstance(methods, str) else list(methods)
    for method in methods:
        if method not in CAM_METHODS:
            raise InputError(
                f"There is no CAM method '{method}'. Choose one of: {', '.join(CAM_METHODS)}."
            )
    return methods


def class_activation_maps_with_probabilities(
    model, image, methods=FAST_METHODS, class_index=None, layer_name=None, progress=None,
    batch_size=None,
):
    """Computes several CAM methods' maps of one class, from one shared pass.

    Args:
        model: A `VisionModel` with a class output.
        image: RGB uint8 array (height, width, 3) of any size.
        methods: Method names from `CAM_METHODS`. Default: all but Score-CAM.
        class_index: The class to explain. Default: the top predicted class.
        layer_name: A layer from `model.layer_names`. Default:
            `model.default_cam_layer()`.
        progress: For Score-CAM: optional function (masked inputs scored,
            total) called after each batch; it may raise to cancel.
        batch_size: For Score-CAM: masked inputs per forward pass. Default:
            `scorecam.DEFAULT_BATCH_SIZE`.

    Returns:
        (dict method name -> float32 map (layer height, layer width) in
        [0, 1], probabilities float32 (classes,), the class explained).

    Raises:
        InputError: For an unknown method or layer, a class out of range, a
            model without classes or an image that is not RGB uint8.
    """
    methods = _check_methods(methods)
    with_gradients = any(CAM_METHODS[method].needs_gradients for method in methods)
    layer_pass = run_layer_pass(model, image, layer_name, class_index, with_gradients)
    maps = {}
    for method in methods:
        raw_map = CAM_METHODS[method].raw_map
        options = {}
        if "progress" in inspect.signature(raw_map).parameters:
            options = {"progress": progress}
            if batch_size is not None:
                options["batch_size"] = batch_size
        maps[method] = normalize_map(raw_map(layer_pass, **options))
    return maps, layer_pass.probabilities, layer_pass.class_index


def class_activation_maps(model, image, methods=FAST_METHODS, class_index=None, layer_name=None,
                          progress=None):
    """Computes several CAM methods' maps of one class, from one shared pass.

    All gradient methods share one forward and backward pass; see
    `class_activation_maps_with_probabilities` for the arguments.

    Returns:
        dict method name -> float32 array (layer height, layer width) in [0, 1].
    """
    maps, _, _ = class_activation_maps_with_probabilities(
        model, image, methods, class_index, layer_name, progress
    )
    return maps


def class_activation_map(model, image, method="grad-cam", class_index=None, layer_name=None,
                         progress=None):
    """Computes one class-activation map of one class for one image.

    The map is the method's raw map at the layer's own resolution, through a
    ReLU, divided by its maximum (a map with no positive value stays zeros).
    Lay it over the image with `model.heatmap_on_input` and `overlay`.

    Args:
        model: A `VisionModel` with a class output.
        image: RGB uint8 array (height, width, 3) of any size.
        method: A name from `CAM_METHODS`, e.g. "grad-cam" (the book's).
        class_index: The class to explain. Default: the top predicted class.
            For a single sigmoid output, class 0 is explained by the negated
            score.
        layer_name: A layer from `model.layer_names`. Default: the last one
            that is not a pooling layer (`model.default_cam_layer()`).
        progress: For Score-CAM: optional function (masked inputs scored,
            total) called after each batch; it may raise to cancel.

    Returns:
        float32 array (layer height, layer width) in [0, 1].

    Raises:
        InputError: For an unknown method or layer, a class out of range, a
            model without classes or an image that is not RGB uint8.
    """
    _check_methods(method)
    return class_activation_maps(model, image, [method], class_index, layer_name, progress)[method]

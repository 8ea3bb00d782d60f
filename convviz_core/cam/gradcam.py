"""Grad-CAM class-activation heatmaps (book §5.4.3)."""

import numpy as np
import tensorflow as tf

from convviz_core.predictions import score_overrides

TRACE_COUNTS = {"grad_cam": 0}


def _build_cam_function(model, layer_name):
    height, width = model.input_size

    @tf.function(
        input_signature=[
            tf.TensorSpec((None, height, width, 3), tf.uint8),
            tf.TensorSpec((), tf.int32),
        ],
        autograph=False,
    )
    def compute(images, class_index):
        TRACE_COUNTS["grad_cam"] += 1
        # Only what depends on the watched layer output is recorded, so the
        # backward pass runs from the class score down to that layer only.
        with tf.GradientTape(watch_accessed_variables=False) as tape:

            def watch(path, tensor):
                tensor = tf.cast(tensor, tf.float32)
                tape.watch(tensor)
                return tensor

            captured, scores = model.plan.run(
                model.preprocess(images),
                taps=(layer_name,),
                with_output=True,
                on_tap=watch,
                overrides=score_overrides(model),
            )
            scores = tf.cast(scores, tf.float32)
            probabilities = model.probabilities(scores)
            # A negative index asks for the top class of this very pass.
            top_class = tf.argmax(probabilities[0], output_type=tf.int32)
            class_index = tf.where(class_index < 0, top_class, class_index)
            class_score = model.class_score(scores, class_index)
        features = captured[layer_name]
        gradients = tape.gradient(class_score, features)
        if gradients is None:
            gradients = tf.zeros_like(features)
        return features, gradients, probabilities

    return compute


def grad_cam_weights(features, gradients):
    """Grad-CAM's channel weights: the gradient averaged over space.

    Args:
        features: float array (height, width, channels) of the layer output.
        gradients: float array (height, width, channels), d score / d features.

    Returns:
        float array (channels,).
    """
    return gradients.mean(axis=(0, 1))


def class_activation_map(features, gradients, weigh_channels=grad_cam_weights):
    """Combines a layer's feature maps into one class-activation map.

    The map is the mean over channels of the weighted feature maps, through a
    ReLU, divided by its maximum. A map with no positive value stays all zero.

    Args:
        features: float array (height, width, channels).
        gradients: float array (height, width, channels).
        weigh_channels: Function (features, gradients) -> channel weights;
            the CAM variants differ only here.

    Returns:
        float32 array (height, width) in [0, 1].
    """
    features = np.asarray(features, dtype=np.float64)
    weights = weigh_channels(features, np.asarray(gradients, dtype=np.float64))
    heatmap = np.maximum((features * weights).mean(axis=-1), 0.0)
    peak = heatmap.max()
    if not np.isfinite(peak) or peak <= 0:
        return np.zeros(heatmap.shape, dtype=np.float32)
    return (heatmap / peak).astype(np.float32)


def grad_cam(model, image, class_index=None, layer_name=None):
    """Computes the Grad-CAM heatmap of one class for one image.

    The gradient of the class score before the softmax (as the Grad-CAM paper
    defines it; computed without changing the model) with respect to the
    layer's output is averaged over space to weigh each channel; the heatmap is
    the mean of the weighted channels, through a ReLU, divided by its maximum.

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
    layer_name = layer_name or model.default_cam_layer()
    model.layer_info(layer_name)
    batch = tf.constant(model.prepare(image))
    model.check_class(0 if class_index is None else class_index)
    compute = model.cached_function(
        ("grad_cam", layer_name), lambda: _build_cam_function(model, layer_name)
    )
    requested = -1 if class_index is None else int(class_index)
    features, gradients, probabilities = compute(batch, tf.constant(requested, tf.int32))
    heatmap = class_activation_map(features.numpy()[0], gradients.numpy()[0])
    return heatmap, probabilities.numpy()[0]

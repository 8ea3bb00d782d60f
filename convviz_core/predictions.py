"""Class predictions: the model's probabilities and its top classes for one image."""

import numpy as np
import tensorflow as tf

from convviz_core.graph.plan import pre_activation

TRACE_COUNTS = {"predict": 0}


def score_overrides(model):
    """Plan overrides that make the model output its scores before the softmax."""
    final = model.plan.final_call()
    return {final.path: pre_activation} if final is not None else {}


def _build_predict_function(model):
    height, width = model.input_size

    @tf.function(
        input_signature=[tf.TensorSpec((None, height, width, 3), tf.uint8)], autograph=False
    )
    def compute(images):
        TRACE_COUNTS["predict"] += 1
        _, scores = model.plan.run(
            model.preprocess(images), with_output=True, overrides=score_overrides(model)
        )
        return model.probabilities(tf.cast(scores, tf.float32))

    return compute


def class_probabilities(model, image):
    """Returns the model's probability for every class, for one image.

    Args:
        model: A `VisionModel` with a class output.
        image: RGB uint8 array (height, width, 3) of any size.

    Returns:
        float32 array (classes,).

    Raises:
        InputError: If the model has no class output or the image is not RGB uint8.
    """
    model.check_class(0)
    compute = model.cached_function(("predict",), lambda: _build_predict_function(model))
    return compute(tf.constant(model.prepare(image))).numpy()[0]


def predict(model, image, top=3):
    """Returns the model's most probable classes for one image.

    Args:
        model: A `VisionModel` with a class output.
        image: RGB uint8 array (height, width, 3) of any size.
        top: How many classes to return.

    Returns:
        [(class index, label, probability), ...], most probable first.
    """
    return rank_classes(model, class_probabilities(model, image), top)


def rank_classes(model, probabilities, top=3):
    """Returns the most probable classes of a probability vector, best first.

    Args:
        model: The `VisionModel` whose class names label the classes.
        probabilities: float array (classes,), e.g. from
            `grad_cam_with_probabilities`.
        top: How many classes to return.

    Returns:
        [(class index, label, probability), ...]; ties keep class order.
    """
    probabilities = np.asarray(probabilities)
    order = np.argsort(-probabilities, kind="stable")[: max(1, int(top))]
    return [(int(index), model.class_label(index), float(probabilities[index])) for index in order]

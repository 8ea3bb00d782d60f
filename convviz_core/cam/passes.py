"""The compiled passes every CAM method and faithfulness metric is built on.

Three functions, each compiled once per model (and layer) and cached on the
`VisionModel`:

- the gradient pass (one forward and one backward pass): the layer's features,
  the gradients of the class score before the softmax with respect to them,
  the class probabilities and the explained class;
- the forward pass: the same without the backward pass, for the methods that
  need no gradients (Eigen-CAM, Score-CAM);
- the masked scoring pass: many blends of a model input with a background,
  one mask each, scored in one batch (Score-CAM's masked inputs, the
  deletion/insertion curves, ROAD); the masks of a batch may blend different
  inputs and backgrounds (a folder of images in `convviz_core.reports`). It
  taps no layer, so it runs with the batch norms folded into the
  convolutions (`graph.folding`): the same scores, faster.

Class indices go in as tensors, so a new class, image or batch size never
traces a function again (`TRACE_COUNTS` counts the traces).
"""

import dataclasses

import numpy as np
import tensorflow as tf

from convviz_core.graph.folding import batch_norm_folding
from convviz_core.predictions import score_overrides

# How often each compiled function was traced; the tests check that new
# classes, images and batch sizes add nothing.
TRACE_COUNTS = {"grad_cam": 0, "cam_forward": 0, "masked_scores": 0}


@dataclasses.dataclass
class LayerPass:
    """What one pass over one image tells about one layer.

    Attributes:
        model: The `VisionModel` that ran.
        layer_name: The layer the features come from.
        inputs: float32 array (1, height, width, channels), the model input
            (the image after the model's preprocessing).
        features: float32 array (layer height, layer width, channels).
        gradients: float32 array like `features`, d class score / d features,
            or None after a forward pass only.
        probabilities: float32 array (classes,).
        class_index: The class explained (the top class unless one was asked for).
    """

    model: object
    layer_name: str
    inputs: np.ndarray
    features: np.ndarray
    gradients: object
    probabilities: np.ndarray
    class_index: int


def _resolve_class(probabilities, class_index):
    # A negative index asks for the top class of this very pass.
    top_class = tf.argmax(probabilities[0], output_type=tf.int32)
    return tf.where(class_index < 0, top_class, class_index)


def _build_gradient_pass(model, layer_name):
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
        inputs = model.preprocess(images)
        # Only what depends on the watched layer output is recorded, so the
        # backward pass runs from the class score down to that layer only.
        with tf.GradientTape(watch_accessed_variables=False) as tape:

            def watch(path, tensor):
                tensor = tf.cast(tensor, tf.float32)
                tape.watch(tensor)
                return tensor

            captured, scores = model.plan.run(
                inputs,
                taps=(layer_name,),
                with_output=True,
                on_tap=watch,
                overrides=score_overrides(model),
            )
            scores = tf.cast(scores, tf.float32)
            probabilities = model.probabilities(scores)
            class_index = _resolve_class(probabilities, class_index)
            class_score = model.class_score(scores, class_index)
        features = captured[layer_name]
        gradients = tape.gradient(class_score, features)
        if gradients is None:
            gradients = tf.zeros_like(features)
        return tf.cast(inputs, tf.float32), features, gradients, probabilities, class_index

    return compute


def _build_forward_pass(model, layer_name):
    height, width = model.input_size

    @tf.function(
        input_signature=[
            tf.TensorSpec((None, height, width, 3), tf.uint8),
            tf.TensorSpec((), tf.int32),
        ],
        autograph=False,
    )
    def compute(images, class_index):
        TRACE_COUNTS["cam_forward"] += 1
        inputs = model.preprocess(images)
        captured, scores = model.plan.run(
            inputs, taps=(layer_name,), with_output=True, overrides=score_overrides(model)
        )
        probabilities = model.probabilities(tf.cast(scores, tf.float32))
        class_index = _resolve_class(probabilities, class_index)
        features = tf.cast(captured[layer_name], tf.float32)
        return tf.cast(inputs, tf.float32), features, probabilities, class_index

    return compute


def scoring_overrides(model):
    """The overrides of a pass that only scores inputs: scores before the softmax, batch norms folded.

    Folding (`graph.folding`) makes EfficientNet-Lite0's masked passes about
    1.5x faster and changes its probabilities by about 1e-6; it is left out
    when it would touch the layer whose activation the scores skip.
    """
    scores = score_overrides(model)
    folded = batch_norm_folding(model.plan)
    if not set(folded).isdisjoint(scores):
        folded = {}
    return {**folded, **scores}


def _build_masked_scores(model):
    height, width = model.input_size
    channels = model.input_channels
    overrides = scoring_overrides(model)

    @tf.function(
        input_signature=[
            tf.TensorSpec((None, height, width, channels), tf.float32),
            tf.TensorSpec((None, height, width, channels), tf.float32),
            tf.TensorSpec((None, height, width), tf.float32),
            tf.TensorSpec((None,), tf.int32),
            tf.TensorSpec((None,), tf.int32),
            tf.TensorSpec((None,), tf.int32),
        ],
        autograph=False,
    )
    def compute(inputs, backgrounds, masks, input_rows, background_rows, class_indices):
        TRACE_COUNTS["masked_scores"] += 1
        masks = masks[..., tf.newaxis]
        # Each mask blends its own row of the inputs with its own background:
        # one batch can hold the masks of several images (a folder) or masks
        # with a background each (ROAD's imputed images).
        inputs = tf.gather(inputs, input_rows)
        backgrounds = tf.gather(backgrounds, background_rows)
        blends = backgrounds + masks * (inputs - backgrounds)
        _, scores = model.plan.run(blends, with_output=True, overrides=overrides)
        scores = tf.cast(scores, tf.float32)
        probabilities = model.probabilities(scores)
        if model.is_binary:
            class_scores = model.class_score(scores, class_indices)
        else:
            class_scores = tf.gather(scores, class_indices[:, tf.newaxis], batch_dims=1)[:, 0]
        class_probabilities = tf.gather(probabilities, class_indices[:, tf.newaxis], batch_dims=1)[:, 0]
        return class_scores, class_probabilities

    return compute


def run_layer_pass(model, image, layer_name=None, class_index=None, with_gradients=True):
    """Runs the model once on one image and returns what a layer's CAM needs.

    Args:
        model: A `VisionModel` with a class output.
        image: RGB uint8 array (height, width, 3) of any size.
        layer_name: A layer from `model.layer_names`. Default:
            `model.default_cam_layer()`.
        class_index: The class to explain. Default: the top predicted class.
        with_gradients: Whether to run the backward pass too.

    Returns:
        A `LayerPass`.

    Raises:
        InputError: For an unknown or non-4-D layer, a class out of range, a
            model without classes or an image that is not RGB uint8.
    """
    layer_name = layer_name or model.default_cam_layer()
    model.layer_info(layer_name)
    model.check_class(0 if class_index is None else class_index)
    batch = tf.constant(model.prepare(image))
    requested = tf.constant(-1 if class_index is None else int(class_index), tf.int32)
    if with_gradients:
        compute = model.cached_function(
            ("grad_cam", layer_name), lambda: _build_gradient_pass(model, layer_name)
        )
        inputs, features, gradients, probabilities, resolved = compute(batch, requested)
        gradients = gradients.numpy()[0]
    else:
        compute = model.cached_function(
            ("cam_forward", layer_name), lambda: _build_forward_pass(model, layer_name)
        )
        inputs, features, probabilities, resolved = compute(batch, requested)
        gradients = None
    return LayerPass(
        model=model,
        layer_name=layer_name,
        inputs=inputs.numpy(),
        features=features.numpy()[0],
        gradients=gradients,
        probabilities=probabilities.numpy()[0],
        class_index=int(resolved),
    )


def _per_mask(values, count, name):
    """Broadcasts a scalar (or one value) to one value per mask, as int32."""
    values = np.asarray(values, np.int64).reshape(-1)
    if values.size == 1:
        values = np.repeat(values, count)
    if values.size != count:
        raise ValueError(f"`{name}` needs one value per mask ({count}). Received {values.size} values.")
    return values.astype(np.int32)


def score_masked_inputs(model, inputs, masks, class_index, backgrounds=None, batch_size=32,
                        progress=None, total=None, input_rows=0, background_rows=0):
    """Scores blends of model inputs with backgrounds, many masks at once.

    Each blend is `background + mask * (input - background)` in the model's
    input space (after preprocessing): a mask of ones keeps the input, zeros
    give the background. Usually there is one input and one background; a
    batch of several (the images of a folder, ROAD's imputed images) is
    addressed per mask by `input_rows` and `background_rows`. A mask's score
    does not depend on the other masks of its batch.

    Args:
        model: A `VisionModel` with a class output.
        inputs: float array (k, height, width, channels), the model inputs
            (`LayerPass.inputs` for one image).
        masks: float array (n, height, width) at the model's input size, or an
            iterable of such arrays (batches), e.g. a generator that makes
            them one batch at a time (then rows and classes must be scalars).
        class_index: The class to score: one int, or one per mask.
        backgrounds: float array (m, height, width, channels). Default: zeros
            like `inputs`, the plain product `mask * input` (as Score-CAM masks).
        batch_size: Masks scored per forward pass when `masks` is one array.
        progress: Optional function called with (masks scored, total) after
            each batch. It may raise to stop the work (cancellation); the
            exception propagates.
        total: The number of masks, for `progress`, when `masks` is an
            iterable of batches.
        input_rows: The row of `inputs` each mask blends: one int, or one per mask.
        background_rows: The row of `backgrounds` each mask blends: one int,
            or one per mask.

    Returns:
        (class scores before the softmax, class probabilities), two float32
        arrays (n,).
    """
    for index in np.asarray(class_index).reshape(-1):
        model.check_class(index)
    inputs = np.asarray(inputs, np.float32)
    backgrounds = np.zeros_like(inputs) if backgrounds is None else np.asarray(backgrounds, np.float32)
    compute = model.cached_function(("masked_scores",), lambda: _build_masked_scores(model))
    if isinstance(masks, np.ndarray):
        total = len(masks)
        per_mask = (
            _per_mask(class_index, total, "class_index"),
            _per_mask(input_rows, total, "input_rows"),
            _per_mask(background_rows, total, "background_rows"),
        )
        batches = (
            tuple(values[start : start + batch_size] for values in (masks,) + per_mask)
            for start in range(0, total, batch_size)
        )
    else:
        batches = (
            (batch,)
            + tuple(
                _per_mask(values, len(batch), "rows") for values in (class_index, input_rows, background_rows)
            )
            for batch in masks
        )
    inputs, backgrounds = tf.constant(inputs), tf.constant(backgrounds)
    scores, probabilities, done = [], [], 0
    for batch, classes, rows, background_indices in batches:
        batch_scores, batch_probabilities = compute(
            inputs, backgrounds, tf.constant(np.asarray(batch, np.float32)), tf.constant(rows),
            tf.constant(background_indices), tf.constant(classes),
        )
        scores.append(batch_scores.numpy())
        probabilities.append(batch_probabilities.numpy())
        done += len(batch)
        if progress is not None:
            progress(done, total if total is not None else done)
    if not scores:
        return np.zeros(0, np.float32), np.zeros(0, np.float32)
    return np.concatenate(scores), np.concatenate(probabilities)

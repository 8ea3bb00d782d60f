"""The book's `model.summary()` as data: one row per layer, nested models expanded."""

import dataclasses

import keras
import numpy as np

from convviz_core.graph.plan import walk_nested_layers


@dataclasses.dataclass(frozen=True)
class SummaryRow:
    """One line of a model summary.

    Attributes:
        name: The layer's address: its name, prefixed by the names of the
            nested models that hold it ("vgg16/block1_conv1"), as
            `VisionModel.layer_names` spells it.
        type: The layer's class name ("Conv2D", "Sequential", ...).
        output_shape: The output shape as Keras prints it, e.g.
            "(None, 148, 148, 32)"; "multiple" for a layer called several
            times with different shapes, "?" when it is not known.
        parameters: The number of weights the layer holds (for a nested
            model, all of its layers' weights).
        depth: 0 for a layer of the model itself, 1 inside a nested model,
            and so on.
    """

    name: str
    type: str
    output_shape: str
    parameters: int
    depth: int


@dataclasses.dataclass(frozen=True)
class ModelSummary:
    """A model summary: its rows and the totals Keras prints below them.

    Attributes:
        name: The model's name.
        rows: `SummaryRow`s in the order Keras lists the layers; each nested
            model's row is followed by the rows of its own layers.
        total_parameters: All weights of the model, each counted once.
        trainable_parameters: The weights that training would change.
        non_trainable_parameters: The others (for example batch-norm moving
            means and variances, or the layers of a frozen base).
    """

    name: str
    rows: tuple
    total_parameters: int
    trainable_parameters: int
    non_trainable_parameters: int


def summarize_model(keras_model):
    """Lists a Keras model's layers with their type, output shape and parameters.

    Nested Functional and Sequential models (a keras.applications base inside
    a Sequential, say) get a row of their own, followed by a row for each of
    their layers, addressed "outer/inner".

    Args:
        keras_model: A built `keras.Model`.

    Returns:
        A `ModelSummary`.

    Raises:
        TypeError: If `keras_model` is not a `keras.Model`.
    """
    if not isinstance(keras_model, keras.Model):
        raise TypeError(
            f"summarize_model needs a keras.Model. Received: {type(keras_model).__name__}"
        )
    rows = []
    _add_rows(keras_model, prefix="", depth=0, rows=rows)
    total = _count(keras_model.weights)
    trainable = _count(keras_model.trainable_weights)
    return ModelSummary(
        name=keras_model.name,
        rows=tuple(rows),
        total_parameters=total,
        trainable_parameters=trainable,
        non_trainable_parameters=total - trainable,
    )


def _add_rows(model, prefix, depth, rows):
    for name, layer, layer_depth in walk_nested_layers(model, prefix, depth):
        rows.append(
            SummaryRow(
                name=name,
                type=type(layer).__name__,
                output_shape=output_shape_text(layer),
                parameters=_count(layer.weights),
                depth=layer_depth,
            )
        )


def output_shape_text(layer):
    """Formats a layer's output shape as Keras's summary does: "(None, 7, 7, 512)".

    Returns:
        The shape text; several outputs are joined by ", "; "multiple" when
        the layer was called on inputs of different shapes, "?" when the layer
        was never called.
    """
    try:
        output = layer.output
    except (AttributeError, ValueError, RuntimeError):
        # Keras raises for a layer called more than once (a shared layer) and
        # for one that was never called on a symbolic input.
        return "multiple" if len(getattr(layer, "_inbound_nodes", ())) > 1 else "?"
    shapes = [_shape_text(tensor.shape) for tensor in keras.tree.flatten(output)]
    return ", ".join(shapes) if shapes else "?"


def _shape_text(shape):
    return "(" + ", ".join("None" if side is None else str(side) for side in shape) + (
        ",)" if len(shape) == 1 else ")"
    )


def _count(weights):
    """Counts the values of a list of weights, each variable once."""
    seen = {}
    for weight in weights:
        seen[id(weight)] = weight
    return int(sum(int(np.prod(weight.shape)) for weight in seen.values()))

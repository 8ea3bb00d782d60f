"""Runs a Keras model layer by layer, nested models included, to reach any inner layer.

This is the one place that knows how a layer of a nested model is addressed
("outer/inner") and how its output is reached from the outer model's input.

Building `keras.Model(outer.input, inner_layer.output)` fails with "Graph
disconnected" when the layer lives in a nested model (a keras.applications
base inside a Sequential, say): the inner layer's symbolic output belongs to
the nested model's own input. Instead, a `GraphPlan` flattens the graph once
into a list of layer calls, inlining nested Functional and Sequential models,
and keeps only the calls that the wanted outputs depend on. Running a plan
calls each layer on real tensors; it never creates symbolic nodes, so the
model (which may be shared by every user of a server) is not changed.
"""

import dataclasses
import inspect
import threading

import keras
from keras import ops

from convviz_core.errors import InputError

SEPARATOR = "/"


@dataclasses.dataclass(frozen=True)
class _Call:
    """One layer call of the flattened graph."""

    layer: object
    path: str
    arguments: object  # keras.src.ops.node.NodeArguments of the node.
    output_ids: tuple
    input_ids: tuple


@dataclasses.dataclass(frozen=True)
class _Alias:
    """Passes tensors between an outer graph and an inlined nested model."""

    source_ids: tuple
    target_ids: tuple


@dataclasses.dataclass(frozen=True)
class LayerInfo:
    """What the views need to know of one layer of the flattened graph.

    Attributes:
        path: Its address: the layer name, prefixed by the names of the nested
            models that hold it ("vgg16/block3_conv1").
        layer: The Keras layer itself.
        output_shape: Its symbolic output shape, batch axis included.
    """

    path: str
    layer: object
    output_shape: tuple


def _graph_of(model):
    """Returns the Functional graph behind a model, or None if it has none."""
    if isinstance(model, keras.Sequential):
        graph = getattr(model, "_functional", None)
        if graph is None:
            raise InputError(
                f"The model '{model.name}' has no input shape, so ConvViz cannot trace it. "
                "Save it after building it with an explicit keras.Input(shape=...) and "
                "upload it again."
            )
        return graph
    if hasattr(model, "_nodes_by_depth") and hasattr(model, "inputs"):
        return model
    return None


def _is_nested_model(layer):
    return isinstance(layer, keras.Model) and _graph_of(layer) is not None


class GraphPlan:
    """A flattened, ordered view of a model's layer calls.

    Args:
        model: A built Keras Functional or Sequential model (nested models
            inside it are inlined).

    Raises:
        InputError: If the model has no traceable graph or several inputs.
    """

    def __init__(self, model):
        graph = _graph_of(model)
        if graph is None:
            raise InputError(
                f"ConvViz cannot trace the model '{model.name}' "
                f"({type(model).__name__}): it needs a Functional or Sequential Keras model."
            )
        if len(graph.inputs) != 1:
            raise InputError(
                f"The model '{model.name}' has {len(graph.inputs)} inputs; ConvViz "
                "visualises models with one image input. Upload a model with a single input."
            )
        self.model = model
        self.input_id = id(graph.inputs[0])
        self.output_ids = tuple(id(tensor) for tensor in graph.outputs)
        self.steps = []
        self.layers = {}  # path -> (LayerInfo, output id); first call of a shared layer wins.
        self._flatten(graph, prefix="")
        self._producers = {}
        for step in self.steps:
            for output_id in step.output_ids if isinstance(step, _Call) else step.target_ids:
                self._producers[output_id] = step
        self._lock = threading.Lock()
        self._pruned = {}

    def _flatten(self, graph, prefix):
        for depth in sorted(graph._nodes_by_depth, reverse=True):
            for node in graph._nodes_by_depth[depth]:
                layer = node.operation
                if layer is None or node.is_input:
                    continue
                input_ids = tuple(id(tensor) for tensor in node.arguments.keras_tensors)
                if _is_nested_model(layer):
                    inner = _graph_of(layer)
                    inner_prefix = f"{prefix}{layer.name}{SEPARATOR}"
                    self.steps.append(
                        _Alias(input_ids, tuple(id(tensor) for tensor in inner.inputs))
                    )
                    self._flatten(inner, inner_prefix)
                    self.steps.append(
                        _Alias(
                            tuple(id(tensor) for tensor in inner.outputs),
                            tuple(id(tensor) for tensor in node.outputs),
                        )
                    )
                    continue
                path = f"{prefix}{layer.name}"
                output_ids = tuple(id(tensor) for tensor in node.outputs)
                self.steps.append(_Call(layer, path, node.arguments, output_ids, input_ids))
                if path not in self.layers and len(node.outputs) == 1:
                    info = LayerInfo(path, layer, tuple(node.outputs[0].shape))
                    self.layers[path] = (info, output_ids[0])

    def layer_infos(self):
        """Returns `LayerInfo` for every layer, in the order the model runs them."""
        return [info for info, _ in self.layers.values()]

    def output_id(self, path):
        """Returns the tensor id of a layer's output.

        Raises:
            InputError: If no layer has that path.
        """
        if path not in self.layers:
            raise InputError(f"The model has no layer named '{path}'.")
        return self.layers[path][1]

    def _steps_for(self, wanted_ids):
        """Returns the steps that the wanted tensors depend on, in order (cached)."""
        key = frozenset(wanted_ids)
        with self._lock:
            if key in self._pruned:
                return self._pruned[key]
        needed = set(wanted_ids)
        kept = []
        for step in reversed(self.steps):
            produced = step.output_ids if isinstance(step, _Call) else step.target_ids
            if needed.isdisjoint(produced):
                continue
            kept.append(step)
            needed.update(step.input_ids if isinstance(step, _Call) else step.source_ids)
        kept.reverse()
        with self._lock:
            self._pruned[key] = kept
        return kept

    def chain_to_input(self, path):
        """The layer calls from the model input to a layer, along first inputs.

        Nested models are passed through; where branches meet (an add, a
        concatenation) the first input is followed.

        Args:
            path: A layer path.

        Returns:
            A list of layer calls (with `.layer`, `.path`, `.arguments`), input
            side first, or None when the chain does not reach the input.
        """
        calls = []
        tensor_id = self.output_id(path)
        while tensor_id != self.input_id:
            step = self._producers.get(tensor_id)
            if step is None:
                return None
            if isinstance(step, _Alias):
                tensor_id = step.source_ids[step.target_ids.index(tensor_id)]
                continue
            calls.append(step)
            if not step.input_ids:
                return None
            tensor_id = step.input_ids[0]
        calls.reverse()
        return calls

    def final_call(self):
        """Returns the `_Call` that produces the model's (first) output."""
        tensor_id = self.output_ids[0]
        step = self._producers.get(tensor_id)
        while isinstance(step, _Alias):
            tensor_id = step.source_ids[step.target_ids.index(tensor_id)]
            step = self._producers.get(tensor_id)
        return step

    def run(self, inputs, taps=(), with_output=False, on_tap=None, overrides=None):
        """Runs the layers needed for the taps (and the output) on real tensors.

        Args:
            inputs: The model input tensor (batch first).
            taps: Layer paths whose outputs to return.
            with_output: Whether to also compute the model's first output.
            on_tap: Optional function called with (path, tensor) as each tap is
                computed; it returns the tensor to use from there on (Grad-CAM
                uses it to start recording gradients at the tapped layer).
            overrides: Optional {layer path: function}; the function is called
                instead of that layer, with the layer and its inputs, and its
                result used as the layer's output. Grad-CAM uses it to take the
                score before a softmax, filter patterns to compute only the
                chosen channels, both without changing the model.

        Returns:
            (dict of tap path -> tensor, model output tensor or None).
        """
        tap_ids = {self.output_id(path): path for path in taps}
        wanted = set(tap_ids)
        if with_output:
            wanted.add(self.output_ids[0])
        overrides = overrides or {}
        values = {self.input_id: inputs}
        captured = {}
        for step in self._steps_for(wanted):
            for output_id, tensor in _execute(step, values, overrides):
                if output_id in tap_ids:
                    if on_tap is not None:
                        tensor = on_tap(tap_ids[output_id], tensor)
                    captured[tap_ids[output_id]] = tensor
                values[output_id] = tensor
        output = values[self.output_ids[0]] if with_output else None
        return captured, output


def walk_nested_layers(model, prefix="", depth=0):
    """Yields every layer of a model and of the models nested in it, as the views name them.

    Args:
        model: A Keras model.

    Yields:
        (path, layer, depth): the layer's address ("outer/inner" inside a
        nested model), the layer, and 0 for the model's own layers, 1 inside
        a nested model, and so on. A nested model comes before its layers.
    """
    for layer in model.layers:
        path = f"{prefix}{layer.name}"
        yield path, layer, depth
        if isinstance(layer, keras.Model) and layer.layers:
            yield from walk_nested_layers(layer, f"{path}{SEPARATOR}", depth + 1)


def _execute(step, values, overrides):
    """Runs one step of a plan on the tensors in `values`.

    Returns:
        [(tensor id, tensor)] of what the step produces.
    """
    if isinstance(step, _Alias):
        return [(target, values[source]) for source, target in zip(step.source_ids, step.target_ids)]
    args, kwargs = step.arguments.fill_in(values)
    if step.path in overrides:
        outputs = overrides[step.path](step.layer, *args, **kwargs)
    else:
        if takes_training_argument(step.layer):
            kwargs["training"] = False
        outputs = step.layer(*args, **kwargs)
    return list(zip(step.output_ids, keras.tree.flatten(outputs)))


def takes_training_argument(layer):
    """Whether a layer's `call` accepts `training` (dropout, batch norm, nested models)."""
    try:
        parameters = inspect.signature(layer.call).parameters
    except (TypeError, ValueError):
        return False
    return "training" in parameters


def head_activation(layer):
    """Returns the activation that ends a model's final layer.

    Args:
        layer: The layer that produces the model's output.

    Returns:
        "softmax", "sigmoid" or "none" (anything else, linear included).
    """
    if isinstance(layer, keras.layers.Softmax):
        return "softmax"
    name = getattr(getattr(layer, "activation", None), "__name__", "none")
    return name if name in ("softmax", "sigmoid") else "none"


def can_strip_activation(layer):
    """Whether `pre_activation` can compute this layer's output without its activation."""
    return isinstance(layer, (keras.layers.Softmax, keras.layers.Activation, keras.layers.Dense))


def pre_activation(layer, *args, **kwargs):
    """Computes a final layer's output without its softmax or sigmoid.

    Grad-CAM is defined on the class score before the softmax. This recomputes
    that score from the layer's input and weights and leaves the layer as it
    is. Final layers other than Dense, Activation and Softmax are run as they
    are.

    Args:
        layer: The layer that produces the model's output.
        *args, **kwargs: Its inputs, as the graph passes them.

    Returns:
        The scores before the final softmax or sigmoid.
    """
    kind = head_activation(layer)
    if kind != "none" and isinstance(layer, (keras.layers.Softmax, keras.layers.Activation)):
        return args[0]
    if kind != "none" and isinstance(layer, keras.layers.Dense):
        scores = ops.matmul(ops.cast(args[0], layer.compute_dtype), layer.kernel)
        if layer.use_bias:
            scores = scores + layer.bias
        return scores
    if takes_training_argument(layer):
        kwargs["training"] = False
    return layer(*args, **kwargs)

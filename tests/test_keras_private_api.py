"""The Keras internals ConvViz relies on, named one by one.

Keras 3 has no public API to walk a model's graph of layer calls, so
`convviz_core.graph.plan` (the runner that reaches layers inside nested
models) and `convviz_core.graph.summary` read a few private attributes.
requirements.txt pins Keras exactly, so they cannot change under a user;
when an upgrade of that pin changes one of them, this file fails first and
says which attribute and which ConvViz code to adapt.
"""

import keras
import pytest

from convviz_core.graph.plan import GraphPlan, takes_training_argument

pytestmark = pytest.mark.filterwarnings("ignore")


def nested_model():
    inner_input = keras.Input((8, 8, 3))
    inner = keras.Model(inner_input, keras.layers.Conv2D(2, 3, name="conv")(inner_input), name="inner")
    return keras.Sequential([keras.Input((8, 8, 3)), inner, keras.layers.GlobalAveragePooling2D()], name="outer")


def require(condition, attribute, user):
    if not condition:
        pytest.fail(
            f"Keras {keras.__version__} changed `{attribute}`, which {user} relies on. "
            "Adapt that code to the new Keras before moving the pin in requirements.in."
        )


def test_sequential_keeps_its_functional_graph_in_functional():
    model = nested_model()
    graph = getattr(model, "_functional", None)
    require(isinstance(graph, keras.Model), "Sequential._functional", "graph/plan.py `_graph_of`")


def test_functional_models_list_their_nodes_by_depth():
    inner = nested_model().layers[0]
    nodes_by_depth = getattr(inner, "_nodes_by_depth", None)
    require(isinstance(nodes_by_depth, dict) and nodes_by_depth, "Functional._nodes_by_depth", "graph/plan.py `_flatten`")
    node = next(node for nodes in nodes_by_depth.values() for node in nodes if not node.is_input)
    for attribute in ("operation", "is_input", "outputs", "arguments"):
        require(hasattr(node, attribute), f"Node.{attribute}", "graph/plan.py `_flatten`")
    require(hasattr(node.arguments, "keras_tensors"), "NodeArguments.keras_tensors", "graph/plan.py and graph/geometry.py")
    require(callable(getattr(node.arguments, "fill_in", None)), "NodeArguments.fill_in", "graph/plan.py `_execute`")


def test_layers_count_their_calls_in_inbound_nodes():
    shared = keras.layers.Dense(2)
    first, second = keras.Input((3,)), keras.Input((5, 3))
    shared(first), shared(second)
    nodes = getattr(shared, "_inbound_nodes", None)
    require(isinstance(nodes, list) and len(nodes) == 2, "Layer._inbound_nodes", "graph/summary.py `output_shape_text`")


def test_the_plan_reaches_an_inner_layer_through_these_internals():
    plan = GraphPlan(nested_model())
    assert "inner/conv" in plan.layers


@pytest.mark.parametrize(
    "layer, takes_it",
    [
        (keras.layers.Dropout(0.5), True),
        (keras.layers.BatchNormalization(), True),
        (keras.layers.Conv2D(2, 3), False),
        (keras.layers.ReLU(), False),
    ],
)
def test_training_argument_is_found_from_the_public_call_signature(layer, takes_it):
    assert takes_training_argument(layer) is takes_it


def test_nested_models_take_the_training_argument():
    assert takes_training_argument(nested_model().layers[0]) is True

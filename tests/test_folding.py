"""Batch norms folded into convolutions (`convviz_core.graph.folding`): hand-worked weights, the same outputs."""

import keras
import numpy as np
import pytest

import convviz_core
from convviz_core.cam.passes import scoring_overrides
from convviz_core.graph.folding import batch_norm_folding
from convviz_core.graph.plan import GraphPlan
from convviz_core.predictions import score_overrides


def set_batch_norm(layer, gamma, beta, mean, variance):
    layer.set_weights([np.asarray(value, np.float32) for value in (gamma, beta, mean, variance)])


def run(model, inputs, overrides):
    _, outputs = GraphPlan(model).run(keras.ops.convert_to_tensor(inputs), with_output=True, overrides=overrides)
    return keras.ops.convert_to_numpy(outputs)


def test_folded_weights_worked_by_hand():
    inputs = keras.Input((2, 2, 1))
    convolution = keras.layers.Conv2D(2, 1, name="conv")
    norm = keras.layers.BatchNormalization(epsilon=0.25, name="norm")
    outputs = keras.layers.ReLU(max_value=6.0, name="relu")(norm(convolution(inputs)))
    model = keras.Model(inputs, outputs)
    convolution.set_weights([np.array([[[[2.0, -1.0]]]], np.float32), np.array([0.0, 1.0], np.float32)])
    # sqrt(variance + epsilon) = 2 and 1: scales gamma / 2 = 1 and 2 / 1 = 2.
    set_batch_norm(norm, gamma=[2.0, 2.0], beta=[0.5, -1.0], mean=[1.0, 3.0], variance=[3.75, 0.75])
    plan = GraphPlan(model)

    overrides = batch_norm_folding(plan)

    assert sorted(overrides) == ["conv", "norm", "relu"]
    # Channel 0: (2x - 1) * 1 + 0.5 = 2x - 0.5; channel 1: (-x + 1 - 3) * 2 - 1 = -2x - 5.
    pixels = np.array([[[[0.0], [1.0]], [[3.5], [-4.0]]]], np.float32)
    expected = np.clip(np.stack([2 * pixels[..., 0] - 0.5, -2 * pixels[..., 0] - 5], -1), 0, 6)
    np.testing.assert_allclose(run(model, pixels, overrides), expected, atol=1e-6)
    np.testing.assert_allclose(run(model, pixels, {}), expected, atol=1e-6)


def random_norm(layer, rng):
    channels = layer.gamma.shape[0]
    set_batch_norm(layer, rng.uniform(0.5, 2, channels), rng.normal(0, 1, channels), rng.normal(0, 1, channels),
                   rng.uniform(0.1, 3, channels))


def test_depthwise_strided_dilated_and_activation_layers_give_the_model_outputs():
    rng = np.random.default_rng(0)
    inputs = keras.Input((13, 11, 3))
    x = keras.layers.Conv2D(4, 3, strides=2, padding="valid", use_bias=False, name="stem")(inputs)
    x = keras.layers.BatchNormalization(name="stem_norm")(x)
    x = keras.layers.Activation("relu", name="stem_relu")(x)
    x = keras.layers.DepthwiseConv2D(3, depth_multiplier=2, padding="same", name="depthwise")(x)
    x = keras.layers.BatchNormalization(name="depthwise_norm")(x)
    x = keras.layers.ReLU(6.0, name="depthwise_relu")(x)
    x = keras.layers.Conv2D(5, 3, dilation_rate=2, padding="same", name="dilated")(x)
    x = keras.layers.BatchNormalization(name="dilated_norm")(x)
    outputs = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, outputs)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            random_norm(layer, rng)
    plan = GraphPlan(model)

    overrides = batch_norm_folding(plan)

    assert sorted(overrides) == sorted(["stem", "stem_norm", "stem_relu", "depthwise", "depthwise_norm",
                                        "depthwise_relu", "dilated", "dilated_norm"])
    pixels = rng.normal(0, 1, (3, 13, 11, 3)).astype(np.float32)
    np.testing.assert_allclose(run(model, pixels, overrides), keras.ops.convert_to_numpy(model(pixels)), atol=1e-5)


def test_what_cannot_be_folded_is_left_alone():
    inputs = keras.Input((8, 8, 3))
    # A convolution with its own activation: the batch norm comes after a ReLU.
    a = keras.layers.BatchNormalization(name="after_relu")(keras.layers.Conv2D(4, 3, activation="relu")(inputs))
    # A convolution read by its batch norm and by a skip connection.
    b_conv = keras.layers.Conv2D(4, 1, name="branching")(a)
    b = keras.layers.Add()([keras.layers.BatchNormalization(name="branch_norm")(b_conv), b_conv])
    # A batch norm over another axis than the channels.
    c = keras.layers.BatchNormalization(axis=1, name="rows_norm")(keras.layers.Conv2D(4, 1, name="rows_conv")(b))
    # A shared convolution, called twice.
    shared = keras.layers.Conv2D(4, 1, name="shared")
    d = keras.layers.BatchNormalization(name="shared_norm")(shared(shared(c)))
    # A leaky ReLU after a foldable pair: the pair is folded, the ReLU is not.
    e = keras.layers.BatchNormalization(name="leaky_norm")(keras.layers.Conv2D(4, 1, name="leaky_conv")(d))
    outputs = keras.layers.ReLU(negative_slope=0.1, name="leaky")(e)
    model = keras.Model(inputs, outputs)

    assert sorted(batch_norm_folding(GraphPlan(model))) == ["leaky_conv", "leaky_norm"]


def test_a_nested_model_is_folded_under_its_path():
    inner_inputs = keras.Input((6, 6, 3))
    inner_outputs = keras.layers.BatchNormalization(name="norm")(keras.layers.Conv2D(2, 3, name="conv")(inner_inputs))
    inner = keras.Model(inner_inputs, inner_outputs, name="base")
    inputs = keras.Input((6, 6, 3))
    # The nested model's output goes on to a batch norm outside it: not folded across the boundary.
    model = keras.Model(inputs, keras.layers.BatchNormalization(name="outer_norm")(inner(inputs)))
    rng = np.random.default_rng(1)
    for layer in (inner.get_layer("norm"), model.get_layer("outer_norm")):
        random_norm(layer, rng)

    overrides = batch_norm_folding(GraphPlan(model))

    assert sorted(overrides) == ["base/conv", "base/norm"]
    pixels = rng.normal(0, 1, (2, 6, 6, 3)).astype(np.float32)
    np.testing.assert_allclose(run(model, pixels, overrides), keras.ops.convert_to_numpy(model(pixels)), atol=1e-5)


@pytest.fixture(scope="module")
def lite0():
    return convviz_core.load_model("efficientnet-lite0")


def test_efficientnet_lite0_scores_are_the_model_scores(lite0):
    overrides = scoring_overrides(lite0)
    # 49 convolutions with their batch norms, 33 ReLU6 fused, and the head's softmax skipped.
    assert len(overrides) == 49 + 49 + 33 + 1
    image = convviz_core.sample_images()["chelsea"]
    inputs = lite0.preprocess(keras.ops.convert_to_tensor(lite0.prepare(image), "float32"))
    _, folded = lite0.plan.run(inputs, with_output=True, overrides=overrides)
    _, plain = lite0.plan.run(inputs, with_output=True, overrides=score_overrides(lite0))
    folded, plain = keras.ops.convert_to_numpy(folded), keras.ops.convert_to_numpy(plain)
    assert np.abs(folded - plain).max() < 1e-4
    np.testing.assert_allclose(lite0.probabilities(folded).numpy(), lite0.probabilities(plain).numpy(), atol=2e-6)
    assert np.argmax(folded) == np.argmax(plain)

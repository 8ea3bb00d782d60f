"""Tests for `VisionModel` and the graph plan: nested models, errors, no mutation."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from convviz_core import (
    InputError,
    VisionModel,
    activation_grid,
    activations,
    filter_patterns,
    grad_cam,
    overlay,
    pattern_grid,
    predict,
)
from convviz_core.features.patterns import cpu_has_bf16, deprocess_image, optimize_patterns, start_images

from book_reference import book_pattern

VGG_SIZE = 64
MOBILENET_SIZE = 96


def build_nested_vgg():
    """The book's VGG16 base (random weights) inside a Sequential with a head."""
    base = keras.applications.VGG16(
        include_top=False, weights=None, input_shape=(VGG_SIZE, VGG_SIZE, 3)
    )
    return keras.Sequential(
        [
            keras.Input((VGG_SIZE, VGG_SIZE, 3)),
            base,
            keras.layers.Flatten(name="flatten"),
            keras.layers.Dense(3, activation="softmax", name="head"),
        ],
        name="vgg_classifier",
    )


def build_nested_mobilenet():
    """A MobileNetV2 base inside a Functional model (batch norm, residual adds)."""
    base = keras.applications.MobileNetV2(
        include_top=False, weights=None, input_shape=(MOBILENET_SIZE, MOBILENET_SIZE, 3), alpha=0.35
    )
    inputs = keras.Input((MOBILENET_SIZE, MOBILENET_SIZE, 3))
    x = keras.layers.GlobalAveragePooling2D(name="gap")(base(inputs))
    x = keras.layers.Dense(4, name="logits")(x)
    outputs = keras.layers.Activation("softmax", name="softmax")(x)
    return keras.Model(inputs, outputs, name="mobilenet_classifier")


def build_plain():
    inputs = keras.Input((12, 20, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv_a")(inputs)
    x = keras.layers.MaxPooling2D(2, name="pool")(x)
    x = keras.layers.Conv2D(5, 3, padding="same", activation="relu", name="conv_b")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    outputs = keras.layers.Dense(2, activation="softmax", name="head")(x)
    return keras.Model(inputs, outputs, name="plain")


NESTED = {
    "vgg": (
        build_nested_vgg,
        keras.applications.vgg16.preprocess_input,
        "vgg16",
        ["block1_conv1", "block3_conv1", "block5_pool"],
    ),
    "mobilenet": (
        build_nested_mobilenet,
        keras.applications.mobilenet_v2.preprocess_input,
        "mobilenetv2_0.35_96",
        ["Conv1_relu", "block_2_add", "block_6_expand_BN", "out_relu"],
    ),
}


@pytest.fixture(scope="module")
def nested():
    """{kind: (VisionModel, base model)}, built once for the module."""
    keras.utils.set_random_seed(0)  # keras.applications initialise their weights at random.
    models = {}
    for kind, (build, preprocess, base_name, _) in NESTED.items():
        keras_model = build()
        models[kind] = (
            VisionModel(keras_model, preprocess=preprocess),
            keras_model.get_layer(base_name),
        )
    return models


def random_image(height, width, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def preprocessed(preprocess, image):
    return preprocess(tf.constant(image[np.newaxis], tf.float32))


# --- Nested models ----------------------------------------------------------------


def test_nested_layers_are_listed_as_outer_slash_inner(nested):
    model, base = nested["vgg"]
    assert model.layer_names == [f"vgg16/{layer.name}" for layer in base.layers[1:]]
    assert model.layer_names[:3] == [
        "vgg16/block1_conv1",
        "vgg16/block1_conv2",
        "vgg16/block1_pool",
    ]
    assert model.default_cam_layer() == "vgg16/block5_conv3"

    model, base = nested["mobilenet"]
    expected = {
        f"{base.name}/{layer.name}" for layer in base.layers[1:] if len(layer.output.shape) == 4
    }
    assert set(model.layer_names) == expected and len(model.layer_names) == len(expected)
    assert model.layer_names[0] == f"{base.name}/Conv1"
    assert model.default_cam_layer() == f"{base.name}/out_relu"


def test_book_style_sequential_with_an_added_base():
    # Book §5.3: model = Sequential(); model.add(conv_base); model.add(Flatten()); ...
    keras.utils.set_random_seed(1)
    conv_base = keras.applications.VGG16(include_top=False, weights=None, input_shape=(32, 32, 3))
    keras_model = keras.Sequential()
    keras_model.add(conv_base)
    keras_model.add(keras.layers.Flatten())
    keras_model.add(keras.layers.Dense(1, activation="sigmoid"))
    model = VisionModel(keras_model)
    assert model.input_size == (32, 32) and model.class_count == 2
    assert (
        model.layer_names[0] == "vgg16/block1_conv1"
        and model.layer_names[-1] == "vgg16/block5_pool"
    )
    assert model.default_cam_layer() == "vgg16/block5_conv3"
    image = random_image(32, 32)
    assert grad_cam(model, image, 0).shape == grad_cam(model, image, 1).shape == (2, 2)


@pytest.mark.parametrize("kind", list(NESTED))
def test_inner_activations_equal_the_inner_model_called_directly(nested, kind):
    model, base = nested[kind]
    _, preprocess, _, inner_names = NESTED[kind]
    size = model.input_size[0]
    image = random_image(size, size, seed=1)
    reference = keras.Model(base.input, [base.get_layer(name).output for name in inner_names])
    expected = reference(preprocessed(preprocess, image))

    result = activations(model, image, [f"{base.name}/{name}" for name in inner_names])

    for name, wanted in zip(inner_names, expected, strict=True):
        wanted = wanted.numpy()[0]
        got = result[f"{base.name}/{name}"]
        assert got.shape == wanted.shape
        np.testing.assert_allclose(
            got, wanted, rtol=1e-4, atol=1e-5 * np.abs(wanted).max(), err_msg=name
        )


def vgg_grad_cam_reference(model, base, image, layer_name, class_index):
    """Grad-CAM through VGG16's chain of layers, the head's softmax left out."""
    feature_model = keras.Model(base.input, base.get_layer(layer_name).output)
    features = feature_model(preprocessed(keras.applications.vgg16.preprocess_input, image))
    later = base.layers[[layer.name for layer in base.layers].index(layer_name) + 1 :]
    head = model.keras_model.get_layer("head")
    with tf.GradientTape() as tape:
        tape.watch(features)
        x = features
        for layer in later:
            x = layer(x)
        logits = tf.matmul(keras.layers.Flatten()(x), head.kernel) + head.bias
        score = logits[0, class_index]
    gradients = tape.gradient(score, features).numpy()[0]
    features = features.numpy()[0].astype(np.float64)
    heatmap = np.maximum((features * gradients.mean(axis=(0, 1))).mean(axis=-1), 0)
    return heatmap / heatmap.max() if heatmap.max() > 0 else heatmap


@pytest.mark.parametrize("layer_name", ["block3_conv1", "block5_conv3"])
def test_grad_cam_on_inner_layer_matches_a_reference(nested, layer_name):
    model, base = nested["vgg"]
    image = random_image(VGG_SIZE, VGG_SIZE, seed=2)
    peaks = []
    for class_index in range(3):
        expected = vgg_grad_cam_reference(model, base, image, layer_name, class_index)
        heatmap = grad_cam(model, image, class_index, f"vgg16/{layer_name}")
        assert heatmap.shape == expected.shape
        np.testing.assert_allclose(heatmap, expected, atol=2e-4, err_msg=str(class_index))
        peaks.append(expected.max())
    assert max(peaks) == 1.0  # The check compared real maps, not only zeros.


def test_grad_cam_on_nested_mobilenet(nested):
    model, base = nested["mobilenet"]
    image = random_image(MOBILENET_SIZE, MOBILENET_SIZE, seed=3)
    for class_index in (None, 0, 1, 2, 3):
        heatmap = grad_cam(model, image, class_index)
        assert heatmap.dtype == np.float32 and heatmap.shape == (3, 3)  # out_relu at 96×96.
        assert np.all(np.isfinite(heatmap)) and heatmap.min() >= 0 and heatmap.max() <= 1
    top = predict(model, image, top=4)
    assert sorted(index for index, _, _ in top) == [0, 1, 2, 3]
    assert sum(probability for _, _, probability in top) == pytest.approx(1, abs=1e-5)
    # The default class is the top one.
    np.testing.assert_array_equal(grad_cam(model, image), grad_cam(model, image, top[0][0]))


def test_filter_patterns_on_inner_layer_equal_the_book_loop(nested):
    model, base = nested["vgg"]
    filters, steps, step_size = [0, 7], 3, 1.0
    layer_model = keras.Model(base.input, base.get_layer("block3_conv1").output)
    preprocess = keras.applications.vgg16.preprocess_input

    def mean_activations(images):
        output = layer_model(preprocess(tf.constant(images))).numpy()
        return np.array([output[i, :, :, f].mean() for i, f in enumerate(filters)])

    starts = start_images(filters, VGG_SIZE, VGG_SIZE, seed=0)
    assert np.all(mean_activations(starts) > 0)  # Both filters are alive at the start.
    reference = np.stack(
        [
            book_pattern(layer_model, preprocess, filter_index, start, steps, step_size)
            for filter_index, start in zip(filters, starts, strict=True)
        ]
    )

    raw, _ = optimize_patterns(
        model, "vgg16/block3_conv1", filters, steps=steps, step_size=step_size, precision="float32"
    )
    np.testing.assert_allclose(raw - starts, reference - starts, rtol=1e-3, atol=1e-3)
    assert np.all(mean_activations(raw) > mean_activations(starts))
    # Without a size, patterns have the model's input size (the reference's).
    images = filter_patterns(model, "vgg16/block3_conv1", filters, steps=steps, precision="float32")
    assert images.shape == (2, VGG_SIZE, VGG_SIZE, 3)
    assert np.abs(images.astype(int) - np.stack([deprocess_image(r) for r in reference])).max() <= 1


def test_filter_patterns_on_nested_mobilenet(nested):
    model, base = nested["mobilenet"]
    images = filter_patterns(
        model, f"{base.name}/block_2_add", [0, 3], steps=2, precision="float32"
    )
    assert images.shape == (2, MOBILENET_SIZE, MOBILENET_SIZE, 3) and images.dtype == np.uint8


# --- Nothing is mutated ------------------------------------------------------------


def all_layers(model):
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from all_layers(layer)


def snapshot(keras_model):
    probe = (
        np.random.default_rng(9)
        .uniform(-1, 1, (1, *keras_model.input_shape[1:]))
        .astype(np.float32)
    )
    return {
        "config": json.dumps(keras_model.get_config(), sort_keys=True, default=repr),
        "weights": [weight.copy() for weight in keras_model.get_weights()],
        "variables": [v.path for v in keras_model.variables],
        "final_activation": getattr(keras_model.layers[-1], "activation", None).__name__,
        "inbound_nodes": {
            layer.path if hasattr(layer, "path") else layer.name: len(layer._inbound_nodes)
            for layer in all_layers(keras_model)
        },
        "dtypes": [
            (layer.name, layer.dtype_policy.name, layer.trainable)
            for layer in all_layers(keras_model)
        ],
        "output": keras_model(probe, training=False).numpy(),
    }


# For each model, the layers every view is run on (the other tests use the same
# ones, so the compiled functions are shared).
VIEW_LAYERS = {
    "plain": ("conv_b", ["conv_a", None]),
    "vgg": ("vgg16/block3_conv1", ["vgg16/block3_conv1", None]),
    "mobilenet": ("mobilenetv2_0.35_96/block_2_add", [None]),
}


def run_every_view(model, image, pattern_layer, cam_layers):
    names = model.layer_names
    result = activations(model, image, names)
    activation_grid(result[names[-1]])
    precisions = ["float32", "bfloat16"] if cpu_has_bf16() else ["float32"]
    for precision in precisions:
        patterns = filter_patterns(model, pattern_layer, [0, 3], steps=2, precision=precision)
    pattern_grid(patterns)
    predict(model, image)
    for layer_name in cam_layers:
        heatmap = grad_cam(model, image, 1, layer_name)
    overlay(image, heatmap)


@pytest.mark.parametrize("kind", ["plain", "vgg", "mobilenet"])
def test_no_view_mutates_the_model_or_the_image(nested, kind):
    if kind == "plain":
        model = VisionModel(build_plain())
    else:
        model = nested[kind][0]
    keras_model = model.keras_model
    before = snapshot(keras_model)
    image = random_image(30, 25, seed=4)
    image.setflags(write=False)
    image_before = image.copy()

    run_every_view(model, image, *VIEW_LAYERS[kind])
    if cpu_has_bf16():
        # The bf16 patterns came from a private bf16 copy, not from a float32 fallback.
        twin = model.cached_function(("bfloat16_twin",), lambda: None)
        assert twin is not None and twin.model is not keras_model
        assert twin.layer_infos()[0].layer.compute_dtype == "bfloat16"

    after = snapshot(keras_model)
    assert after["config"] == before["config"]
    assert after["variables"] == before["variables"]
    for old, new in zip(before["weights"], after["weights"], strict=True):
        np.testing.assert_array_equal(new, old)
    assert after["final_activation"] == before["final_activation"] == "softmax"
    assert after["inbound_nodes"] == before["inbound_nodes"]
    assert after["dtypes"] == before["dtypes"]
    np.testing.assert_array_equal(after["output"], before["output"])
    np.testing.assert_array_equal(image, image_before)


def test_views_accept_read_only_inputs_and_leave_them_unchanged():
    model = VisionModel(build_plain())
    image = random_image(12, 20, seed=5)
    heatmap = np.linspace(0, 1, 12).reshape(3, 4).astype(np.float32)
    patterns = np.random.default_rng(6).integers(0, 256, (3, 4, 4, 3), dtype=np.uint8)
    raw = np.random.default_rng(7).normal(140, 5, (4, 4, 3))
    arrays = [image, heatmap, patterns, raw]
    copies = [array.copy() for array in arrays]
    for array in arrays:
        array.setflags(write=False)
    overlay(image, heatmap)
    pattern_grid(patterns)
    deprocess_image(raw)
    activations(model, image, ["conv_a"])
    grad_cam(model, image, 0)
    predict(model, image)
    for array, copy in zip(arrays, copies, strict=True):
        np.testing.assert_array_equal(array, copy)


# --- Errors ------------------------------------------------------------------------


VIEWS = {
    "activations": lambda model, image, name: activations(model, image, [name]),
    "filter_patterns": lambda model, image, name: filter_patterns(model, name, [0], steps=1),
    "grad_cam": lambda model, image, name: grad_cam(model, image, 0, name),
}


@pytest.mark.parametrize("view", list(VIEWS))
@pytest.mark.parametrize(
    "bad_name, reason",
    [
        ("nope", "no layer of that name"),
        ("block3_conv1", "no layer of that name"),  # Inner layers need their prefix.
        ("vgg16/nope", "no layer of that name"),
        ("vgg16", "no layer of that name"),
        ("flatten", "its output has shape (None, 2048)"),
        ("head", "its output has shape (None, 3)"),
    ],
)
def test_bad_layer_is_an_input_error_listing_valid_names(nested, view, bad_name, reason):
    model, _ = nested["vgg"]
    with pytest.raises(InputError) as raised:
        VIEWS[view](model, random_image(VGG_SIZE, VGG_SIZE), bad_name)
    message = str(raised.value)
    assert reason in message and f"'{bad_name}'" in message
    assert "Choose one of: " + ", ".join(model.layer_names) + "." in message


@pytest.mark.parametrize("view", ["activations", "grad_cam", "predict"])
@pytest.mark.parametrize(
    "image",
    [
        np.zeros((12, 20, 3), np.float32),
        np.zeros((12, 20), np.uint8),
        np.zeros((12, 20, 4), np.uint8),
        np.zeros((1, 12, 20, 3), np.uint8),
    ],
    ids=["float", "gray", "rgba", "batch"],
)
def test_image_that_is_not_rgb_uint8_is_an_input_error(view, image):
    model = VisionModel(build_plain())
    call = VIEWS.get(view, lambda model, image, name: predict(model, image))
    with pytest.raises(InputError, match="RGB uint8"):
        call(model, image, "conv_a")


class Subclassed(keras.Model):
    def __init__(self):
        super().__init__()
        self.conv = keras.layers.Conv2D(2, 3)

    def call(self, inputs):
        return self.conv(inputs)


def two_inputs():
    first, second = keras.Input((8, 8, 3)), keras.Input((8, 8, 3))
    return keras.Model([first, second], keras.layers.Add()([first, second]))


def vector_input():
    inputs = keras.Input((10,))
    return keras.Model(inputs, keras.layers.Dense(2)(inputs))


def four_channels():
    inputs = keras.Input((8, 8, 4))
    return keras.Model(inputs, keras.layers.Conv2D(2, 3)(inputs))


@pytest.mark.parametrize(
    "build, message",
    [
        (two_inputs, "has 2 inputs"),
        (vector_input, "needs an image input"),
        (four_channels, "needs an image input"),
        (lambda: keras.Sequential([keras.layers.Conv2D(2, 3)]), "has no input shape"),
        (Subclassed, "needs a Functional or Sequential"),
    ],
    ids=["two_inputs", "vector", "rgba", "unbuilt_sequential", "subclassed"],
)
def test_models_convviz_cannot_show_are_input_errors(build, message):
    with pytest.raises(InputError, match=message):
        VisionModel(build())


# --- VisionModel ----------------------------------------------------------------------


def test_vision_model_reads_size_names_and_classes_from_the_model():
    keras_model = build_plain()
    model = VisionModel(keras_model)
    assert model.name == "plain" and model.keras_model is keras_model
    assert model.input_size == (12, 20) and model.has_fixed_input_size
    assert model.layer_names == ["conv_a", "pool", "conv_b"]
    assert model.class_count == 2 and model.class_names is None
    assert VisionModel(keras_model, name="Mine").name == "Mine"
    # A non-square input: height 12, width 20.
    result = activations(model, random_image(40, 30), ["conv_a", "conv_b"])
    assert result["conv_a"].shape == (12, 20, 4) and result["conv_b"].shape == (6, 10, 5)


def test_model_of_any_input_size_uses_224():
    inputs = keras.Input((None, None, 3))
    keras_model = keras.Model(inputs, keras.layers.Conv2D(2, 3, name="conv")(inputs))
    model = VisionModel(keras_model)
    assert model.input_size == (224, 224) and not model.has_fixed_input_size
    assert model.class_count is None
    assert activations(model, random_image(10, 10), ["conv"])["conv"].shape == (222, 222, 2)
    assert filter_patterns(model, "conv", [1], size=9, steps=2).shape == (1, 9, 9, 3)


@pytest.mark.parametrize("names", [["a"], ["a", "b", "c"]])
def test_wrong_number_of_class_names_is_an_input_error(names):
    with pytest.raises(InputError, match=f"{len(names)} class names were given"):
        VisionModel(build_plain(), class_names=names)


def test_grayscale_model_sees_the_luminance_of_the_image():
    inputs = keras.Input((5, 5, 1))
    features = keras.layers.Conv2D(1, 1, use_bias=False, name="identity")(inputs)
    x = keras.layers.Conv2D(3, 3, activation="relu", name="conv")(features)
    outputs = keras.layers.Dense(2, activation="softmax")(keras.layers.GlobalAveragePooling2D()(x))
    keras_model = keras.Model(inputs, outputs)
    keras_model.get_layer("identity").set_weights([np.ones((1, 1, 1, 1), np.float32)])
    model = VisionModel(keras_model)
    image = random_image(5, 5, seed=8)

    result = activations(model, image, ["identity"])["identity"]

    luminance = image.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    np.testing.assert_allclose(result[:, :, 0], luminance, rtol=1e-6)
    assert grad_cam(model, image, 1).shape == (3, 3)
    assert filter_patterns(model, "conv", [0, 2], steps=2).shape == (2, 5, 5, 3)


@pytest.mark.parametrize("kind", ["vgg", "mobilenet"])
def test_every_cam_method_explains_an_inner_layer_of_a_nested_model(nested, kind):
    from convviz_core.cam.methods import CAM_METHODS, class_activation_maps

    model, _ = nested[kind]
    size = model.input_size[0]
    image = random_image(size, size, seed=5)
    layer = model.default_cam_layer()
    assert "/" in layer  # The last convolution lives inside the nested base.
    height, width = model.layer_info(layer).output_shape[1:3]
    maps = class_activation_maps(model, image, methods=list(CAM_METHODS), class_index=1)
    assert sorted(maps) == sorted(CAM_METHODS)
    for method, heatmap in maps.items():
        assert heatmap.dtype == np.float32 and heatmap.shape == (height, width), method
        assert np.all(np.isfinite(heatmap)) and heatmap.min() >= 0 and heatmap.max() <= 1, method

"""Tests for `convviz_core.graph.summary`: the book's `model.summary()` as rows, nested models expanded."""

import keras
import pytest

from convviz_core import VisionModel
from convviz_core.graph.summary import SummaryRow, output_shape_text, summarize_model

from book_reference import book_small_convnet


# The book's printed summary (§5.4.1), line by line.
BOOK_SUMMARY = [
    ("conv2d_5", "Conv2D", "(None, 148, 148, 32)", 896),
    ("max_pooling2d_5", "MaxPooling2D", "(None, 74, 74, 32)", 0),
    ("conv2d_6", "Conv2D", "(None, 72, 72, 64)", 18496),
    ("max_pooling2d_6", "MaxPooling2D", "(None, 36, 36, 64)", 0),
    ("conv2d_7", "Conv2D", "(None, 34, 34, 128)", 73856),
    ("max_pooling2d_7", "MaxPooling2D", "(None, 17, 17, 128)", 0),
    ("conv2d_8", "Conv2D", "(None, 15, 15, 128)", 147584),
    ("max_pooling2d_8", "MaxPooling2D", "(None, 7, 7, 128)", 0),
    ("flatten_2", "Flatten", "(None, 6272)", 0),
    ("dropout_1", "Dropout", "(None, 6272)", 0),
    ("dense_3", "Dense", "(None, 512)", 3211776),
    ("dense_4", "Dense", "(None, 1)", 513),
]


def test_the_book_convnet_summary_matches_the_book_line_by_line():
    summary = summarize_model(book_small_convnet())
    assert summary.name == "sequential_2"
    assert [(row.name, row.type, row.output_shape, row.parameters) for row in summary.rows] == BOOK_SUMMARY
    assert all(row.depth == 0 for row in summary.rows)
    # "Total params: 3,453,121 / Trainable params: 3,453,121 / Non-trainable params: 0"
    assert summary.total_parameters == 3_453_121
    assert summary.trainable_parameters == 3_453_121
    assert summary.non_trainable_parameters == 0


def nested_classifier(freeze_base):
    """A conv base (Functional, with batch norm) inside a Sequential, like the book's §5.3."""
    inputs = keras.Input((32, 32, 3), name="base_input")
    x = keras.layers.Conv2D(8, 3, padding="same", name="conv")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.ReLU(name="relu")(x)
    base = keras.Model(inputs, x, name="base")
    base.trainable = not freeze_base
    return keras.Sequential(
        [
            keras.Input((32, 32, 3)),
            base,
            keras.layers.GlobalAveragePooling2D(name="gap"),
            keras.layers.Dense(3, activation="softmax", name="head"),
        ],
        name="classifier",
    )


@pytest.mark.parametrize(
    "freeze_base, trainable, non_trainable",
    [
        # conv 3*3*3*8 + 8 = 224; bn gamma/beta 16 trainable, moving mean/var 16 not; head 8*3 + 3 = 27.
        (False, 224 + 16 + 27, 16),
        (True, 27, 224 + 32),
    ],
)
def test_nested_models_are_expanded_with_outer_inner_names(freeze_base, trainable, non_trainable):
    summary = summarize_model(nested_classifier(freeze_base))
    assert [(row.name, row.type, row.output_shape, row.parameters, row.depth) for row in summary.rows] == [
        ("base", "Functional", "(None, 32, 32, 8)", 224 + 32, 0),
        ("base/base_input", "InputLayer", "(None, 32, 32, 3)", 0, 1),
        ("base/conv", "Conv2D", "(None, 32, 32, 8)", 224, 1),
        ("base/bn", "BatchNormalization", "(None, 32, 32, 8)", 32, 1),
        ("base/relu", "ReLU", "(None, 32, 32, 8)", 0, 1),
        ("gap", "GlobalAveragePooling2D", "(None, 8)", 0, 0),
        ("head", "Dense", "(None, 3)", 27, 0),
    ]
    # The nested model's row and its layers' rows are not counted twice.
    assert summary.total_parameters == 224 + 32 + 27
    assert (summary.trainable_parameters, summary.non_trainable_parameters) == (trainable, non_trainable)


def test_row_names_are_the_addresses_the_views_use():
    # Every layer the views can show appears in the summary under the same name.
    model = VisionModel(nested_classifier(freeze_base=False))
    names = {row.name for row in summarize_model(model.keras_model).rows}
    assert set(model.layer_names) <= names
    assert "base/conv" in model.layer_names


def test_a_functional_model_lists_its_input_layer_as_keras_does():
    inputs = keras.Input((8, 8, 3), name="pixels")
    outputs = keras.layers.Conv2D(2, 3, name="conv")(inputs)
    summary = summarize_model(keras.Model(inputs, outputs))
    assert [row.name for row in summary.rows] == ["pixels", "conv"]
    assert summary.rows[0] == SummaryRow("pixels", "InputLayer", "(None, 8, 8, 3)", 0, 0)


def test_a_layer_with_several_outputs_lists_every_shape():
    inputs = keras.Input((6,))
    first, second = keras.layers.Lambda(lambda x: (x[:, :2], x[:, 2:]), name="split")(inputs)
    model = keras.Model(inputs, [first, second])
    split = next(row for row in summarize_model(model).rows if row.name == "split")
    assert split.output_shape == "(None, 2), (None, 4)"


def test_a_layer_never_called_has_an_unknown_shape():
    assert output_shape_text(keras.layers.Dense(3)) == "?"


def test_only_keras_models_are_summarised():
    with pytest.raises(TypeError, match="Received: Dense"):
        summarize_model(keras.layers.Dense(3))

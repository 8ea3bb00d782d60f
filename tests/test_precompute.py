"""Tests for `convviz_core.features.precompute`: atlases computed ahead are the ones the Filters page asks for."""

import keras
import numpy as np
import pytest

from convviz_core import VisionModel
from convviz_core.features import atlas_service, patterns, precompute
from convviz_core.features.atlas_cache import FilterAtlasCache
from convviz_core.jobs import Priority


def tiny_model():
    """Two convolutions (4 then 6 filters) and a pooling layer, any input size."""
    inputs = keras.Input((None, None, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv_a")(inputs)
    x = keras.layers.Conv2D(6, 3, padding="same", activation="relu", name="conv_b")(x)
    x = keras.layers.MaxPooling2D(name="pool")(x)
    keras_model = keras.Model(inputs, x)
    rng = np.random.default_rng(0)
    keras_model.set_weights([rng.normal(0, 0.3, w.shape).astype("float32") for w in keras_model.weights])
    return VisionModel(keras_model, preprocess=lambda images: images / 255.0, name="tiny", input_size=(16, 16))


@pytest.fixture(scope="module")
def model():
    return tiny_model()


def test_a_precomputed_atlas_is_found_by_the_pages_own_request_without_computing(model, tmp_path, monkeypatch):
    report = []
    outcomes = precompute.precompute(
        [model], methods=("book", "clear", "large"), layers=["conv_b"], store=FilterAtlasCache(tmp_path),
        report=lambda index, total, outcome: report.append((index, total, outcome and outcome.state)),
    )
    assert [(o.layer, o.method, o.state) for o in outcomes] == [
        ("conv_b", "book", "computed"), ("conv_b", "clear", "computed"),
        *[(f"conv_b, filter {index}", "large", "computed") for index in range(6)],
    ]
    assert report[:4] == [(1, 8, None), (1, 8, "computed"), (2, 8, None), (2, 8, "computed")]
    assert len(list(tmp_path.glob("tiny-*.npy"))) == 8

    # A new server on the same folder: the page's requests are answered from disk, nothing is computed.
    def no_computing(*args, **kwargs):
        raise AssertionError("the atlas was computed again")

    monkeypatch.setattr(patterns, "filter_patterns", no_computing)
    server_store = FilterAtlasCache(tmp_path)
    for method in ("gradient-ascent", "fourier"):
        choice = atlas_service.AtlasChoice(layer="conv_b", method=method)
        request = atlas_service.grid_request(model, choice)
        ticket = atlas_service.submit_atlas(server_store, model, request, builtin=True, session_id="student",
                                            priority=Priority.NORMAL)
        assert ticket.done()
        atlas = ticket.result()
        assert atlas.source == "disk"
        assert atlas.patterns.shape == (6, 128, 128, 3)
    # "One filter, large" of any filter of the grid.
    choice = atlas_service.AtlasChoice(layer="conv_b")
    large = atlas_service.large_pattern_request(model, choice, 5)
    ticket = atlas_service.submit_atlas(server_store, model, large, builtin=True, session_id="student")
    assert ticket.done() and ticket.result().source == "disk"
    assert ticket.result().patterns.shape == (1, atlas_service.LARGE_PATTERN_SIZE, atlas_service.LARGE_PATTERN_SIZE, 3)

    # Run again: everything is already there.
    again = precompute.precompute([model], methods=("book",), layers=["conv_b"], store=FilterAtlasCache(tmp_path))
    assert [o.state for o in again] == ["cached"]


def test_the_default_plan_is_every_layer_for_the_book_the_lesson_layers_for_the_clear_mode_and_large_patterns(model):
    plan = precompute.planned_atlases(model)
    assert [(layer, method) for layer, method, _ in plan] == [
        ("conv_a", "book"), ("conv_b", "book"), ("pool", "book"), ("conv_a", "clear"), ("conv_b", "clear"),
        *[(f"conv_b, filter {index}", "large") for index in range(6)],
    ]
    book = plan[0][2]
    assert (book.method, book.schedule, book.filter_indices, book.height) == ("gradient-ascent", "matched", (0, 1, 2, 3), 128)
    clear = plan[3][2]
    assert (clear.method, clear.precision) == ("fourier", "float32")
    # A layer list may name layers of other models: the ones this model lacks are left out.
    assert [layer for layer, _, _ in precompute.planned_atlases(model, ("book",), ["conv_b", "block2b_expand_conv"])] == ["conv_b"]


def test_clear_mode_layers_spread_over_depth():
    inputs = keras.Input((None, None, 3))
    x = inputs
    for index in range(9):
        x = keras.layers.Conv2D(4 if index < 8 else 64, 3, padding="same", name=f"conv_{index}")(x)
    many = VisionModel(keras.Model(inputs, x), name="many", input_size=(64, 64))
    # Five convolutions evenly from the first to the last (0, 2, 4, 6, 8); the
    # default layer (the one with 64 filters: conv_8) is among them.
    assert precompute.clear_mode_layers(many) == ["conv_0", "conv_2", "conv_4", "conv_6", "conv_8"]


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--models", "vgg16"], "only offline models"),
        (["--methods", "fast"], "Choose methods among book, clear, large"),
        (["--layers", "no_such_layer", "--models", "small-convnet"], "no_such_layer"),
    ],
)
def test_bad_arguments_exit_with_code_2_and_say_why(arguments, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        precompute.main(arguments)
    assert exit_info.value.code == precompute.EXIT_USAGE == 2
    assert message in capsys.readouterr().err


def test_a_failed_atlas_is_reported_and_the_exit_code_is_1(model, tmp_path, monkeypatch):
    from convviz_core import InputError

    def broken(*args, **kwargs):
        raise InputError("out of memory, say")

    monkeypatch.setattr(patterns, "filter_patterns", broken)
    outcomes = precompute.precompute([model], methods=("clear",), layers=["conv_a"], store=FilterAtlasCache(tmp_path))
    assert [(o.state, o.message) for o in outcomes] == [("failed", "out of memory, say")]
    lines = precompute.summarize(outcomes)
    assert lines[0].startswith("0 atlases computed, 0 already cached, 1 failed")
    assert "conv_a" in lines[1]


def test_each_models_default_layer_comes_first(model, tmp_path):
    # The default layer (the one with the most filters here: conv_b) is what every student opens first.
    outcomes = precompute.precompute([model], methods=("book", "clear"), store=FilterAtlasCache(tmp_path))
    assert [(o.layer, o.method) for o in outcomes] == [
        ("conv_b", "book"), ("conv_b", "clear"), ("conv_a", "book"), ("pool", "book"), ("conv_a", "clear"),
    ]
    assert all(outcome.state == "computed" for outcome in outcomes)

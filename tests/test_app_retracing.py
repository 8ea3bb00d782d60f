"""Through the app, TensorFlow traces each view's graph once per model and layer, never per filter, class or photo.

`tests/test_activations.py`, `test_gradcam.py` and `test_patterns.py` check
the core functions one call at a time. Here a user of the dashboard does what
users do -- sweeps the layer slider back and forth, opens channel after
channel, asks for other classes, other filter ranges, sizes and step counts,
and uploads photo after photo -- and the tracing counters of core
(`TRACE_COUNTS` in `activations.py`, `gradcam.py`, `patterns.py`) must move
only when a (model, layer) is shown for the first time.

The model is a small upload that accepts any input size, made for this test:
it is new to the process, so its first traces are counted too, and its
filter patterns can be asked for at several sizes.
"""

import itertools
from pathlib import Path

import cv2
import keras
import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from convviz_app import cached
from convviz_core import explanations
from convviz_core.features import patterns as patterns_module
from convviz_core.intermediate_activations import TRACE_COUNTS as ACTIVATION_TRACES
from convviz_core.cam.gradcam import TRACE_COUNTS as GRAD_CAM_TRACES
from convviz_core.features.patterns import TRACE_COUNTS as PATTERN_TRACES

APP = Path(__file__).resolve().parent.parent / "app.py"
TIMEOUT = 240
LAYERS = ["conv_a", "pool_a", "conv_b", "conv_c"]
CONVOLUTIONS = ["conv_a", "conv_b", "conv_c"]
CLASSES = 3


def any_size_model():
    """A classifier for images of any size, with seeded weights unique to this test."""
    inputs = keras.Input((None, None, 3))
    x = keras.layers.Conv2D(8, 3, activation="relu", name="conv_a")(inputs)
    x = keras.layers.MaxPooling2D(name="pool_a")(x)
    x = keras.layers.Conv2D(8, 3, activation="relu", name="conv_b")(x)
    x = keras.layers.Conv2D(8, 3, activation="relu", name="conv_c")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = keras.layers.Dense(CLASSES, activation="softmax", name="head")(x)
    model = keras.Model(inputs, outputs, name="any_size")
    rng = np.random.default_rng(20261130)
    model.set_weights([rng.normal(0.0, 0.4, weight.shape).astype(np.float32) for weight in model.get_weights()])
    return model


def photo(seed):
    image = np.random.default_rng(seed).integers(0, 256, (40 + seed, 56 - seed, 3), dtype=np.uint8)
    return cv2.imencode(".png", image)[1].tobytes()


def traces():
    return {
        "activations": ACTIVATION_TRACES["activations"],
        "grad_cam": GRAD_CAM_TRACES["grad_cam"],
        "filter_patterns": PATTERN_TRACES["filter_patterns"],
    }


def difference(after, before):
    return {name: after[name] - before[name] for name in after}


def assert_clean(at):
    assert not at.exception, [exception.value for exception in at.exception]
    assert not at.error, [error.value for error in at.error]


def widget(widgets, label):
    return next(item for item in widgets if item.label == label)


@pytest.fixture()
def core_calls(monkeypatch):
    """Counts the calls into core that can trace, so the test knows they really happened."""
    calls = {"activations": 0, "grad_cam": 0, "filter_patterns": 0}

    def counting(name, function):
        def counted(*args, **kwargs):
            calls[name] += 1
            return function(*args, **kwargs)

        return counted

    monkeypatch.setattr(cached, "activations", counting("activations", cached.activations))
    monkeypatch.setattr(explanations, "grad_cam_with_probabilities",
                        counting("grad_cam", explanations.grad_cam_with_probabilities))
    monkeypatch.setattr(
        patterns_module, "filter_patterns", counting("filter_patterns", patterns_module.filter_patterns)
    )
    return calls


def test_tracing_stays_once_per_model_and_layer_while_a_user_explores(tmp_path, monkeypatch, core_calls):
    monkeypatch.setenv("CONVVIZ_CACHE_DIR", str(tmp_path / "cache"))
    # Atlases that earlier tests left computing in the background would trace
    # graphs of their own while this test counts.
    for job in cached.atlas_store().running_jobs():
        job.wait(TIMEOUT)
    path = tmp_path / "any-size.keras"
    any_size_model().save(path)

    before = traces()
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    at.session_state["model_choice"] = "upload"
    at.session_state["model_input_side"] = 64
    at.run()
    at.file_uploader(key="model_file").set_value(("any-size.keras", path.read_bytes(), "application/octet-stream"))
    at.file_uploader(key="image_file").set_value(("photo-0.png", photo(0), "image/png")).run()
    assert_clean(at)
    model_key = at.session_state["convviz_selection"].model_key

    def show_activations(layer, channel):
        at.select_slider(key=f"activations_layer:{model_key}").set_value(layer).run()
        at.slider(key=f"activations_channel:{model_key}:{layer}").set_value(channel).run()
        assert_clean(at)
        assert any(caption.value.startswith(f"Channel {channel} of {layer}") for caption in at.main.caption)

    def show_grad_cam(layer, class_index):
        image_key = at.session_state["convviz_selection"].image_key
        at.selectbox(key=f"gradcam_layer:{model_key}").set_value(layer).run()
        at.selectbox(key=f"gradcam_class:{model_key}:{image_key}").set_value(class_index).run()
        assert_clean(at)
        assert any(caption.value.startswith(f"Grad-CAM of 'class {class_index}' at {layer}") for caption in at.main.caption)

    def show_patterns(layer, first, count, size, steps):
        widget(at.main.selectbox, "Layer").set_value(layer)
        widget(at.main.number_input, "First filter").set_value(first)
        widget(at.main.selectbox, "Filters").set_value(count)
        widget(at.main.select_slider, "Pattern size").set_value(size)
        widget(at.main.number_input, "Steps").set_value(steps)
        at.main.button[0].click().run()
        assert_clean(at)
        last = min(first + count, 8) - 1
        assert at.main.image[0].captions[0] == (
            f"Filters {first} to {last} of {layer}, in reading order, gradient ascent with momentum each, "
            f"as far as the book's {steps} steps go (in fewer)"
        )
        # Another filter shown large: one more pattern, at 150 pixels.
        widget(at.main.select_slider, "Filter").set_value(last).run()
        assert_clean(at)

    # First visits (the upload opened Activations at conv_a): every layer once in each view.
    for layer in LAYERS:
        show_activations(layer, 1)
    at.switch_page("pages/grad-cam.py").run()
    for layer in LAYERS:
        show_grad_cam(layer, 0)
    at.switch_page("pages/filter-patterns.py").run()  # The default atlas: conv_a.
    assert_clean(at)
    for layer in CONVOLUTIONS[1:]:
        show_patterns(layer, 0, 8, 64, 3)
    first_visits = difference(traces(), before)
    # At most one trace per (model, layer) shown; at least one, so the counters are live.
    assert 1 <= first_visits["activations"] <= len(LAYERS)
    assert 1 <= first_visits["grad_cam"] <= len(LAYERS)
    assert 1 <= first_visits["filter_patterns"] <= len(CONVOLUTIONS)

    # Then a long exploration of what was already shown once: new photos,
    # layers back and forth, other channels, classes, filters, sizes, steps.
    calls_before, settled = dict(core_calls), traces()
    sweep = itertools.cycle([LAYERS[3], LAYERS[0], LAYERS[2], LAYERS[1], LAYERS[0]])
    for seed in (1, 2, 3):
        at.file_uploader(key="image_file").set_value((f"photo-{seed}.png", photo(seed), "image/png")).run()
        at.switch_page("pages/activation-maps.py").run()
        for channel in range(4):
            show_activations(next(sweep), channel + seed)
        at.switch_page("pages/grad-cam.py").run()
        for class_index in range(CLASSES):
            show_grad_cam(next(sweep), class_index)
            show_grad_cam(LAYERS[-1], (class_index + seed) % CLASSES)
        at.switch_page("pages/filter-patterns.py").run()
        show_patterns(CONVOLUTIONS[seed % 3], seed, 8, (32, 48, 96)[seed - 1], 2 + seed)
    assert difference(traces(), settled) == {"activations": 0, "grad_cam": 0, "filter_patterns": 0}
    # ... though core computed all of it again: every photo is new to the caches.
    calls = difference(core_calls, calls_before)
    assert calls["activations"] >= 3 and calls["grad_cam"] >= 3 * 2 * CLASSES and calls["filter_patterns"] >= 3 * 2, calls

"""Many users at once: eight sessions of one server upload, compute and look, all at the same time.

Eight `AppTest` sessions run in eight threads of this process, the way one
`streamlit run` server runs its sessions: each session's script runs in its
own thread while the others run, and everything a server shares is shared
here too -- the `st.cache_resource` and `st.cache_data` registries (they are
process-wide), the loaded models and their compiled functions, the filter
atlas store with its background jobs, TensorFlow itself, and Streamlit's
clean-up after every run (`keras.backend.clear_session()`, `gc.collect`).

Each session uploads its own photo (six look through the book's small
convnet, two upload a `.keras` model of their own), then opens Activations,
Filters and Grad-CAM and moves a widget on each. The test checks that no run
fails or shows an error, that every session is shown its own photo and its
own model and nobody else's, and that everything it was shown equals what the
same session is shown when it is the only user (run afterwards, one session
at a time, with empty caches and the uploaded models loaded again).
"""

import base64
import contextlib
import json
import threading
import time
import types
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from unittest import mock

import cv2
import keras
import numpy as np
import pytest
from streamlit.runtime import Runtime
from streamlit.runtime.pages_manager import PagesManager
from streamlit.testing.v1 import AppTest
from streamlit.testing.v1 import app_test as app_test_module
from streamlit.testing.v1.util import patch_config_options

from convviz_core.models.registry import BUILTIN_MODELS

APP = Path(__file__).resolve().parent.parent / "app.py"
SESSIONS = 8
# A run may wait for a model another session is loading, or for the filter
# atlases of the sessions before it (they are computed one at a time).
TIMEOUT = 300
SMALL = "builtin:small-convnet"
SMALL_TITLE = BUILTIN_MODELS["small-convnet"].title
SMALL_LAYERS = ["conv2d_1", "max_pooling2d_1", "conv2d_2", "max_pooling2d_2",
                "conv2d_3", "max_pooling2d_3", "conv2d_4", "max_pooling2d_4"]


# --- AppTest sessions that run at the same time --------------------------------------


class _PagesManagerOfOneServer:
    """Stands in for `PagesManager` inside AppTest: builds real ones, leaves the process-wide flag alone.

    AppTest writes `PagesManager.uses_pages_directory = None` before every
    run; here that lands on this class instead of the real one.
    """

    uses_pages_directory = None

    def __new__(cls, *args, **kwargs):
        return PagesManager(*args, **kwargs)


class OneServer:
    """What the sessions of `one_server_for_many_sessions` share, and when each of their runs ran.

    Attributes:
        runtime: The runtime every session uses (as a server has one).
        runs: (session id, start, end) of every script run, in
            `time.monotonic()` seconds.
    """

    def __init__(self, runtime):
        self.runtime = runtime
        self.runs = []
        self._lock = threading.Lock()

    def record(self, session_id, start, end):
        with self._lock:
            self.runs.append((session_id, start, end))

    def picture(self, url):
        """A picture the app showed, decoded from the media store every session shares."""
        data = self.runtime.media_file_mgr._storage.get_file(url.rsplit("/", 1)[-1]).content
        return cv2.cvtColor(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)

    def runs_beside_another_session(self):
        """How many runs overlapped in time with a run of another session."""
        return sum(
            any(other != session and other_start < end and start < other_end for other, other_start, other_end in self.runs)
            for session, start, end in self.runs
        )

    def most_runs_at_once(self):
        """The largest number of script runs, of different sessions, that were under way at one moment."""
        events = sorted([(start, 1) for _, start, _ in self.runs] + [(end, -1) for _, _, end in self.runs])
        running = most = 0
        for _, change in events:
            running += change
            most = max(most, running)
        return most


@contextlib.contextmanager
def one_server_for_many_sessions():
    """Lets `AppTest` sessions run at the same time in this process, as the sessions of one server do.

    AppTest is written for one session at a time. Each run makes a new mock
    `Runtime` the process's singleton and sets it back to None when it ends,
    patches `config.get_option` for its duration, resets the process-wide
    "pages directory" flag, and calls every session "test session id". Runs
    in several threads would pull the runtime out from under each other. So,
    as in a server, one runtime (with one media file manager) serves every
    session, each session gets its own id, and AppTest's swaps of
    process-wide state are turned off. Nothing of the app or of Streamlit's
    caching is touched.

    Yields:
        A `OneServer`.
    """
    shared = mock.MagicMock(spec=Runtime)
    shared.media_file_mgr = app_test_module.MediaFileManager(app_test_module.MemoryMediaFileStorage("/mock/media"))
    shared.dataframe_source_mgr = app_test_module.DataframeSourceManager()
    shared.cache_storage_manager = app_test_module.MemoryCacheStorageManager()
    components = app_test_module.BidiComponentManager()
    components.discover_and_register_components(start_file_watching=False)
    shared.bidi_component_registry = components
    server = OneServer(shared)
    session_ids = {}
    session_ids_lock = threading.Lock()

    class ScriptRunnerOfOneSession(app_test_module.LocalScriptRunner):
        def __init__(self, script_path, session_state, *args, **kwargs):
            super().__init__(script_path, session_state, *args, **kwargs)
            # One id per AppTest (its session state lives as long as it does).
            with session_ids_lock:
                self._session_id = session_ids.setdefault(id(session_state), f"session-{uuid.uuid4()}")

        def run(self, *args, **kwargs):
            start = time.monotonic()
            try:
                return super().run(*args, **kwargs)
            finally:
                server.record(self._session_id, start, time.monotonic())

    saved_runtime, saved_flag = Runtime._instance, PagesManager.uses_pages_directory
    Runtime._instance = shared
    # What a server's first run leaves behind: app.py calls st.navigation.
    PagesManager.uses_pages_directory = False
    try:
        with (
            patch_config_options({"global.appTest": True}),
            mock.patch.object(app_test_module, "patch_config_options", lambda overrides: contextlib.nullcontext()),
            mock.patch.object(app_test_module, "Runtime", types.SimpleNamespace(_instance=None)),
            mock.patch.object(app_test_module, "PagesManager", _PagesManagerOfOneServer),
            mock.patch.object(app_test_module, "LocalScriptRunner", ScriptRunnerOfOneSession),
        ):
            yield server
    finally:
        Runtime._instance, PagesManager.uses_pages_directory = saved_runtime, saved_flag


# --- What each user does -----------------------------------------------------------------


def photo(index):
    """A distinct photo per user: a disc or a cross on a seeded textured background, in its own size."""
    rng = np.random.default_rng(index)
    height, width = 150 + 24 * index, 190 - 8 * index
    background = cv2.resize(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8), (width, height), interpolation=cv2.INTER_CUBIC)
    image = np.clip(background.astype(int) + rng.integers(-20, 21, (height, width, 3)), 0, 255).astype(np.uint8)
    colour = tuple(int(value) for value in rng.integers(0, 256, 3))
    centre = (int(rng.integers(50, width - 50)), int(rng.integers(50, height - 50)))
    if index % 2:
        cv2.line(image, (centre[0] - 35, centre[1]), (centre[0] + 35, centre[1]), colour, 14)
        cv2.line(image, (centre[0], centre[1] - 35), (centre[0], centre[1] + 35), colour, 14)
    else:
        cv2.circle(image, centre, 32, colour, -1)
    return image


def png_file(image):
    return cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))[1].tobytes()


def tiny_model(seed, classes):
    """A small classifier with seeded weights, as a user's own `.keras` file would hold."""
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(8, 3, activation="relu", name="conv")(inputs)
    x = keras.layers.MaxPooling2D(name="pool")(x)
    x = keras.layers.Conv2D(8, 3, activation="relu", name="conv_b")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = keras.layers.Dense(classes, activation="softmax", name="head")(x)
    model = keras.Model(inputs, outputs, name=f"tiny_{seed}")
    rng = np.random.default_rng(seed)
    model.set_weights([rng.normal(0.05, 0.3, weight.shape).astype(np.float32) for weight in model.get_weights()])
    return model


def scenarios(model_files):
    """What each of the eight users does; the last two bring their own model.

    Sessions 0 and 4 ask for the same filter atlas (one computation serves
    both); the others ask for atlases of their own.
    """
    own_models = [
        ("north-south.keras", model_files[0], ["north", "south", "east"]),
        ("four seasons.keras", model_files[1], ["spring", "summer", "autumn", "winter"]),
    ]
    result = []
    for index in range(SESSIONS):
        scenario = {"index": index, "image_name": f"photo-{index}.png", "image": photo(index)}
        if index < SESSIONS - len(own_models):
            scenario.update(
                model="small-convnet",
                model_title=SMALL_TITLE,
                classes=["disc", "cross"],
                activation_layer=SMALL_LAYERS[1 + index % 5],
                channel=3 + index,
                filters={"layer": "conv2d_1", "first": 8 * (index % 4), "count": 8, "size": 64, "steps": 5},
                last_filter=8 * (index % 4) + 7,
            )
        else:
            file_name, data, classes = own_models[index - (SESSIONS - len(own_models))]
            scenario.update(
                model="upload",
                model_title=file_name,
                model_file=(file_name, data, classes),
                classes=classes,
                activation_layer="conv_b",
                channel=index - 1,
                filters=None,  # Its default atlas is 8 small patterns.
                last_filter=7,
            )
        result.append(scenario)
    return result


def assert_clean(at, where):
    """No exception and no error message anywhere on the page."""
    assert not at.exception, (where, [exception.value for exception in at.exception])
    assert not at.error, (where, [error.value for error in at.error])


def heatmap_values(chart):
    """The values of a Plotly heatmap, as the browser gets them."""
    z = json.loads(chart.proto.spec)["data"][0]["z"]
    if isinstance(z, dict):  # Plotly's typed array: base64 bytes, dtype and shape.
        shape = [int(side) for side in str(z["shape"]).split(",")]
        z = np.frombuffer(base64.b64decode(z["bdata"]), dtype=z["dtype"]).reshape(shape)
    return np.asarray(z, dtype=np.float64)


def remember(shown, view, at, server):
    """Adds what the page shows now to `shown`: captions, metrics, pictures (decoded) and heatmap values."""
    shown[f"{view}: captions"] = [caption.value for caption in at.main.caption]
    shown[f"{view}: metrics"] = {metric.label: metric.value for metric in at.main.metric}
    for element in at.main.image:
        for url, caption in zip(element.value, element.captions, strict=True):
            shown[f"{view}: picture '{caption}'"] = server.picture(url)
    charts = at.main.get("plotly_chart")
    assert len(charts) == 1, view
    shown[f"{view}: heatmap"] = heatmap_values(charts[0])


def visit(scenario, server, barrier=None):
    """One user's visit: a model, a photo, then each view with one widget moved.

    Returns:
        {what: value} of everything shown that depends on the user's photo or
        model, to compare with another run of the same visit.
    """
    index, shown = scenario["index"], {}
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    # The model is chosen before the first run, so no session loads the default model.
    at.session_state["model_choice"] = scenario["model"]
    if scenario["filters"] is not None:
        # A few filters of the first layer instead of the default 64 of conv2d_3.
        at.session_state[f"filters_params:{SMALL}"] = scenario["filters"]
    if barrier is not None:
        barrier.wait()
    at.run()
    if scenario["model"] == "upload":
        assert not at.exception and at.main.info  # No model yet: the page says so.
        file_name, data, classes = scenario["model_file"]
        at.file_uploader(key="model_file").set_value((file_name, data, "application/octet-stream"))
        at.file_uploader(key="class_names_file").set_value(("classes.txt", "\n".join(classes).encode(), "text/plain"))
    at.file_uploader(key="image_file").set_value((scenario["image_name"], png_file(scenario["image"]), "image/png")).run()
    assert_clean(at, f"session {index}: upload")
    # Its own model and its own photo, by name.
    assert at.main.caption[0].value == f"Model: {scenario['model_title']} · Image: {scenario['image_name']}"
    selection = at.session_state["convviz_selection"]
    (preview,) = [element for element in at.sidebar.image if element.captions[0].startswith("What the model sees")]
    shown["sidebar: preview"] = server.picture(preview.value[0])

    # Activations: another layer, another channel.
    at.select_slider(key=f"activations_layer:{selection.model_key}").set_value(scenario["activation_layer"]).run()
    at.slider(key=f"activations_channel:{selection.model_key}:{scenario['activation_layer']}").set_value(
        scenario["channel"]
    ).run()
    assert_clean(at, f"session {index}: Activations")
    remember(shown, "Activations", at, server)

    # Filters: a few patterns; the large view opens on the one the photo
    # excites most, then shows the last.
    at.switch_page("pages/filter-patterns.py").run()
    assert_clean(at, f"session {index}: Filters")
    picker = next(widget for widget in at.main.select_slider if widget.label == "Filter")
    shown["Filters: most active"] = picker.value
    picker.set_value(scenario["last_filter"]).run()
    assert_clean(at, f"session {index}: Filters, another filter")
    remember(shown, "Filters", at, server)

    # Grad-CAM: the top class, then the least probable one.
    at.switch_page("pages/grad-cam.py").run()
    assert_clean(at, f"session {index}: Grad-CAM")
    table = at.main.dataframe[0].value
    assert sorted(table["Class"]) == sorted(scenario["classes"])  # Its own model's classes.
    shown["Grad-CAM: classes"] = list(table["Class"])
    shown["Grad-CAM: probabilities"] = table["Probability"].to_numpy(np.float64)
    shown["Grad-CAM: top class heatmap"] = heatmap_values(at.main.get("plotly_chart")[0])
    at.selectbox(key=f"gradcam_class:{selection.model_key}:{selection.image_key}").set_value(
        int(table["Index"].iloc[-1])
    ).run()
    assert_clean(at, f"session {index}: Grad-CAM, another class")
    remember(shown, "Grad-CAM", at, server)
    return shown


# --- The test ------------------------------------------------------------------------------


@pytest.fixture()
def fresh_app_caches(tmp_path, monkeypatch):
    """Empty caches and a private atlas folder, before the test and after it."""
    from convviz_app import cached

    def clear_everything():
        cached.clear_memory_caches()
        cached.atlas_store.clear()
        cached.uploaded_model.clear()

    monkeypatch.setenv("CONVVIZ_CACHE_DIR", str(tmp_path / "cache"))
    clear_everything()
    yield clear_everything
    clear_everything()


def assert_same_as_alone(together, alone, where):
    """What a session was shown among others equals what it is shown alone.

    The maps are computed in float32 by the same compiled graphs; pictures may
    differ by a level or two (a JPEG of a map that differs in its last bit),
    numbers to float32 precision. (On our machines all of them are identical.)
    """
    assert together.keys() == alone.keys(), where
    for what, wanted in alone.items():
        got = together[what]
        if isinstance(wanted, np.ndarray) and wanted.dtype == np.uint8:
            assert got.shape == wanted.shape, (where, what)
            assert np.abs(got.astype(int) - wanted).max() <= 2, (where, what)
        elif isinstance(wanted, np.ndarray):
            np.testing.assert_allclose(got, wanted, rtol=1e-5, atol=1e-6, err_msg=f"{where}: {what}")
        else:
            assert got == wanted, (where, what)


def test_eight_users_at_once_see_their_own_photos_and_models_and_what_they_would_see_alone(tmp_path, fresh_app_caches):
    model_files = []
    for seed, classes in ((11, 3), (12, 4)):
        path = tmp_path / f"tiny-{seed}.keras"
        tiny_model(seed, classes).save(path)
        model_files.append(path.read_bytes())
    plan = scenarios(model_files)

    with one_server_for_many_sessions() as server:
        started = time.monotonic()
        barrier = threading.Barrier(SESSIONS)
        with ThreadPoolExecutor(SESSIONS) as pool:
            together = list(pool.map(lambda scenario: visit(scenario, server, barrier), plan))
        print(f"{SESSIONS} sessions at once: {time.monotonic() - started:.1f} s, "
              f"{len(server.runs)} runs, at most {server.most_runs_at_once()} at the same time, "
              f"{server.runs_beside_another_session()} beside another session's run")
        # The sessions really ran side by side, not one after another.
        assert server.runs_beside_another_session() >= len(server.runs) // 2

        fresh_app_caches()
        server.runs.clear()
        started = time.monotonic()
        alone = [visit(scenario, server) for scenario in plan]
        print(f"{SESSIONS} sessions one after another: {time.monotonic() - started:.1f} s")

    for scenario, got, wanted in zip(plan, together, alone, strict=True):
        assert_same_as_alone(got, wanted, f"session {scenario['index']}")

    # Each session was shown its own photo, on the Grad-CAM page and in the
    # sidebar's preview: of the eight uploads, its own is by far the closest.
    def thumbnail(image):
        return cv2.resize(image, (48, 48), interpolation=cv2.INTER_AREA).astype(float)

    uploads = [thumbnail(scenario["image"]) for scenario in plan]
    for scenario, got in zip(plan, together, strict=True):
        for shown in (got["Grad-CAM: picture 'Your image'"], got["sidebar: preview"]):
            distances = sorted((np.abs(thumbnail(shown) - upload).mean(), index) for index, upload in enumerate(uploads))
            assert distances[0][1] == scenario["index"] and distances[0][0] < distances[1][0] / 3, distances

"""The unit view: one channel from every side, reached by a shareable link."""

from pathlib import Path

import cv2
import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

APP = Path(__file__).resolve().parent.parent / "app.py"
TIMEOUT = 600


@pytest.fixture(scope="module", autouse=True)
def private_cache(tmp_path_factory):
    import os

    previous = os.environ.get("CONVVIZ_CACHE_DIR")
    os.environ["CONVVIZ_CACHE_DIR"] = str(tmp_path_factory.mktemp("cache"))
    yield
    if previous is None:
        os.environ.pop("CONVVIZ_CACHE_DIR")
    else:
        os.environ["CONVVIZ_CACHE_DIR"] = previous


def open_unit(**query):
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    for key, value in query.items():
        at.query_params[key] = value
    at.switch_page("pages/unit.py")
    return at.run()


def assert_clean(at):
    assert not at.exception, [exception.value for exception in at.exception]
    assert not at.error, [error.value for error in at.error]


def test_a_shared_link_opens_its_model_layer_and_channel():
    at = open_unit(model="small-convnet", layer="conv2d_1", channel="3")
    assert_clean(at)
    assert at.session_state["convviz_selection"].model_key == "builtin:small-convnet"
    assert any(caption.value.startswith("Channel 3 of conv2d_1 on") for caption in at.caption)
    captions = [image.captions for image in at.image]
    assert ["The book's gradient ascent"] in captions and ["Clear (Fourier, Lucid)"] in captions
    # The diversity set: four different pictures of the one channel.
    diversity = next(image for image in at.image if len(image.captions) == 4 and not any(image.captions))
    assert len(diversity.captions) == 4
    # Dataset examples, strongest first, among the five sample photos.
    examples = next(image for image in at.image if len(image.captions) > 1 and all(image.captions))
    scores = [float(caption.rsplit(": ", 1)[1]) for caption in examples.captions]
    assert scores == sorted(scores, reverse=True) and scores[0] > 0
    assert dict(at.query_params) == {"model": "small-convnet", "image": "chelsea", "layer": "conv2d_1", "channel": "3"}


def test_a_broken_link_falls_back_to_a_unit_that_exists():
    at = open_unit(model="small-convnet", layer="no_such_layer", channel="99999")
    assert_clean(at)
    query = dict(at.query_params)
    assert query["layer"] == "conv2d_3"  # The Filters page's default layer.
    assert query["channel"] == "0"
    # The page says which of the link's values it left out.
    assert [warning.value for warning in at.warning] == [
        "This link's layer=no_such_layer, channel=99999 does not fit this model or view, so the page "
        "shows its default instead. Ask for a new link."
    ]


def test_the_sessions_own_upload_is_among_the_photos_searched():
    at = open_unit(model="small-convnet", layer="conv2d_1", channel="0")
    photo = np.zeros((150, 150, 3), np.uint8)
    photo[40:110, 40:110] = (250, 250, 250)
    at.file_uploader(key="image_file").set_value(("square.png", cv2.imencode(".png", photo)[1].tobytes(), "image/png")).run()
    assert_clean(at)
    assert any("among the 6 sample photos and your uploads" in caption.value for caption in at.caption)


def test_the_filters_page_links_to_the_unit_of_its_large_filter():
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    at.session_state["model_choice"] = "small-convnet"
    at.session_state["filters_params:builtin:small-convnet"] = {"layer": "conv2d_1", "first": 0, "count": 8, "size": 32, "steps": 2}
    at.run()
    at.switch_page("pages/filter-patterns.py").run()
    assert_clean(at)
    chosen = next(slider for slider in at.select_slider if slider.label == "Filter").value
    links = [element for element in at.main if type(element).__name__ == "PageLink" or getattr(element, "type", "") == "page_link"]
    assert links, "no link to the unit view"
    link = links[0].proto
    assert f"filter {chosen}" in link.label
    assert "layer=conv2d_1" in link.query_string and f"channel={chosen}" in link.query_string

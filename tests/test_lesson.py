"""The guided lesson: its layers (core) and its steps (AppTest) on the book's small convnet."""

from pathlib import Path

import cv2
import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from convviz_core import load_model
from convviz_core.lesson import lesson_layers

APP = Path(__file__).resolve().parent.parent / "app.py"
TIMEOUT = 600


pytestmark = pytest.mark.usefixtures("private_cache_dir")


def test_the_lessons_layers_of_the_small_convnet_follow_the_book():
    layers = lesson_layers(load_model("small-convnet"))
    assert layers.first == "conv2d_1"
    assert layers.overview[:4] == ("conv2d_1", "max_pooling2d_1", "conv2d_2", "max_pooling2d_2")
    assert layers.pattern == "conv2d_3"  # The Filters page's default, as the book's block3_conv1.
    # Only two convolutions have 64 filters or more: the atlas by depth takes every convolution.
    assert layers.by_depth == ("conv2d_1", "conv2d_3", "conv2d_4")
    assert layers.cam == "conv2d_4"


def test_the_lessons_atlas_by_depth_of_efficientnet_runs_from_the_default_layer_to_the_last_convolution():
    layers = lesson_layers(load_model("efficientnet-lite0"))
    assert layers.by_depth == ("block2b_expand_conv", "block5b_project_conv", "top_conv")
    assert layers.cam == "top_activation"


def open_lesson(**query):
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    at.query_params.update({"model": "small-convnet", **query})
    at.switch_page("pages/lesson.py")
    at.run()
    assert not at.exception, [exception.value for exception in at.exception]
    return at


def progress_text(at):
    return at.main.get("progress")[0].proto.text


def test_next_and_back_walk_the_steps_and_the_address_follows():
    at = open_lesson()
    assert at.title[0].value == "1. What the first layer sees"
    assert progress_text(at) == "Step 1 of 9 · the book's figures 5-25 to 5-27"
    assert any(caption.startswith("All 32 channels of conv2d_1") for image in at.main.image for caption in image.captions)
    back, forward = at.main.button
    assert back.disabled and not forward.disabled
    forward.click().run()
    assert at.title[0].value == "2. Deeper layers go abstract"
    assert at.query_params["step"] == "2"
    at.main.select_slider(key="lesson_abstract_layer").set_value("conv2d_4").run()
    assert any(caption.startswith("All 128 channels of conv2d_4") for image in at.main.image for caption in image.captions)
    at.main.button[1].click().run()
    assert at.title[0].value == "3. Dead channels"
    at.main.button[0].click().run()
    assert at.query_params["step"] == "2"


@pytest.mark.parametrize("step,title,expected", [
    ("7", "7. Where the model looked: Grad-CAM", "Grad-CAM of "),
    ("8", "8. Other ways to ask", "Eigen-CAM"),
])
def test_a_step_has_its_own_link(step, title, expected):
    at = open_lesson(step=step)
    assert at.title[0].value == title
    assert any(caption.startswith(expected) for image in at.main.image for caption in image.captions)
    assert not at.main.error


def test_the_sanity_check_step_waits_for_a_click_and_a_bad_step_is_named():
    at = open_lesson(step="9")
    assert at.main.button[2].label == "Randomise the model and watch the maps"
    at = open_lesson(step="12")
    assert at.title[0].value == "1. What the first layer sees"
    assert "step=12" in at.main.warning[0].value


def test_the_lesson_works_on_the_cameras_snapshot():
    at = open_lesson(step="7")
    at.sidebar.toggle(key="camera_on").set_value(True).run()
    photo = np.full((150, 150, 3), 40, np.uint8)
    cv2.circle(photo, (75, 75), 40, (250, 250, 250), -1)
    at.camera_input(key="camera_photo").set_value(("shot.jpg", cv2.imencode(".jpg", photo)[1].tobytes(), "image/jpeg")).run()
    assert not at.exception
    assert at.session_state["convviz_selection"].image_title == "your camera photo"
    assert any(caption.startswith("Grad-CAM of 'disc'") for image in at.main.image for caption in image.captions)

"""Every view has an address: a link's values open the view, the view's values make the link.

Through `AppTest` (the browser test opens a shared link as a fresh server's
first request). A link opens exactly the view it names; moving a control
rewrites the address; `lesson=1` hides the advanced controls and keeps the
link's values; values that do not fit are named; the share panel's QR code
decodes to its link; the camera's snapshot is used like an upload.
"""

from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import cv2
import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from convviz_app import address

APP = Path(__file__).resolve().parent.parent / "app.py"
TIMEOUT = 600


pytestmark = pytest.mark.usefixtures("private_cache_dir")


def open_link(page, **query):
    """Opens a link to a page as a new session's first request."""
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    for key, value in query.items():
        at.query_params[key] = value
    at.switch_page(page)
    at.run()
    assert not at.exception, [exception.value for exception in at.exception]
    return at


def image_captions(at):
    return [caption for image in at.main.image for caption in image.captions]


GRAD_CAM_LINK = {
    "model": "small-convnet", "image": "coffee", "class": "0", "layer": "conv2d_3",
    "method": "layer-cam", "alpha": "0.70",
}


def test_a_grad_cam_link_opens_exactly_its_view_and_the_address_stays_the_link():
    at = open_link("pages/grad-cam.py", **GRAD_CAM_LINK)
    assert at.session_state["convviz_selection"].model_key == "builtin:small-convnet"
    assert at.session_state["convviz_selection"].image_key == "sample:coffee"
    assert at.selectbox(key="gradcam_class:builtin:small-convnet:sample:coffee").value == 0
    assert at.selectbox(key="gradcam_layer:builtin:small-convnet").value == "conv2d_3"
    assert at.selectbox(key="gradcam_method").value == "layer-cam"
    assert at.slider(key="gradcam_alpha").value == pytest.approx(0.7)
    assert image_captions(at) == ["Your image", "Heatmap × 0.70 + image"]
    assert any(caption.value.startswith("Layer-CAM of 'disc' at conv2d_3") for caption in at.main.caption)
    assert dict(at.query_params) == GRAD_CAM_LINK
    assert not at.warning


def test_moving_a_control_rewrites_the_address_and_the_link_does_not_pull_it_back():
    at = open_link("pages/grad-cam.py", **GRAD_CAM_LINK)
    at.slider(key="gradcam_alpha").set_value(0.25).run()
    assert at.query_params["alpha"] == "0.25"
    at.selectbox(key="gradcam_layer:builtin:small-convnet").set_value("conv2d_2").run()
    assert at.query_params["layer"] == "conv2d_2"
    # Another run keeps the user's choice: the link's old value is not taken again.
    at.run()
    assert at.selectbox(key="gradcam_layer:builtin:small-convnet").value == "conv2d_2"
    assert image_captions(at)[-1] == "Heatmap × 0.25 + image"


def test_a_class_can_be_named_in_a_link():
    at = open_link("pages/grad-cam.py", image="chelsea", **{"class": "tiger cat"})
    assert at.selectbox(key="gradcam_class:builtin:efficientnet-lite0:sample:chelsea").value == 282
    assert at.query_params["class"] == "282"


def test_a_lesson_link_hides_the_advanced_controls_and_keeps_their_values():
    at = open_link("pages/grad-cam.py", lesson="1", **GRAD_CAM_LINK)
    labels = [widget.label for widget in at.main.selectbox]
    assert labels == ["Class to explain (type to search)"]
    assert [slider.label for slider in at.main.slider] == ["Overlay strength"]
    assert not at.sidebar.selectbox, "the model picker is hidden in a lesson"
    assert not at.main.toggle, "the scores are for the full view"
    assert any(caption.value.startswith("Layer-CAM of 'disc' at conv2d_3") for caption in at.main.caption)
    assert dict(at.query_params) == {**GRAD_CAM_LINK, "lesson": "1"}


def test_values_that_do_not_fit_are_named_and_replaced_by_defaults():
    at = open_link("pages/grad-cam.py", model="small-convnet", layer="block5c_add", method="magic-cam")
    assert at.selectbox(key="gradcam_layer:builtin:small-convnet").value == "conv2d_4"
    assert at.selectbox(key="gradcam_method").value == "grad-cam"
    assert [warning.value for warning in at.main.warning] == [
        "This link's layer=block5c_add, method=magic-cam does not fit this model or view, so the page "
        "shows its default instead. Ask for a new link."
    ]
    assert at.query_params["layer"] == "conv2d_4"


def test_an_activations_link_opens_its_layer_and_channel():
    at = open_link("pages/activation-maps.py", model="small-convnet", layer="max_pooling2d_1", channel="5")
    assert at.select_slider(key="activations_layer:builtin:small-convnet").value == "max_pooling2d_1"
    assert at.slider(key="activations_channel:builtin:small-convnet:max_pooling2d_1").value == 5
    assert any(caption.value.startswith("Channel 5 of max_pooling2d_1") for caption in at.main.caption)
    assert at.query_params["overview"] == "0"


def test_a_filters_link_computes_the_atlas_it_names():
    at = open_link(
        "pages/filter-patterns.py", model="small-convnet", layer="conv2d_1", count="8", size="32",
        steps="3", schedule="book", filter="5",
    )
    assert image_captions(at)[0] == "Filters 0 to 7 of conv2d_1, in reading order, 3 steps of gradient ascent each"
    assert image_captions(at)[1] == "What filter 5 looks for"
    query = dict(at.query_params)
    assert {name: query[name] for name in ("layer", "count", "size", "steps", "schedule", "filter", "method")} == {
        "layer": "conv2d_1", "count": "8", "size": "32", "steps": "3", "schedule": "book", "filter": "5",
        "method": "gradient-ascent",
    }


def test_the_share_panels_qr_code_reads_as_its_link():
    at = open_link("pages/grad-cam.py", **GRAD_CAM_LINK)
    link = at.sidebar.code[0].value
    # AppTest has no browser address: the link is the query alone.
    assert dict(parse_qsl(urlsplit(link).query)) == GRAD_CAM_LINK
    assert any(image.captions == ["Point a phone's camera here"] for image in at.sidebar.image)
    pixels = cv2.imdecode(np.frombuffer(address.qr_png(link), np.uint8), cv2.IMREAD_COLOR)
    decoded, _, _ = cv2.QRCodeDetector().detectAndDecode(pixels)
    assert decoded == link
    long_link = "https://convviz.example.org/grad-cam?" + "&".join(f"{key}={value}" for key, value in GRAD_CAM_LINK.items())
    pixels = cv2.imdecode(np.frombuffer(address.qr_png(long_link), np.uint8), cv2.IMREAD_COLOR)
    assert cv2.QRCodeDetector().detectAndDecode(pixels)[0] == long_link

    # The lesson variant of the link.
    at.sidebar.checkbox(key="share_lesson").check().run()
    assert dict(parse_qsl(urlsplit(at.sidebar.code[0].value).query)) == {**GRAD_CAM_LINK, "lesson": "1"}


def test_a_camera_snapshot_is_shown_in_every_view_and_the_share_panel_says_it_cannot_travel():
    at = open_link("pages/grad-cam.py", model="small-convnet")
    at.sidebar.toggle(key="camera_on").set_value(True).run()
    assert any("Take a photo to see it" in caption.value for caption in at.sidebar.caption)
    photo = np.zeros((120, 160, 3), np.uint8)
    photo[:, 80:] = (0, 0, 255)  # Red on the right, in BGR.
    at.camera_input(key="camera_photo").set_value(("shot.jpg", cv2.imencode(".jpg", photo)[1].tobytes(), "image/jpeg")).run()
    assert not at.exception
    selection = at.session_state["convviz_selection"]
    assert selection.image_key.startswith("upload:") and selection.image_title == "your camera photo"
    assert selection.image.shape == (120, 160, 3)
    assert selection.image[60, 150, 0] > 200 and selection.image[60, 10, 0] < 30  # RGB: red on the right.
    assert any("Your own photo cannot travel in a link" in warning.value for warning in at.sidebar.warning)

"""Every page of the dashboard through `streamlit.testing.v1.AppTest`: widgets moved, files uploaded, errors shown.

The default path (EfficientNet-Lite0 and the cat) runs as a teacher would
open it; the book's small convnet, which is faster, serves the tests that
compute many things. AppTest runs the app in this process, so models load
once for the whole module.
"""

import io
from pathlib import Path

import cv2
import keras
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from convviz_core import InputError
from convviz_core.models import registry as models_module
from convviz_core.inputs.samples import sample_image

APP = Path(__file__).resolve().parent.parent / "app.py"
# TensorFlow's first import, a model conversion and graph tracing happen in
# the first runs; AppTest's default of 3 seconds is far too short for them.
TIMEOUT = 240
EFFICIENTNET = "builtin:efficientnet-lite0"
SMALL = "builtin:small-convnet"


@pytest.fixture(scope="module", autouse=True)
def private_cache(tmp_path_factory):
    """Keeps converted models and filter atlases out of the user's cache."""
    from convviz_app import cached

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CONVVIZ_CACHE_DIR", str(tmp_path_factory.mktemp("convviz-cache")))
        cached.atlas_store.clear()
        yield
        cached.atlas_store.clear()


def start(page=None, model=None):
    """Opens the app (optionally with another model, on another page), as a new session."""
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT).run()
    assert_no_exception(at)
    if model is not None:
        at.selectbox(key="model_choice").set_value(model).run()
        assert_no_exception(at)
    if page is not None:
        at.switch_page(page).run()
        assert_no_exception(at)
    return at


def assert_no_exception(at):
    assert not at.exception, [exception.value for exception in at.exception]


def main_captions(at):
    return [caption.value for caption in at.main.caption]


def image_captions(at):
    return [caption for image in at.main.image for caption in image.captions]


def plotly_charts(at):
    return at.main.get("plotly_chart")


def widget(widgets, label):
    return next(item for item in widgets if item.label == label)


def png_file(image):
    return cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))[1].tobytes()


def keras_file(model, tmp_path, name="model.keras"):
    path = tmp_path / name
    model.save(path)
    return path.read_bytes()


# --- Activations -----------------------------------------------------------------


def test_activations_open_on_the_cat_seen_by_efficientnet_and_follow_the_sliders():
    at = start()
    assert at.title[0].value == "Intermediate activations"
    assert "Model: EfficientNet-Lite0 (ImageNet, offline) · Image: the sample photo 'Cat'" in main_captions(at)
    assert "All 32 channels of stem_activation" in image_captions(at)[0]
    assert {metric.label: metric.value for metric in at.main.metric}["Channels"] == "32"
    assert len(plotly_charts(at)) == 1
    # The sidebar shows the image at the model's input size.
    assert any("What the model sees: 224×224" in caption for image in at.sidebar.image for caption in image.captions)

    at.slider(key=f"activations_channel:{EFFICIENTNET}:stem_activation").set_value(5).run()
    assert_no_exception(at)
    assert any(caption.startswith("Channel 5 of stem_activation") for caption in main_captions(at))

    at.select_slider(key=f"activations_layer:{EFFICIENTNET}").set_value("block3a_activation").run()
    assert_no_exception(at)
    metrics = {metric.label: metric.value for metric in at.main.metric}
    assert metrics["Feature map"] == "28 × 28" and metrics["Channels"] == "144"
    assert metrics["Dead channels"].endswith("of 144")
    assert "All 144 channels of block3a_activation" in image_captions(at)[0]
    channel = at.slider(key=f"activations_channel:{EFFICIENTNET}:block3a_activation")
    assert (channel.min, channel.max, channel.value) == (0, 143, 0)
    channel.set_value(143).run()
    assert_no_exception(at)
    assert len(plotly_charts(at)) == 1


def test_the_overview_of_the_small_convnet_is_the_books_figure_5_27():
    at = start(model="small-convnet")
    at.toggle(key="activations_overview").set_value(True).run()
    assert_no_exception(at)
    expected = ["conv2d_1", "max_pooling2d_1", "conv2d_2", "max_pooling2d_2",
                "conv2d_3", "max_pooling2d_3", "conv2d_4", "max_pooling2d_4"]
    assert [header.value for header in at.main.subheader] == expected
    captions = image_captions(at)
    assert len(captions) == 8
    assert captions[0].startswith("32 channels of 148×148")
    assert captions[-1].startswith("128 channels of 7×7")

    at.multiselect(key=f"activations_overview_layers:{SMALL}").set_value(["conv2d_4"]).run()
    assert_no_exception(at)
    assert [header.value for header in at.main.subheader] == ["conv2d_4"]


# --- The image picker --------------------------------------------------------------


def test_a_sample_photo_and_an_uploaded_photo_are_used_by_the_page():
    at = start()
    at.radio(key="sample_choice").set_value("coffee").run()
    assert_no_exception(at)
    assert "Image: the sample photo 'Coffee'" in main_captions(at)[0]

    at.file_uploader(key="image_file").set_value(("my photo.png", png_file(sample_image("rocket")), "image/png")).run()
    assert_no_exception(at)
    assert "Image: my photo.png" in main_captions(at)[0]
    assert "All 32 channels of stem_activation" in image_captions(at)[0]


def test_an_animated_gif_shows_its_first_frame_with_a_note():
    frames = [Image.new("RGB", (40, 30), colour) for colour in ("red", "blue", "green")]
    data = io.BytesIO()
    frames[0].save(data, format="GIF", save_all=True, append_images=frames[1:])
    at = start()
    at.file_uploader(key="image_file").set_value(("spinner.gif", data.getvalue(), "image/gif")).run()
    assert_no_exception(at)
    assert "Animated GIF: showing the first of 3 frames." in [caption.value for caption in at.sidebar.caption]
    assert "Image: spinner.gif" in main_captions(at)[0]


def test_a_broken_image_shows_an_error_and_the_app_goes_on_with_the_sample():
    at = start()
    at.file_uploader(key="image_file").set_value(("holiday.jpg", b"\xff\xd8\xff\xe0 cut off", "image/jpeg")).run()
    assert_no_exception(at)
    assert any("could not decode this image file" in error.value for error in at.sidebar.error)
    assert "Showing the sample photo instead." in [caption.value for caption in at.sidebar.caption]
    assert "Image: the sample photo 'Cat'" in main_captions(at)[0]
    assert "All 32 channels of stem_activation" in image_captions(at)[0]


# --- Grad-CAM -------------------------------------------------------------------------


def test_grad_cam_explains_the_top_class_and_any_other():
    at = start(page="pages/grad-cam.py")
    assert at.title[0].value == "Grad-CAM: where the model looked"
    table = at.main.dataframe[0].value
    assert len(table) == 5
    assert table["Class"][0] == "Egyptian_cat" and table["Index"][0] == 285
    assert list(table["Probability"]) == sorted(table["Probability"], reverse=True)
    class_picker = at.selectbox(key=f"gradcam_class:{EFFICIENTNET}:sample:chelsea")
    assert class_picker.value == 285
    assert at.selectbox(key=f"gradcam_layer:{EFFICIENTNET}").value == "top_activation"
    assert at.slider(key="gradcam_alpha").value == pytest.approx(0.4)
    assert image_captions(at) == ["Your image", "Heatmap × 0.40 + image"]
    assert len(plotly_charts(at)) == 1
    assert "Grad-CAM of 'Egyptian_cat' at top_activation: 7×7 (hover for values)" in main_captions(at)
    assert at.main.get("download_button")

    # Any class can be explained, not only the top five.
    class_picker.set_value(954).run()  # banana
    assert_no_exception(at)
    assert any(caption.startswith("Grad-CAM of 'banana'") for caption in main_captions(at))

    at.selectbox(key=f"gradcam_layer:{EFFICIENTNET}").set_value("block5c_add").run()
    assert_no_exception(at)
    assert any("at block5c_add: 14×14" in caption for caption in main_captions(at))

    at.slider(key="gradcam_alpha").set_value(0.8).run()
    assert_no_exception(at)
    assert image_captions(at)[-1] == "Heatmap × 0.80 + image"


def test_grad_cam_of_a_single_sigmoid_model_shows_both_classes():
    at = start(page="pages/grad-cam.py", model="small-convnet")
    table = at.main.dataframe[0].value
    assert sorted(table["Class"]) == ["cross", "disc"]
    assert sum(table["Probability"]) == pytest.approx(1.0, abs=1e-5)
    class_picker = at.selectbox(key=f"gradcam_class:{SMALL}:sample:chelsea")
    assert len(class_picker.options) == 2
    assert any("one sigmoid output" in caption for caption in main_captions(at))
    other = 1 - class_picker.value
    class_picker.set_value(other).run()
    assert_no_exception(at)
    assert any(caption.startswith(f"Grad-CAM of '{('disc', 'cross')[other]}' at conv2d_4") for caption in main_captions(at))


# --- Filters -----------------------------------------------------------------------


def test_filters_compute_the_default_atlas_then_any_other_and_show_one_filter_large():
    at = start(page="pages/filter-patterns.py", model="small-convnet")
    assert at.title[0].value == "Filter patterns"
    assert at.main.success and at.main.success[0].value.startswith("Computed in")
    grid_caption = image_captions(at)[0]
    assert grid_caption == (
        "Filters 0 to 63 of conv2d_3, in reading order, gradient ascent with momentum each, "
        "as far as the book's 40 steps go (in fewer)"
    )
    # The large view starts at the filter that responds most to the cat.
    chosen = widget(at.main.select_slider, "Filter").value
    assert image_captions(at)[1:] == [f"What filter {chosen} looks for", "Where it fires on your image"]
    assert len(plotly_charts(at)) == 1

    # A smaller atlas of another layer, through the form.
    widget(at.main.selectbox, "Layer").set_value("conv2d_1")
    widget(at.main.selectbox, "Filters").set_value(8)
    widget(at.main.number_input, "Steps").set_value(5)
    at.main.button[0].click().run()
    assert_no_exception(at)
    assert image_captions(at)[0] == (
        "Filters 0 to 7 of conv2d_1, in reading order, gradient ascent with momentum each, "
        "as far as the book's 5 steps go (in fewer)"
    )
    # The book's plain loop, step for step.
    widget(at.main.checkbox, "Fast: momentum, as far as the book's steps go").set_value(False)
    at.main.button[0].click().run()
    assert_no_exception(at)
    assert image_captions(at)[0] == "Filters 0 to 7 of conv2d_1, in reading order, 5 steps of gradient ascent each"

    widget(at.main.select_slider, "Filter").set_value(3).run()
    assert_no_exception(at)
    assert image_captions(at)[1] == "What filter 3 looks for"
    assert "Channel 3 of conv2d_1 on your image (hover for values)" in main_captions(at)

    # A filter range past the layer's filters is the user's to fix.
    widget(at.main.number_input, "First filter").set_value(40)
    at.main.button[0].click().run()
    assert_no_exception(at)
    assert "has 32 filters (0 to 31)" in at.main.error[0].value

    # Another session gets the default atlas from the shared cache at once.
    other = start(page="pages/filter-patterns.py", model="small-convnet")
    assert not other.main.success
    assert "Patterns from the shared cache: computed once, for every session." in main_captions(other)
    assert image_captions(other)[0].startswith("Filters 0 to 63 of conv2d_3")


# --- Model -------------------------------------------------------------------------


def test_the_model_page_is_the_books_summary():
    at = start(page="pages/model-summary.py", model="small-convnet")
    assert at.title[0].value == "The model, layer by layer"
    metrics = {metric.label: metric.value for metric in at.main.metric}
    # The book's "Total params: 3,453,121".
    assert metrics == {"Total parameters": "3,453,121", "Trainable": "3,453,121", "Non-trainable": "0"}
    table = at.main.dataframe[0].value
    assert list(table["Layer"][:2]) == ["conv2d_1", "max_pooling2d_1"]
    assert list(table["Output shape"][:2]) == ["(None, 148, 148, 32)", "(None, 74, 74, 32)"]
    assert list(table["Parameters"][:3]) == [896, 0, 18496]
    assert list(table["In the views"]) == [True] * 8 + [False] * 4


def test_the_model_page_of_efficientnet():
    at = start(page="pages/model-summary.py")
    metrics = {metric.label: metric.value for metric in at.main.metric}
    assert metrics["Total parameters"] == "4,694,024"
    table = at.main.dataframe[0].value
    assert len(table) == 143 and table["Layer"][0] == "input_image"


# --- Uploaded models and what can go wrong with them -------------------------------------------


def tiny_classifier():
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(8, 3, activation="relu", name="conv")(inputs)
    x = keras.layers.MaxPooling2D(name="pool")(x)
    x = keras.layers.Conv2D(8, 3, activation="relu", name="conv_b")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = keras.layers.Dense(3, activation="softmax", name="head")(x)
    return keras.Model(inputs, outputs, name="tiny_classifier")


def upload_model(at, name, data, class_names=None):
    at.selectbox(key="model_choice").set_value("upload").run()
    assert_no_exception(at)
    at.file_uploader(key="model_file").set_value((name, data, "application/octet-stream"))
    if class_names is not None:
        at.file_uploader(key="class_names_file").set_value(("classes.txt", class_names, "text/plain"))
    at.run()
    assert_no_exception(at)


def test_an_uploaded_model_with_class_names_works_on_every_page(tmp_path):
    at = start()
    upload_model(at, "my model.keras", keras_file(tiny_classifier(), tmp_path), b"red\ngreen\nblue\n")
    assert not at.error
    assert "Model: my model.keras" in main_captions(at)[0]
    assert "All 8 channels of conv" in image_captions(at)[0]

    at.switch_page("pages/grad-cam.py").run()
    assert_no_exception(at)
    assert sorted(at.main.dataframe[0].value["Class"]) == ["blue", "green", "red"]
    assert any("at conv_b" in caption for caption in main_captions(at))

    at.switch_page("pages/model-summary.py").run()
    assert_no_exception(at)
    assert list(at.main.dataframe[0].value["Layer"])[1:] == ["conv", "pool", "conv_b", "gap", "head"]
    assert {metric.label: metric.value for metric in at.main.metric}["Total parameters"] == f"{tiny_classifier().count_params():,}"

    at.switch_page("pages/filter-patterns.py").run()
    assert_no_exception(at)
    assert image_captions(at)[0].startswith("Filters 0 to 7 of conv,")


def lambda_model():
    inputs = keras.Input((16, 16, 3))
    outputs = keras.layers.Lambda(lambda x: x * 2, name="double")(inputs)
    return keras.Model(inputs, outputs)


def vector_model():
    inputs = keras.Input((10,))
    return keras.Model(inputs, keras.layers.Dense(2)(inputs))


@pytest.mark.parametrize(
    "name, make_data, message",
    [
        ("broken.keras", lambda tmp: b"PK\x03\x04 this is not a model", "The .keras file is damaged or incomplete"),
        ("broken.h5", lambda tmp: b"\x89HDF\r\n\x1a\n truncated", "The HDF5 file is damaged or incomplete"),
        # A Lambda layer stores code: uploads never run it.
        ("hostile.keras", lambda tmp: keras_file(lambda_model(), tmp, "hostile.keras"), "has a Lambda layer"),
        ("table.keras", lambda tmp: keras_file(vector_model(), tmp, "table.keras"), "needs an image input"),
    ],
)
def test_a_broken_or_hostile_model_file_shows_an_error_and_the_app_keeps_working(tmp_path, name, make_data, message):
    at = start()
    upload_model(at, name, make_data(tmp_path))
    assert any(message in error.value for error in at.sidebar.error), [error.value for error in at.sidebar.error]
    assert at.main.info[0].value.startswith("Choose a model that loads")

    # Back to a built-in model: everything works again.
    at.selectbox(key="model_choice").set_value("small-convnet").run()
    assert_no_exception(at)
    assert not at.error
    assert "All 32 channels of conv2d_1" in image_captions(at)[0]


def test_a_bad_class_name_file_is_an_error(tmp_path):
    at = start()
    upload_model(at, "tiny.keras", keras_file(tiny_classifier(), tmp_path), b"only\ntwo\n")
    assert any("2 class names were given" in error.value for error in at.sidebar.error)


def test_a_model_without_classes_shows_its_layers_and_says_why_there_is_no_grad_cam(tmp_path):
    inputs = keras.Input((24, 24, 3))
    features = keras.layers.Conv2D(4, 3, activation="relu", name="features")(inputs)
    at = start()
    upload_model(at, "backbone.keras", keras_file(keras.Model(inputs, features), tmp_path))
    assert not at.error
    assert "All 4 channels of features" in image_captions(at)[0]

    at.switch_page("pages/grad-cam.py").run()
    assert_no_exception(at)
    assert "does not output class scores" in at.main.error[0].value

    at.switch_page("pages/model-summary.py").run()
    assert_no_exception(at)
    assert "**Classes:** none" in at.main.markdown[-1].value


def test_a_model_without_spatial_layers_is_refused_with_a_reason(tmp_path):
    flat = keras.Sequential([keras.Input((16, 16, 3)), keras.layers.Flatten(), keras.layers.Dense(2, activation="softmax")])
    at = start()
    upload_model(at, "flat.keras", keras_file(flat, tmp_path))
    assert "no layer with a (height, width, channels) output" in at.sidebar.error[0].value
    for page in ("pages/filter-patterns.py", "pages/grad-cam.py", "pages/model-summary.py"):
        at.switch_page(page).run()
        assert_no_exception(at)
        assert at.main.info[0].value.startswith("Choose a model that loads")


def test_a_model_whose_weights_are_missing_explains_why_and_loads_only_when_asked(tmp_path, monkeypatch):
    monkeypatch.setattr(models_module, "keras_weights_folder", lambda: tmp_path)
    attempts = []

    def offline_application(name):
        attempts.append(name)
        raise InputError(f"The ImageNet weights of {name} are not on this machine and could not be downloaded.")

    monkeypatch.setattr(models_module, "_load_application", offline_application)
    at = start()
    at.selectbox(key="model_choice").set_value("vgg16").run()
    assert_no_exception(at)
    assert "vgg16_weights_tf_dim_ordering_tf_kernels.h5" in at.sidebar.warning[0].value
    assert at.main.info[0].value.startswith("Choose a model that loads")
    assert attempts == []  # Nothing is downloaded unless the user asks.

    widget(at.sidebar.button, "Try to load it").click().run()
    assert_no_exception(at)
    assert attempts == ["vgg16"]
    assert "could not be downloaded" in at.sidebar.error[0].value
    assert at.main.info[0].value.startswith("Choose a model that loads")

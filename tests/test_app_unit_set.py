"""The One-unit page over the user's own set (AppTest): a ZIP uploaded here or on the Dataset page.

A tiny uploaded model with hand-set weights keeps the answer known: its unit
`colour` 0 is a pixel's red value / 255, so the uniformly red image of the set
must hold the strongest patch (250 / 255), the dimmer one the next (100 / 255),
and the green one none.
"""

from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest
from test_dataset_examples_set import png, red_detector_keras, zip_of

from convviz_app import cached

APP = Path(__file__).resolve().parent.parent / "app.py"
TIMEOUT = 300
SAMPLES = "the sample photos"


@pytest.fixture(autouse=True)
def private_cache(private_cache_dir):
    cached.clear_memory_caches()


def red_detector_file(tmp_path):
    path = tmp_path / "red.keras"
    red_detector_keras().save(path)
    return path.read_bytes()


def uniform(colour, shape=(40, 40)):
    image = np.zeros(shape + (3,), np.uint8)
    image[...] = colour
    return png(image)


def assert_clean(at):
    assert not at.exception, [exception.value for exception in at.exception]
    assert not at.error, [error.value for error in at.error]


def example_captions(at):
    """The captions ("name: score") of the dataset examples, the page's last pictures captioned so."""
    groups = [image.captions for image in at.main.image if image.captions and all(": " in c for c in image.captions)]
    return list(groups[-1]) if groups else []


def examples_from(at):
    return next(radio for radio in at.main.radio if radio.label == "Examples from")


def test_a_zip_uploaded_on_the_page_shows_the_known_strongest_image_first_and_samples_come_back(tmp_path):
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    at.session_state["model_choice"] = "upload"
    at.run()
    at.file_uploader(key="model_file").set_value(("red.keras", red_detector_file(tmp_path), "application/octet-stream"))
    at.run()
    at.switch_page("pages/unit.py").run()
    assert_clean(at)
    assert not at.main.radio  # No set yet: the page offers to take one.
    files = {"set/dim.png": uniform((100, 0, 0)), "set/green.png": uniform((0, 200, 0)),
             "set/broken.png": b"not a png", "set/bright.png": uniform((250, 0, 0), (30, 50))}
    at.file_uploader(key="unit_set_zip").set_value(("set.zip", zip_of(files), "application/zip")).run()
    assert not at.exception, [exception.value for exception in at.exception]
    assert not at.error, [error.value for error in at.error]
    assert examples_from(at).options == [SAMPLES, "your set (4 images)"]
    assert examples_from(at).value == "your set (4 images)"
    assert example_captions(at) == ["set/bright.png: 0.98", "set/dim.png: 0.392"]
    assert [warning.value for warning in at.main.warning if "skipped" in warning.value] == [
        "1 of the 4 images could not be read and were skipped. set/broken.png: This file is not an image ConvViz "
        "can read (allowed: JPEG, PNG, WebP, BMP, GIF, TIFF). Upload a photo in one of these formats."
    ]
    assert any("among the 3 images of set.zip" in caption.value for caption in at.main.caption)

    examples_from(at).set_value(SAMPLES).run()
    assert_clean(at)
    assert any("sample photos and your uploads" in caption.value for caption in at.main.caption)
    assert not any(caption.startswith("set/") for caption in example_captions(at))

    examples_from(at).set_value("your set (4 images)").run()
    assert_clean(at)
    assert example_captions(at)[0] == "set/bright.png: 0.98"


def test_a_set_uploaded_on_the_dataset_page_is_offered_here_and_a_bad_zip_says_so(monkeypatch):
    monkeypatch.delenv("CONVVIZ_LOCAL_FOLDERS", raising=False)
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    at.session_state["model_choice"] = "small-convnet"
    at.run()
    at.switch_page("pages/unit.py").run()
    at.file_uploader(key="unit_set_zip").set_value(("set.zip", b"PK not really", "application/zip")).run()
    assert not at.exception, [exception.value for exception in at.exception]
    assert [error.value for error in at.error] == [
        "This file is not a ZIP archive. Upload a .zip of JPEG or PNG images."
    ]
    assert not at.main.radio

    at.switch_page("pages/dataset.py").run()
    files = {"a.png": uniform((230, 200, 40), (150, 150)), "b.png": uniform((40, 120, 250), (150, 150))}
    at.file_uploader(key="dataset_zip").set_value(("two.zip", zip_of(files), "application/zip")).run()
    assert_clean(at)
    assert any(caption.value == "The set: two.zip, 2 images." for caption in at.main.caption)
    at.switch_page("pages/unit.py").run()
    assert_clean(at)
    assert examples_from(at).value == "your set (2 images)"
    # One patch per image of the set, named by the image.
    assert sorted(caption.split(": ")[0] for caption in example_captions(at)) == ["a.png", "b.png"]

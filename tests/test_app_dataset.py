"""The Dataset page (AppTest): a ZIP of images explained in the job pool, the leaderboard, the report ZIP.

The book's small convnet (discs vs crosses) keeps it fast; labels make one
disc "a cross", so the page must show it first, as misclassified, with its
Grad-CAM for both classes.
"""

import csv
import io
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image
from streamlit.testing.v1 import AppTest
from test_dataset_examples_set import zip_of

from convviz_app import cached

APP = Path(__file__).resolve().parent.parent / "app.py"
TIMEOUT = 300


def disc_png(centre, radius, colour, size=150):
    rows, columns = np.mgrid[:size, :size]
    image = np.zeros((size, size, 3), np.uint8)
    image[(rows - centre[0]) ** 2 + (columns - centre[1]) ** 2 < radius**2] = colour
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def start(monkeypatch, local_folders=False):
    if local_folders:
        monkeypatch.setenv("CONVVIZ_LOCAL_FOLDERS", "1")
    else:
        monkeypatch.delenv("CONVVIZ_LOCAL_FOLDERS", raising=False)
    cached.clear_memory_caches()
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    at.session_state["model_choice"] = "small-convnet"
    at.run()
    at.switch_page("pages/dataset.py").run()
    assert not at.exception, [exception.value for exception in at.exception]
    return at


def submit(at):
    next(button for button in at.button if button.label == "Explain the set").click().run()
    assert not at.exception, [exception.value for exception in at.exception]


def test_a_zip_is_explained_ranked_and_reported(monkeypatch):
    at = start(monkeypatch)
    assert not [item for item in at.text_input if item.key == "dataset_folder"]  # Public servers read no folder.
    files = {
        "set/a.png": disc_png((60, 80), 30, (230, 200, 40)),
        "set/b.png": disc_png((100, 50), 25, (40, 120, 250)),
        "set/broken.png": b"not a png",
        "__MACOSX/set/._a.png": b"resource fork",
    }
    labels = "image,label\nset/a.png,disc\nset/b.png,cross\n"
    at.file_uploader(key="dataset_zip").set_value(("set.zip", zip_of(files), "application/zip"))
    at.file_uploader(key="dataset_labels").set_value(("labels.csv", labels.encode(), "text/csv"))
    at.multiselect(key="dataset_methods").set_value(["grad-cam", "eigen-cam"])
    submit(at)
    assert not at.error, [error.value for error in at.error]
    assert any("2 of 3 images explained" in caption.value for caption in at.caption), [
        item.value for item in at.main.children.values() if hasattr(item, "value")
    ]
    board, images = at.dataframe[0].value, at.dataframe[1].value
    assert sorted(board["Method"]) == ["Eigen-CAM", "Grad-CAM"]
    assert all(" ± " in value for value in board["Deletion (lower is better)"])
    assert all(value.endswith("%") for value in board["Beats chance on both"])
    # b.png is a disc labelled "cross": misclassified, so first; the broken file last.
    assert list(images["Image"]) == ["set/b.png", "set/a.png", "set/broken.png"]
    assert images["True"][0] == "cross" and images["Predicted"][0] == "disc"
    assert images["Photo"][0].startswith("data:image/png;base64,")
    assert "not an image" in images["Error"][2]
    assert [image.captions[0] for image in at.main.image][:1] == [
        "set/b.png: Grad-CAM for the true class, cross"
    ]
    assert len(at.get("download_button")) == 1
    result = at.session_state["dataset_result"]
    with zipfile.ZipFile(io.BytesIO(result["archive"])) as report:
        names = set(report.namelist())
        rows = list(csv.DictReader(io.StringIO(report.read("report.csv").decode())))
    assert {"report.csv", "manifest.json", "maps/00000-set__a.png__grad-cam.npy",
            "overlays/00001-set__b.png__eigen-cam.png"} <= names
    assert [(row["image"], row["method"]) for row in rows] == [
        ("set/a.png", "grad-cam"), ("set/a.png", "eigen-cam"), ("set/b.png", "grad-cam"),
        ("set/b.png", "eigen-cam"), ("set/broken.png", ""),
    ]


def test_a_zip_that_is_not_one_is_refused_with_a_message(monkeypatch):
    at = start(monkeypatch)
    at.file_uploader(key="dataset_zip").set_value(("set.zip", b"PK not really", "application/zip"))
    submit(at)
    assert [error.value for error in at.error] == [
        "This file is not a ZIP archive. Upload a .zip of JPEG or PNG images."
    ]


def test_a_local_server_may_read_a_folder(monkeypatch, tmp_path):
    (tmp_path / "a.png").write_bytes(disc_png((60, 80), 30, (230, 200, 40)))
    at = start(monkeypatch, local_folders=True)
    at.text_input(key="dataset_folder").set_value(str(tmp_path))
    at.multiselect(key="dataset_methods").set_value(["grad-cam"])
    at.toggle(key="dataset_chance").set_value(False)
    submit(at)
    assert not at.error, [error.value for error in at.error]
    assert list(at.dataframe[1].value["Image"]) == ["a.png"]

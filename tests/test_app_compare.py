"""The CAM family in the dashboard: the Grad-CAM page's method picker and the Compare page (AppTest).

The book's small convnet keeps these fast (Score-CAM and the sanity check
run on it in seconds); the default path on EfficientNet-Lite0 is covered by
tests/test_app_pages.py and the browser test.
"""

import types
from pathlib import Path

import cv2
import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from convviz_app import cached, comparison
from convviz_core import load_model
from convviz_core.inputs.samples import sample_image
from convviz_core.metrics.random_baseline import random_baseline

APP = Path(__file__).resolve().parent.parent / "app.py"
TIMEOUT = 240
SMALL = "builtin:small-convnet"


def start(page):
    """A new session on the small convnet and the cat, on one page."""
    cached.clear_memory_caches()
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    at.session_state["model_choice"] = "small-convnet"
    at.run()
    at.switch_page(page).run()
    assert_clean(at)
    return at


def assert_clean(at):
    assert not at.exception, [exception.value for exception in at.exception]
    assert not at.error, [error.value for error in at.error]


def captions(at):
    return [caption.value for caption in at.main.caption]


def image_captions(at):
    return [caption for image in at.main.image for caption in image.captions]


def button(at, label):
    return next(item for item in at.button if item.label == label)


def test_the_grad_cam_page_picks_a_method_and_scores_its_map_against_chance():
    at = start("pages/grad-cam.py")
    picker = at.selectbox(key="gradcam_method")
    assert picker.value == "grad-cam"  # The book's method by default.
    assert picker.options[:2] == ["Grad-CAM", "Grad-CAM++"] and len(picker.options) == 7
    assert any(caption.startswith("Grad-CAM of 'cross' at conv2d_4: 15×15") for caption in captions(at))
    assert not at.metric  # Scores are long jobs: computed when asked for.
    at.toggle(key="gradcam_score").set_value(True).run()
    assert not at.exception and not at.error
    metrics = {metric.label: metric.value for metric in at.metric}
    assert set(metrics) == {"Deletion area (lower is better)", "Insertion area (higher is better)"}
    assert 0.0 <= float(metrics["Deletion area (lower is better)"]) <= 1.0
    assert any(text.value.startswith("Time for the map  \n**") for text in at.main.markdown)
    assert any(caption.startswith("Chance: 3 seeded random 15×15 maps, deletion ") for caption in captions(at))
    assert len(at.success) + len(at.warning) == 1  # The verdict.

    picker.set_value("eigen-cam").run()
    assert_clean(at)
    assert any(caption.startswith("Eigen-CAM of 'cross' at conv2d_4") for caption in captions(at))
    assert image_captions(at) == ["Your image", "Heatmap × 0.40 + image"]

    # Score-CAM takes seconds: only on a button.
    picker.set_value("score-cam").run()
    assert_clean(at)
    assert [item.label for item in at.main.button] == ["Compute Score-CAM"]
    assert not at.metric


def test_the_compare_page_scores_every_method_then_score_cam_and_the_sanity_check_on_buttons():
    at = start("pages/compare.py")
    assert at.title[0].value == "Compare explanations"
    assert at.subheader[0].value == "6 methods, one class: 'cross' at conv2d_4"
    titles = ["Grad-CAM", "Grad-CAM++", "XGrad-CAM", "Layer-CAM", "HiResCAM", "Eigen-CAM"]
    shown = image_captions(at)
    assert [f"{title} map" for title in titles] == [caption for caption in shown if caption.endswith(" map")]
    assert all(f"{title} on the image" in shown for title in titles)
    # Each method has its scores next to chance and a verdict.
    scored = [text.value for text in at.main.markdown if text.value.startswith("Deletion **")]
    assert len(scored) == 6 and all("(chance " in line and line.endswith(" s") for line in scored)
    assert len(at.success) + len(at.warning) == 6
    assert len(at.main.get("plotly_chart")) == 1  # The deletion and insertion curves.
    # Two classes side by side: the top two by default.
    assert at.selectbox(key=f"compare_first:{SMALL}:sample:chelsea").value != at.selectbox(
        key=f"compare_second:{SMALL}:sample:chelsea"
    ).value
    assert "What speaks for 'cross', what for 'disc': Grad-CAM of each class at conv2d_4." in captions(at)
    assert any(caption.startswith("Grad-CAM of 'disc' (") for caption in image_captions(at))
    assert at.main.get("download_button")

    button(at, "Compute Score-CAM").click().run()
    assert_clean(at)
    assert "Score-CAM map" in image_captions(at)
    assert len([text for text in at.main.markdown if text.value.startswith("Deletion **")]) == 7

    button(at, "Run the sanity check").click().run()
    assert_clean(at)
    assert len(at.main.get("plotly_chart")) == 2
    assert any(caption.startswith("Rank correlation of each method's map of 'cross'") for caption in captions(at))

    # Another class: new maps and scores, and no leftover of the first class's jobs.
    at.selectbox(key=f"compare_class:{SMALL}:sample:chelsea").set_value(0).run()
    assert_clean(at)
    assert at.subheader[0].value == "6 methods, one class: 'disc' at conv2d_4"
    assert "Compute Score-CAM" in [item.label for item in at.button]


def scores_of(deletion, insertion):
    return types.SimpleNamespace(curves=types.SimpleNamespace(deletion_auc=deletion, insertion_auc=insertion))


CHANCE = types.SimpleNamespace(
    deletion_auc=0.5, insertion_auc=0.7, deletion_auc_spread=0.05, insertion_auc_spread=0.05, count=3
)


@pytest.mark.parametrize(
    "deletion, insertion, verdict",
    [
        (0.3, 0.9, "beats chance"),
        (0.3, 0.72, "beats chance on deletion only"),
        (0.47, 0.9, "beats chance on insertion only"),
        (0.46, 0.74, "no better than chance"),  # Better, but within the random maps' spread.
        (0.7, 0.5, "no better than chance"),
    ],
)
def test_the_verdict_needs_more_than_the_random_maps_spread(deletion, insertion, verdict):
    assert comparison.faithfulness_verdict(scores_of(deletion, insertion), CHANCE)[0] == verdict


def test_the_chance_level_scored_seed_by_seed_equals_random_baseline():
    model, image = load_model("small-convnet"), sample_image("chelsea")
    cached.clear_memory_caches()
    reports = []
    chance = cached.chance_scores(
        "small", "cat", "conv2d_4", 1, (15, 15), 4, (0, 1), model, image,
        _progress=lambda done, total: reports.append((done, total)),
    )
    reference = random_baseline(model, image, (15, 15), 1, "conv2d_4", seeds=(0, 1), steps=4)
    for field in ("deletion_auc", "insertion_auc", "deletion_auc_spread", "insertion_auc_spread", "average_drop",
                  "increase_in_confidence", "count", "class_index"):
        assert getattr(chance, field) == pytest.approx(getattr(reference, field)), field
    assert reports == [(0, 2), (1, 2), (2, 2)]


def test_the_comparison_png_has_a_labelled_row_per_map():
    seen = np.full((150, 150, 3), 128, np.uint8)
    heatmap = np.zeros((150, 150), np.float32)
    heatmap[50:100, 50:100] = 1.0
    rows = [([f"row {index}", "deletion 0.1"], heatmap, comparison.blend(seen, heatmap, 0.4)) for index in range(3)]
    png = comparison.comparison_png(["ConvViz ± test"], seen, rows)
    picture = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
    panel, label = comparison.PANEL, comparison.LABEL_HEIGHT
    assert picture.shape == (label + 3 * (2 * label + panel + 8), 3 * panel + 32, 3)

"""Tests for the `convviz` command: its report agrees with the one-image functions, its errors and exit codes.

Most runs call `convviz_cli.main.main(argv)` in this process (TensorFlow is
imported once); `python -m convviz_cli` itself runs for --help and one
usage error.
"""

import csv
import json
import subprocess
import sys
import tomllib
from pathlib import Path

import keras
import numpy as np
import pytest
from PIL import Image

import convviz_core
from convviz_cli.main import main
from convviz_core.cam.methods import class_activation_map
from convviz_core.metrics.deletion_insertion import deletion_insertion
from convviz_core.reports.files import REPORT_COLUMNS, file_sha256

ROOT = Path(__file__).resolve().parent.parent


def run_module(*arguments):
    return subprocess.run(
        [sys.executable, "-m", "convviz_cli", *arguments], cwd=ROOT, capture_output=True, text=True, timeout=300,
        env={"PATH": "/usr/bin:/bin", "HOME": str(Path.home()), "TF_CPP_MIN_LOG_LEVEL": "3"},
    )


def disc(centre, radius, colour, size=150):
    rows, columns = np.mgrid[:size, :size]
    image = np.zeros((size, size, 3), np.uint8)
    image[(rows - centre[0]) ** 2 + (columns - centre[1]) ** 2 < radius**2] = colour
    return image


@pytest.fixture
def folder(tmp_path):
    (tmp_path / "images" / "more").mkdir(parents=True)
    Image.fromarray(disc((60, 80), 30, (230, 200, 40))).save(tmp_path / "images" / "a.png")
    Image.fromarray(disc((100, 50), 25, (40, 120, 250))).save(tmp_path / "images" / "more" / "b.png")
    (tmp_path / "images" / "broken.jpg").write_bytes(b"not a jpeg")
    return tmp_path


@pytest.mark.parametrize("command", ["explain", "patterns", "activations", "serve"])
def test_every_command_has_help(command):
    result = run_module(command, "--help")
    assert result.returncode == 0, result.stderr
    assert f"usage: convviz {command}" in result.stdout


def test_a_usage_error_exits_2_with_the_exact_message():
    result = run_module("explain", "small-convnet", "x.png", "--out", "o", "--methods", "grad-cam,nope")
    assert result.returncode == 2
    assert result.stderr.strip().endswith(
        "convviz explain: error: argument --methods: unknown method 'nope'; choose from grad-cam, grad-cam++, "
        "xgrad-cam, layer-cam, hires-cam, eigen-cam, score-cam, or 'all' or 'fast'"
    )


def test_explain_writes_the_report_the_one_image_path_gives(folder, capsys):
    out = folder / "report"
    code = main(["explain", "small-convnet", str(folder / "images"), "--methods", "grad-cam,eigen-cam",
                 "--steps", "4", "--chance-maps", "2", "--out", str(out)])
    assert code == 0
    captured = capsys.readouterr()
    assert "2 of 3 images explained" in captured.out
    assert "convviz: skipped broken.jpg: This file is not an image ConvViz can read" in captured.err
    with open(out / "report.csv", newline="") as file:
        reader = csv.DictReader(file)
        assert tuple(reader.fieldnames) == REPORT_COLUMNS
        rows = list(reader)
    assert [(row["image"], row["method"]) for row in rows] == [
        ("a.png", "grad-cam"), ("a.png", "eigen-cam"), ("broken.jpg", ""), ("more/b.png", "grad-cam"),
        ("more/b.png", "eigen-cam"),
    ]
    model = convviz_core.load_model("small-convnet")
    for row in rows:
        if not row["method"]:
            assert "not an image" in row["error"]
            continue
        image = convviz_core.load_image(folder / "images" / row["image"])
        heatmap = class_activation_map(model, image, row["method"])
        np.testing.assert_allclose(np.load(out / row["map_file"]), heatmap, atol=1e-6)
        curves = deletion_insertion(model, image, heatmap, int(row["explained_class"]),
                                    model.default_cam_layer(), steps=4)
        assert float(row["deletion_auc"]) == pytest.approx(curves.deletion_auc, abs=1e-6)
        assert float(row["insertion_auc"]) == pytest.approx(curves.insertion_auc, abs=1e-6)
        assert row["beats_chance_deletion"] in ("True", "False")
        overlay = Image.open(out / row["overlay_file"])
        assert overlay.size == (150, 150)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["settings"]["methods"] == ["grad-cam", "eigen-cam"]
    assert manifest["settings"]["steps"] == 4 and manifest["settings"]["chance_seeds"] == [0, 1]
    assert manifest["model_sha256"] == file_sha256(manifest["model_file"])
    assert {"convviz", "tensorflow", "keras", "cpu"} <= set(manifest)
    assert manifest["cpu"]["flags"]


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["explain", "small-convnet", "{tmp}/missing", "--out", "{tmp}/o"],
         "convviz: error: There is no file or folder at '{tmp}/missing'. Check the path."),
        (["explain", "small-convnet", "{tmp}/images", "--layer", "nope", "--out", "{tmp}/o"],
         "convviz: error: The model 'small-convnet' has no layer 'nope'. Its layers: "),
        (["explain", "small-convnet", "{tmp}/images", "--class", "5", "--out", "{tmp}/o"],
         "convviz: error: Class 5 does not exist: 'small-convnet' has classes 0 to 1. Pick a class in that range."),
        (["explain", "{tmp}/model.keras", "{tmp}/images", "--out", "{tmp}/o"],
         "convviz: error: There is no model file at '{tmp}/model.keras'."),
        (["activations", "small-convnet", "{tmp}/images/broken.jpg", "--out", "{tmp}/o"],
         "convviz: error: This file is not an image ConvViz can read"),
    ],
)
def test_failures_exit_1_with_one_line_saying_what_to_do(folder, capsys, arguments, message):
    code = main([argument.format(tmp=folder) for argument in arguments])
    assert code == 1
    assert capsys.readouterr().err.startswith(message.format(tmp=folder))


def test_a_model_file_goes_through_the_upload_check(folder, capsys):
    inputs = keras.Input((8, 8, 3))
    outputs = keras.layers.Lambda(lambda x: x * 2)(inputs)
    keras.Model(inputs, outputs).save(folder / "lambda.keras")
    code = main(["explain", str(folder / "lambda.keras"), str(folder / "images"), "--out", str(folder / "o")])
    assert code == 1
    error = capsys.readouterr().err
    assert error.startswith("convviz: error: ") and "Lambda" in error


def test_activations_and_patterns_write_their_pictures(folder):
    out = folder / "out"
    assert main(["activations", "small-convnet", str(folder / "images" / "a.png"), "--layers",
                 "conv2d_1,max_pooling2d_1", "--out", str(out)]) == 0
    grids = sorted(path.name for path in (out / "activations").iterdir())
    assert grids == ["00000-conv2d_1.png", "00001-max_pooling2d_1.png"]
    assert main(["patterns", "small-convnet", "--layer", "conv2d_1", "--filters", "0-2", "--steps", "2",
                 "--out", str(out)]) == 0
    assert sorted(path.name for path in (out / "patterns").iterdir()) == [
        "filter_0000.png", "filter_0001.png", "filter_0002.png"
    ]
    assert Image.open(out / "atlas.png").mode == "RGB"
    assert json.loads((out / "manifest.json").read_text())["settings"]["filters"] == [0, 1, 2]


def test_pyproject_declares_the_console_script():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["project"]["scripts"]["convviz"] == "convviz_cli.main:console_main"
    packages = project["tool"]["setuptools"]["packages"]
    found = sorted(
        path.parent.relative_to(ROOT).as_posix().replace("/", ".")
        for package in ("convviz_core", "convviz_app", "convviz_cli")
        for path in (ROOT / package).rglob("__init__.py")
    )
    assert sorted(packages) == found


def test_the_project_installs_with_its_console_script(tmp_path):
    # The locked requirements are already installed; the project itself goes
    # in without dependencies, as the README says.
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(tmp_path / "venv")], check=True)
    pip = subprocess.run(
        [str(tmp_path / "venv" / "bin" / "pip"), "install", "-q", "--no-deps", "--no-build-isolation", str(ROOT)],
        capture_output=True, text=True, timeout=300,
    )
    assert pip.returncode == 0, pip.stderr
    result = subprocess.run([str(tmp_path / "venv" / "bin" / "convviz"), "explain", "--help"],
                            capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert result.returncode == 0 and result.stdout.startswith("usage: convviz explain")


def test_serve_outside_a_checkout_says_to_install_the_checkout_in_editable_mode(monkeypatch, tmp_path, capsys):
    # As after `pip install .`: the wheel holds convviz_cli but not app.py and pages/.
    missing = tmp_path / "site-packages" / "app.py"
    monkeypatch.setattr("convviz_cli.main.DASHBOARD_APP", missing)
    assert main(["serve", "small-convnet"]) == 1
    assert capsys.readouterr().err == (
        "convviz: error: convviz serve needs the source checkout: the dashboard (app.py and pages/) is not part of "
        f"an installed package, and {missing} does not exist. In a clone of ConvViz, install it with "
        "`pip install --no-deps -e .` (after `pip install -r requirements.txt`) and run convviz serve again.\n"
    )

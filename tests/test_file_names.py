"""Tests for `convviz_core.inputs.file_names.display_name`: the one rule for showing a user's file name."""

import pytest

from convviz_core.inputs.file_names import MAX_DISPLAY_CHARACTERS, display_name
from convviz_core.models.registry import MODEL_FILE_SUFFIXES


@pytest.mark.parametrize(
    "file_name, suffixes, fallback, expected",
    [
        ("cat.jpg", (), "upload", "cat.jpg"),
        ("../../etc/passwd", (), "upload", "passwd"),
        ("C:\\Users\\me\\photo of me.png", (), "upload", "photo of me.png"),
        ("**bold** [link](x).png", (), "upload", "__bold__ _link_(x).png"),
        ("<script>.png", (), "upload", "_script_.png"),
        ("my_model.KERAS", MODEL_FILE_SUFFIXES, "uploaded model", "my_model"),
        ("weights.h5", MODEL_FILE_SUFFIXES, "uploaded model", "weights"),
        (".keras", MODEL_FILE_SUFFIXES, "uploaded model", "uploaded model"),
        ("", (), "upload", "upload"),
        ("   ", (), "upload", "upload"),
        ("café.png", (), "upload", "caf_.png"),
    ],
)
def test_display_name(file_name, suffixes, fallback, expected):
    assert display_name(file_name, suffixes, fallback) == expected


def test_display_name_is_cut_to_its_limit():
    assert display_name("a" * 500 + ".png") == "a" * MAX_DISPLAY_CHARACTERS

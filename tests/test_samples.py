"""Tests for the offline sample photographs."""

import socket

import numpy as np
import pytest
import skimage.data

from convviz_core.inputs import samples
from convviz_core.errors import InputError


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """Blocks the network and any download cache, then empties the sample cache."""

    def refuse(*unused_arguments, **unused_keywords):
        raise OSError("the network is blocked in this test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    # scikit-image downloads some images through pooch; pointing its fetcher at an
    # empty folder means only files inside the wheel can be found.
    fetchers = getattr(skimage.data, "_fetchers", None)
    if getattr(fetchers, "_image_fetcher", None) is not None:
        monkeypatch.setattr(fetchers._image_fetcher, "abspath", tmp_path)
    samples._load_samples.cache_clear()
    yield
    samples._load_samples.cache_clear()


def test_every_sample_loads_offline(offline):
    try:
        images = samples.sample_images()
    except pytest.skip.Exception as skipped:
        # Under pytest, scikit-image turns "needs a download" into a skip.
        pytest.fail(f"A sample needs a download: {skipped}")

    assert list(images) == ["chelsea", "coffee", "rocket", "astronaut", "camera"]
    for name, image in images.items():
        assert image.dtype == np.uint8, name
        assert image.ndim == 3 and image.shape[2] == 3, name
        assert min(image.shape[:2]) >= 224, name


def test_known_sizes_and_grayscale_conversion():
    images = samples.sample_images()
    assert images["chelsea"].shape == (300, 451, 3)
    assert images["coffee"].shape == (400, 600, 3)
    camera = images["camera"]
    assert (camera[..., 0] == camera[..., 1]).all() and (camera[..., 1] == camera[..., 2]).all()
    np.testing.assert_array_equal(camera[..., 0], skimage.data.camera())


def test_samples_cannot_be_changed_by_callers():
    images = samples.sample_images()
    with pytest.raises(ValueError):
        images["coffee"][0, 0, 0] = 0
    del images["coffee"]
    assert "coffee" in samples.sample_images()
    assert samples.sample_image("coffee") is samples.sample_images()["coffee"]


def test_captions_cover_every_sample():
    captions = samples.sample_captions()
    assert list(captions) == samples.sample_names() == list(samples.sample_images())
    assert all(caption.endswith(".") for caption in captions.values())


def test_unknown_sample_names_the_choices():
    with pytest.raises(InputError, match="choose one of.*chelsea"):
        samples.sample_image("dog")

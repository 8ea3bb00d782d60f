"""Tests for `convviz_core.features.atlas_cache`: keys, the disk cache, the memory cache and the background jobs."""

import dataclasses
import os
import threading
import time
import warnings

import keras
import numpy as np
import pytest

from convviz_core import InputError, VisionModel, filter_patterns
from convviz_core.features import atlas_cache
from convviz_core.features.atlas_cache import (
    MAX_FILTERS,
    FilterAtlasCache,
    atlas_request,
    load_atlas,
    prune,
    save_atlas,
    weights_digest,
)

SIZE = 16
STEPS = 3


def tiny_keras_model(fixed_size=True, seed=0):
    side = SIZE if fixed_size else None
    inputs = keras.Input((side, side, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv")(inputs)
    x = keras.layers.Conv2D(6, 3, padding="same", activation="relu", name="conv_b")(x)
    model = keras.Model(inputs, x)
    rng = np.random.default_rng(seed)
    model.set_weights([rng.normal(0, 0.3, weight.shape).astype("float32") for weight in model.weights])
    return model


def tiny_model(name="tiny", fixed_size=True, seed=0):
    return VisionModel(
        tiny_keras_model(fixed_size, seed),
        preprocess=lambda images: images / 255.0,
        name=name,
        input_size=(SIZE, SIZE),
    )


@pytest.fixture(scope="module")
def model():
    return tiny_model()


def request_for(model, **overrides):
    arguments = dict(layer_name="conv", filter_indices=[0, 1, 2], size=SIZE, steps=STEPS, precision="float32")
    arguments.update(overrides)
    return atlas_request(model, **arguments)


def test_a_computed_atlas_equals_filter_patterns_and_is_read_back_from_disk(model, tmp_path):
    request = request_for(model)
    first = FilterAtlasCache(tmp_path).get_or_compute(model, request, use_disk=True)
    assert first.source == "computed"
    expected = filter_patterns(model, "conv", [0, 1, 2], size=SIZE, steps=STEPS, precision="float32")
    np.testing.assert_array_equal(first.patterns, expected)
    assert (tmp_path / request.file_name).is_file()
    assert not first.patterns.flags.writeable

    # A new cache (another server process, or after a restart) reads the file.
    restarted = FilterAtlasCache(tmp_path)
    second = restarted.get_or_compute(model, request, use_disk=True)
    assert second.source == "disk"
    np.testing.assert_array_equal(second.patterns, expected)
    assert restarted.get_or_compute(model, request, use_disk=True).source == "memory"


def test_an_uploaded_model_stays_in_memory(model, tmp_path):
    cache = FilterAtlasCache(tmp_path)
    request = request_for(model)
    # "tiny" is not a built-in model's name, so by default nothing goes to disk.
    assert cache.get_or_compute(model, request).source == "computed"
    assert list(tmp_path.iterdir()) == []
    assert cache.get_or_compute(model, request).source == "memory"
    assert cache.lookup(request, use_disk=False).source == "memory"


def test_built_in_models_use_the_disk_by_default(tmp_path):
    # Named like a built-in model: its atlases are shared through the disk.
    builtin = tiny_model(name="small-convnet")
    request = request_for(builtin)
    FilterAtlasCache(tmp_path).get_or_compute(builtin, request)
    assert (tmp_path / request.file_name).is_file()
    assert request.file_name.startswith("small-convnet-")


@pytest.mark.parametrize(
    "change",
    [
        {"layer_name": "conv_b"},
        {"filter_indices": [0, 1, 3]},
        {"filter_indices": [1, 0, 2]},
        {"steps": STEPS + 1},
        {"step_size": 0.5},
        {"seed": 1},
        {"precision": "bfloat16"},
    ],
)
def test_every_parameter_is_part_of_the_key(model, change):
    base = request_for(model)
    assert request_for(model).key == base.key
    assert request_for(model, **change).key != base.key


def test_the_size_is_part_of_the_key_only_for_models_that_accept_any_size(model):
    assert request_for(model, size=64).key == request_for(model, size=SIZE).key
    flexible = tiny_model(fixed_size=False)
    small, large = request_for(flexible, size=16), request_for(flexible, size=24)
    assert (small.height, large.height) == (16, 24)
    assert small.key != large.key


def test_the_weights_are_part_of_the_key():
    # Same name and architecture, other weights (a retrained model): another atlas.
    retrained = tiny_model(seed=1)
    assert weights_digest(retrained) != weights_digest(tiny_model(seed=0))
    assert request_for(retrained).key != request_for(tiny_model(seed=0)).key


def test_the_version_and_the_algorithm_are_part_of_the_key(model, monkeypatch):
    before = request_for(model).key
    monkeypatch.setattr(atlas_cache, "ATLAS_FORMAT_VERSION", atlas_cache.ATLAS_FORMAT_VERSION + 1)
    assert request_for(model).key != before
    monkeypatch.undo()
    monkeypatch.setattr(atlas_cache, "_algorithm_digest", lambda: "changed")
    assert request_for(model).key != before


@pytest.mark.parametrize(
    "arguments, message",
    [
        ({"filter_indices": []}, "at least one filter"),
        ({"filter_indices": list(range(MAX_FILTERS + 1))}, "at most 64 filters"),
        ({"steps": -1}, "between 0 and 1000 steps"),
        ({"layer_name": "nope"}, "no layer of that name"),
    ],
)
def test_bad_requests_are_input_errors(model, arguments, message):
    with pytest.raises(InputError, match=message):
        request_for(model, **arguments)


def test_a_filter_out_of_range_is_reported_by_the_job(model, tmp_path):
    job = FilterAtlasCache(tmp_path).submit(model, request_for(model, filter_indices=[0, 9]), use_disk=True)
    with pytest.raises(InputError, match="no filter 9"):
        job.result(timeout=60)
    assert list(tmp_path.glob("*.npy")) == []


def test_concurrent_requests_share_one_computation(model, tmp_path, monkeypatch):
    calls = []
    original = atlas_cache.patterns_module.filter_patterns

    def slow_filter_patterns(*args, **kwargs):
        calls.append(args)
        time.sleep(0.3)
        return original(*args, **kwargs)

    monkeypatch.setattr(atlas_cache.patterns_module, "filter_patterns", slow_filter_patterns)
    cache = FilterAtlasCache(tmp_path)
    request = request_for(model)
    results = []

    def ask():
        results.append(cache.get_or_compute(model, request, use_disk=True))

    threads = [threading.Thread(target=ask) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(calls) == 1
    assert len(results) == 4
    for atlas in results[1:]:
        np.testing.assert_array_equal(atlas.patterns, results[0].patterns)


def test_a_job_goes_on_when_nobody_waits_and_reports_progress(model, tmp_path):
    cache = FilterAtlasCache(tmp_path)
    request = request_for(model, steps=12)
    job = cache.submit(model, request, use_disk=True)
    # The page that asked may be gone (a rerun); asking again gives the same job or the result.
    again = cache.submit(model, request, use_disk=True)
    assert again is job or again.done()
    atlas = job.result(timeout=60)
    assert job.done() and job.progress[0] == job.progress[1]
    assert job.elapsed > 0
    assert cache.running_jobs() == []
    assert cache.lookup(request).source == "memory"
    reported = []
    cache.clear_memory()
    (tmp_path / request.file_name).unlink()
    cache.get_or_compute(model, request, progress=lambda done, total: reported.append((done, total)), poll_seconds=0.001)
    assert all(0 <= done <= total for done, total in reported)
    np.testing.assert_array_equal(atlas.patterns, cache.lookup(request).patterns)


def test_the_memory_cache_is_bounded(model, tmp_path):
    cache = FilterAtlasCache(tmp_path, memory_entries=2)
    requests = [request_for(model, seed=seed) for seed in range(3)]
    for request in requests:
        cache.get_or_compute(model, request, use_disk=False)
    assert cache.lookup(requests[0], use_disk=False) is None
    assert cache.lookup(requests[2], use_disk=False).source == "memory"


def test_a_request_for_another_model_is_refused(model, tmp_path):
    with pytest.raises(ValueError, match="made for the model"):
        FilterAtlasCache(tmp_path).submit(tiny_model(seed=3), request_for(model))


def test_save_is_atomic_and_leaves_no_temporary_file(tmp_path):
    patterns = np.arange(2 * 4 * 4 * 3, dtype=np.uint8).reshape(2, 4, 4, 3)
    path = tmp_path / "atlas.npy"
    assert save_atlas(path, patterns)
    assert [entry.name for entry in tmp_path.iterdir()] == ["atlas.npy"]
    np.testing.assert_array_equal(load_atlas(path), patterns)


def test_a_failed_write_keeps_the_old_file_warns_and_cleans_up(tmp_path, monkeypatch):
    path = tmp_path / "atlas.npy"
    old = np.zeros((1, 4, 4, 3), np.uint8)
    save_atlas(path, old)

    def failing_replace(source, target):
        raise OSError("disk full")

    monkeypatch.setattr(atlas_cache.os, "replace", failing_replace)
    with pytest.warns(UserWarning, match="disk full"):
        assert not save_atlas(path, np.ones((1, 4, 4, 3), np.uint8))
    assert [entry.name for entry in tmp_path.iterdir()] == ["atlas.npy"]
    np.testing.assert_array_equal(load_atlas(path), old)


@pytest.mark.parametrize(
    "content",
    [b"", b"not an npy file", b"\x93NUMPY\x01\x00v\x00{'descr': '<f4', 'fortran_order'"],
)
def test_a_damaged_file_is_a_miss_and_is_removed(tmp_path, content):
    path = tmp_path / "atlas.npy"
    path.write_bytes(content)
    assert load_atlas(path) is None
    assert not path.exists()


def test_a_file_of_the_wrong_shape_is_a_miss(model, tmp_path):
    request = request_for(model)
    cache = FilterAtlasCache(tmp_path)
    np.save(cache.path(request), np.zeros((2, SIZE, SIZE, 3), np.uint8))
    assert cache.lookup(request) is None
    assert cache.get_or_compute(model, request, use_disk=True).source == "computed"


def test_prune_removes_the_least_recently_used_files_first(tmp_path):
    for index in range(4):
        path = tmp_path / f"atlas-{index}.npy"
        save_atlas(path, np.zeros((1, 10, 10, 3), np.uint8))
        os.utime(path, (1000 + index, 1000 + index))
    size = (tmp_path / "atlas-0.npy").stat().st_size
    # Reading a file marks it as used.
    load_atlas(tmp_path / "atlas-0.npy")
    assert prune(tmp_path, max_bytes=2 * size) == 2
    assert sorted(entry.name for entry in tmp_path.iterdir()) == ["atlas-0.npy", "atlas-3.npy"]


def test_the_default_folder_is_the_convviz_cache(model, tmp_path, monkeypatch):
    monkeypatch.setenv("CONVVIZ_CACHE_DIR", str(tmp_path))
    cache = FilterAtlasCache()
    assert cache.directory == tmp_path / "atlases"
    assert cache.path(request_for(model)).parent == tmp_path / "atlases"


def test_requests_are_plain_data(model):
    request = request_for(model)
    assert dataclasses.replace(request) == request
    assert hash(request) == hash(dataclasses.replace(request))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(request.key) == 32

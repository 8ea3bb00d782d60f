"""Tests for `convviz_core.features.atlas_cache`: keys, the disk cache, the memory cache and the jobs that compute atlases."""

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
    dependency_modules,
    load_atlas,
    prune,
    save_atlas,
    weights_digest,
)
from convviz_core.jobs import JobCancelled, JobPool, JobTimedOut, Priority, QueueFull
from convviz_core.models.registry import load_model

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
        {"schedule": "matched"},
    ],
)
def test_every_parameter_is_part_of_the_key(model, change):
    base = request_for(model)
    assert request_for(model).key == base.key
    assert request_for(model, **change).key != base.key


def reshaped_model():
    """A fixed-size model whose last conv follows a Reshape: it runs at the input size only."""
    inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Reshape((SIZE * 2, SIZE // 2, 3))(inputs)
    x = keras.layers.Conv2D(2, 3, name="after_reshape")(x)
    return VisionModel(keras.Model(inputs, x), name="reshaped")


def test_the_size_is_part_of_the_key_where_the_layer_allows_any_size(model):
    # Fully convolutional up to the layer: the size applies, even to a fixed-size model.
    small, large = request_for(model, size=SIZE), request_for(model, size=24)
    assert (small.height, large.height) == (SIZE, 24) and small.key != large.key
    flexible = tiny_model(fixed_size=False)
    small, large = request_for(flexible, size=16), request_for(flexible, size=24)
    assert (small.height, large.height) == (16, 24)
    assert small.key != large.key
    # A Reshape on the way pins the input size: the size is ignored.
    pinned = reshaped_model()
    first = atlas_request(pinned, "after_reshape", [0], size=24, steps=1)
    second = atlas_request(pinned, "after_reshape", [0], size=40, steps=1)
    assert (first.height, first.width) == (SIZE, SIZE) and first.key == second.key


def test_the_method_and_objective_are_part_of_the_key(model):
    book = request_for(model)
    fourier = request_for(model, method="fourier", steps=None, precision=None)
    neuron = request_for(model, method="fourier", objective="neuron", steps=None, precision=None)
    assert len({book.key, fourier.key, neuron.key}) == 3
    assert (fourier.steps, fourier.step_size, fourier.precision) == (40, 0.12, "float32")
    # The clear mode has its own step rule (Adam): a gradient-ascent schedule does not split its key.
    assert request_for(model, method="fourier", steps=None, precision=None, schedule="matched").key == fourier.key
    with pytest.raises(InputError, match="needs method='fourier'"):
        request_for(model, objective="neuron")
    with pytest.raises(InputError, match="Choose a pattern method"):
        request_for(model, method="deepdream")


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
        ({"steps": 1001}, "between 0 and 1000 steps"),
        ({"steps": 2.5}, "whole number"),
        ({"step_size": float("nan")}, "positive number"),
        ({"step_size": 0.0}, "positive number"),
        ({"filter_indices": [0, 4]}, "has filters 0 to 3; there is no filter 4"),
        ({"layer_name": "nope"}, "no layer of that name"),
    ],
)
def test_bad_requests_are_input_errors(model, arguments, message):
    with pytest.raises(InputError, match=message):
        request_for(model, **arguments)


def test_a_filter_out_of_range_is_refused_before_anything_is_queued(model, tmp_path):
    with pytest.raises(InputError, match="no filter 9"):
        request_for(model, filter_indices=[0, 9])


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
    assert again.key == job.key
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


# --- Everything the patterns depend on is in the key ------------------------------------------


def test_the_preprocessing_is_part_of_the_key(tmp_path):
    # The case: one uploaded file, "divide by 255" then "caffe".
    path = tmp_path / "upload.keras"
    tiny_keras_model().save(path)
    unit, caffe = load_model(path, preprocess="divide by 255"), load_model(path, preprocess="caffe")
    assert (unit.preprocess_key, caffe.preprocess_key) == ("preset:divide by 255", "preset:caffe")
    assert weights_digest(unit) == weights_digest(caffe)
    unit_request, caffe_request = request_for(unit), request_for(caffe)
    assert unit_request.key != caffe_request.key
    cache = FilterAtlasCache(tmp_path / "atlases")
    first = cache.get_or_compute(unit, unit_request)
    second = cache.get_or_compute(caffe, caffe_request)
    assert second.source == "computed"
    assert not np.array_equal(first.patterns, second.patterns)
    # And the same file with the same preset, loaded again, shares the atlas.
    again = load_model(path, preprocess="caffe")
    assert request_for(again).key == caffe_request.key
    assert cache.get_or_compute(again, request_for(again)).source == "memory"
    # A request is only served to the model it was made for.
    with pytest.raises(ValueError, match="made for the model"):
        cache.submit(unit, caffe_request)


def test_preprocessing_functions_are_named_by_their_source_or_never_shared():
    def scale(images):
        return images / 255.0

    first, second = (VisionModel(tiny_keras_model(), preprocess=scale, name="m") for _ in range(2))
    assert first.preprocess_key == second.preprocess_key
    assert first.preprocess_key.endswith("scale:" + first.preprocess_key.rsplit(":", 1)[1])
    offset = 3.0
    closure = VisionModel(tiny_keras_model(), preprocess=lambda images: images - offset, name="m")
    other = VisionModel(tiny_keras_model(), preprocess=lambda images: images - offset, name="m")
    assert closure.preprocess_key.startswith("unique:")
    assert closure.preprocess_key != other.preprocess_key


def test_the_architecture_is_part_of_the_key():
    inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", activation="tanh", name="conv")(inputs)
    x = keras.layers.Conv2D(6, 3, padding="same", activation="relu", name="conv_b")(x)
    other = keras.Model(inputs, x)
    other.set_weights(tiny_keras_model().get_weights())
    same_weights = VisionModel(other, preprocess=tiny_model()._preprocess, name="tiny")
    assert weights_digest(same_weights) == weights_digest(tiny_model())
    assert request_for(same_weights).key != request_for(tiny_model()).key


def test_the_algorithm_digest_covers_every_module_the_patterns_depend_on(model, monkeypatch):
    modules = dependency_modules()
    for name in (
        "convviz_core.features.patterns",
        "convviz_core.graph.plan",
        "convviz_core.models.vision_model",
        "convviz_core.models.registry",  # The preprocessing presets.
        "convviz_core.models.efficientnet_lite",  # EfficientNet-Lite0's preprocessing.
        "convviz_core.inputs.images",
    ):
        assert name in modules
    before = request_for(model).key
    original = atlas_cache._module_source

    def edited(name):
        source = original(name)
        return source + "\n# An edit.\n" if name == "convviz_core.graph.plan" else source

    monkeypatch.setattr(atlas_cache, "_module_source", edited)
    atlas_cache._algorithm_digest.cache_clear()
    try:
        assert request_for(model).key != before
    finally:
        monkeypatch.undo()
        atlas_cache._algorithm_digest.cache_clear()
    assert request_for(model).key == before


# --- Atlases through the job pool ---------------------------------------------------------------


def wait_until_running(ticket):
    for _ in range(6000):
        status = ticket.status()
        if status.state != "queued" and status.done > 0:
            return
        time.sleep(0.005)
    raise AssertionError("the atlas never started")


def test_a_cancelled_atlas_stops_promptly_and_is_never_cached(model, tmp_path):
    cache = FilterAtlasCache(tmp_path)
    request = request_for(model, steps=1000)
    ticket = cache.submit(model, request, use_disk=True, session_id="alice")
    wait_until_running(ticket)
    # Alice asks for another atlas: her first one is cancelled mid-way.
    newer = cache.submit(model, request_for(model, steps=2), use_disk=True, session_id="alice")
    with pytest.raises(JobCancelled):
        ticket.result(timeout=60)
    assert ticket.status().done < ticket.status().total
    newer.result(timeout=60)
    assert cache.lookup(request) is None
    assert not cache.path(request).exists()


def test_an_atlas_past_its_time_limit_is_not_cached(model, tmp_path):
    cache = FilterAtlasCache(tmp_path)
    request = request_for(model, steps=1000)
    ticket = cache.submit(model, request, use_disk=True, time_limit=0.0)
    with pytest.raises(JobTimedOut, match="patterns of conv took longer"):
        ticket.result(timeout=60)
    assert cache.lookup(request) is None and list(tmp_path.glob("*.npy")) == []


def test_an_atlas_two_sessions_wait_for_survives_one_sessions_newer_request(model, tmp_path):
    cache = FilterAtlasCache(tmp_path)
    shared_request = request_for(model, steps=60)
    alice = cache.submit(model, shared_request, use_disk=False, session_id="alice")
    bob = cache.submit(model, shared_request, use_disk=False, session_id="bob")
    cache.submit(model, request_for(model, steps=1), use_disk=False, session_id="alice")
    assert bob.result(timeout=60).source == "computed"
    assert alice.result(timeout=60) is bob.result()
    assert cache.lookup(shared_request, use_disk=False).source == "memory"


def test_a_full_queue_says_how_many_jobs_are_ahead_and_the_user_may_wait(model, tmp_path):
    pool = JobPool(workers=1, max_queued=1)
    cache = FilterAtlasCache(tmp_path, pool=pool)
    started, release = threading.Event(), threading.Event()
    pool.submit_job("blocker", lambda progress: started.set() or release.wait(60))
    assert started.wait(60)
    cache.submit(model, request_for(model, seed=1), use_disk=False, session_id="alice")
    with pytest.raises(QueueFull) as full:
        cache.submit(model, request_for(model, seed=2), use_disk=False, session_id="bob")
    assert full.value.jobs_ahead == 2
    ticket = cache.submit(model, request_for(model, seed=2), use_disk=False, session_id="bob", wait_in_line=True)
    assert ticket.jobs_ahead == 2
    # The built-in models' default atlases go first.
    urgent = cache.submit(model, request_for(model, seed=3), use_disk=False, session_id="carol", priority=Priority.URGENT)
    assert urgent.jobs_ahead == 1
    release.set()
    assert ticket.result(timeout=60).source == "computed"
    assert [job.key for job in cache.running_jobs()] == []


# --- The Filters view's rules (atlas_service) ---------------------------------------------------


def test_the_filters_views_rules_pick_the_filters_and_refuse_a_range_past_the_layer(model):
    from convviz_core.features import atlas_service as service

    assert service.chosen_filters(model, service.AtlasChoice("conv", first=0, count=8)) == [0, 1, 2, 3]
    assert service.chosen_filters(model, service.AtlasChoice("conv_b", first=5, count=8)) == [5]
    with pytest.raises(InputError, match=r"Layer 'conv' has 4 filters \(0 to 3\)\. Choose a first filter"):
        service.chosen_filters(model, service.AtlasChoice("conv", first=4, count=8))
    with pytest.raises(InputError, match="how many filters"):
        service.chosen_filters(model, service.AtlasChoice("conv", count=5))
    request = service.grid_request(model, service.AtlasChoice("conv_b", first=2, count=8, steps=STEPS))
    assert request.filter_indices == (2, 3, 4, 5) and request.steps == STEPS
    # Where the layer runs at its model's input size only, the grid holds the large
    # pattern; where any size works, it is optimised again at 150 px.
    assert service.large_pattern_request(reshaped_model(), service.AtlasChoice("after_reshape", count=8), 1) is None
    large = service.large_pattern_request(model, service.AtlasChoice("conv"), 1)
    assert (large.filter_indices, large.height) == ((1,), service.LARGE_PATTERN_SIZE)
    flexible = tiny_model(fixed_size=False)
    large = service.large_pattern_request(flexible, service.AtlasChoice("conv"), 1)
    assert (large.filter_indices, large.height) == ((1,), service.LARGE_PATTERN_SIZE)


def test_a_built_in_models_default_atlas_goes_first_without_a_time_limit(model, tmp_path):
    from convviz_core.features import atlas_service as service

    default = service.default_atlas_choice(model)
    assert service.atlas_priority(model, default, builtin=True) == Priority.URGENT
    assert service.atlas_priority(model, default, builtin=False) == Priority.NORMAL
    other = dataclasses.replace(default, steps=41)
    assert service.atlas_priority(model, other, builtin=True) == Priority.NORMAL
    pool = JobPool(workers=1, time_limit=0.0)
    store = FilterAtlasCache(tmp_path, pool=pool)
    urgent = service.submit_atlas(store, model, request_for(model), False, "alice", Priority.URGENT)
    assert urgent.result(timeout=60).source == "computed"
    with pytest.raises(JobTimedOut):
        service.submit_atlas(store, model, request_for(model, seed=5, steps=1000), False, "alice").result(timeout=60)


def test_the_progress_bar_says_where_a_job_stands(model):
    from convviz_core.features import atlas_service as service
    from convviz_core.jobs import JobStatus

    request = request_for(model)
    queued = JobStatus("queued", 3, 0, 1, 0.0, 12.4, "")
    assert service.progress_text(queued, request) == (
        0.0,
        "Waiting in line for the 3 patterns of conv: 3 computations ahead (12 s so far)...",
    )
    running = JobStatus("running", 0, 2, 8, 5.2, 0.0, "")
    assert service.progress_text(running, request) == (0.25, "Optimising the 3 patterns of conv: 5 s")

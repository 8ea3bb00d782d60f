"""Tests for the app's shared, byte-bounded memory cache and for computing each map once."""

import threading
import time
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from convviz_app import cached
from convviz_app.cached import ByteBudgetCache, size_in_bytes
from convviz_core import explanations

APP = Path(__file__).resolve().parent.parent / "app.py"
TIMEOUT = 240


def array_of(megabytes, fill=0):
    return np.full(megabytes * 1024**2, fill, dtype=np.uint8)


def test_values_are_dropped_least_recently_used_first_when_the_bytes_run_out():
    cache = ByteBudgetCache(max_bytes=3 * 1024**2)
    for name in "abc":
        cache.get_or_compute(name, lambda: array_of(1))
    cache.get_or_compute("a", lambda: pytest.fail("'a' is kept"))  # Now the most recent.
    cache.get_or_compute("d", lambda: array_of(1))
    assert len(cache) == 3 and cache.total_bytes == 3 * 1024**2
    recomputed = []
    cache.get_or_compute("b", lambda: recomputed.append("b") or array_of(1))
    assert recomputed == ["b"]  # 'b' was the least recently used.
    cache.get_or_compute("a", lambda: pytest.fail("'a' is kept"))


def test_a_value_larger_than_the_budget_is_returned_but_not_kept():
    cache = ByteBudgetCache(max_bytes=1024**2)
    cache.get_or_compute("small", lambda: array_of(0) + 1)
    value = cache.get_or_compute("big", lambda: array_of(2))
    assert value.nbytes == 2 * 1024**2
    assert len(cache) == 1 and cache.total_bytes == 0


def test_errors_reach_the_caller_and_are_not_kept():
    cache = ByteBudgetCache(max_bytes=1024)
    calls = []

    def failing():
        calls.append(1)
        raise ValueError("broken photo")

    for _ in range(2):
        with pytest.raises(ValueError, match="broken photo"):
            cache.get_or_compute("photo", failing)
    assert len(calls) == 2 and len(cache) == 0


def test_threads_asking_for_the_same_value_compute_it_once():
    cache = ByteBudgetCache(max_bytes=1024**2)
    calls = []

    def slow():
        calls.append(1)
        time.sleep(0.2)
        return np.arange(10)

    results = []
    threads = [threading.Thread(target=lambda: results.append(cache.get_or_compute("k", slow))) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(calls) == 1
    assert all(result is results[0] for result in results)


def test_shared_arrays_are_read_only():
    cache = ByteBudgetCache(max_bytes=1024**2)
    value = cache.get_or_compute("maps", lambda: {"layer": np.zeros((2, 2)), "list": [np.ones(3)]})
    with pytest.raises(ValueError, match="read-only"):
        value["layer"][0, 0] = 1
    with pytest.raises(ValueError, match="read-only"):
        value["list"][0][0] = 1


def test_size_in_bytes_counts_arrays_bytes_and_containers():
    grid = cached.LayerGrid(png=b"x" * 100, channels=3, height=2, width=2, dead=())
    assert size_in_bytes(np.zeros((10, 10), np.float32)) == 400
    assert size_in_bytes({"a": np.zeros(25, np.float32)}) == size_in_bytes("a") + 100
    assert size_in_bytes(grid) >= 100


def test_cache_in_memory_keys_on_the_named_arguments_only():
    calls = []

    @cached.cache_in_memory()
    def doubled(key, _payload):
        calls.append(key)
        return np.asarray(_payload) * 2

    first = doubled("k", [1, 2])
    again = doubled("k", [9, 9])  # Same key: the payload is not looked at.
    other = doubled("other", [3])
    assert calls == ["k", "other"]
    assert first is again and other.tolist() == [6]


def test_the_grad_cam_page_computes_its_first_map_once(monkeypatch):
    cached.clear_memory_caches()
    calls = []
    original = explanations.grad_cam_with_probabilities

    def counted(model, image, class_index=None, layer_name=None):
        calls.append((class_index, layer_name))
        return original(model, image, class_index, layer_name)

    monkeypatch.setattr(explanations, "grad_cam_with_probabilities", counted)
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    at.session_state["model_choice"] = "small-convnet"
    at.run()
    at.switch_page("pages/grad-cam.py").run()
    assert not at.exception and not at.error
    assert len(calls) == 1, calls
    # Another class is a new map; going back to the top class is not.
    other = 1 - int(at.selectbox(key=next(key for key in at.session_state if key.startswith("gradcam_class:"))).value)
    at.selectbox(key=next(key for key in at.session_state if key.startswith("gradcam_class:"))).set_value(other).run()
    assert len(calls) == 2, calls

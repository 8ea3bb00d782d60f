"""Score-CAM, faithfulness scores, the sanity check and a dataset's report on a real RQ worker (issue 17).

One real `redis-server` and one real worker process (`python -m
convviz_core.worker`) for the module, sharing this module's cache folder
with the test, which plays the app replica with a `QueuePool`. Every result
a worker sends back is compared with the same computation in this process,
on the book's small convnet and the cat: they must be equal to 1e-6. The
last test drives the Compare page (AppTest) with `CONVVIZ_QUEUE_URL` set and
checks in Redis that its Score-CAM was computed by the worker. Skipped where
redis-server is not installed (apt-get install redis-server).
"""

import hashlib
import io
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest

from convviz_core import InputError, job_queue, load_model
from convviz_core.explanations import chance_level, compute_class_map, score_map
from convviz_core.inputs.pictures import png_bytes
from convviz_core.inputs.samples import sample_image
from convviz_core.job_queue import QueuePool
from convviz_core.jobs import JobCancelled, RemoteCall
from convviz_core.metrics.sanity import cascading_randomization
from convviz_core.models.sources import (
    ModelSource,
    builtin_source,
    store_shared_file,
    upload_source,
)
from convviz_core.remote_jobs import UPLOADS_FOLDER
from convviz_core.reports.dataset_report import explain_dataset
from tools import topology

TIMEOUT = 120
APP = Path(__file__).resolve().parent.parent / "app.py"

pytestmark = pytest.mark.skipif(
    topology.REDIS_SERVER is None, reason="needs redis-server (apt-get install redis-server)"
)


@pytest.fixture(scope="module")
def queue(tmp_path_factory, private_cache_dir):
    """(Redis URL, a connection) with one worker that shares this module's cache folder."""
    folder = tmp_path_factory.mktemp("queue")
    with topology.redis_server(folder) as (_, url):
        worker = topology.start_worker(folder, url, private_cache_dir, "worker-1", preload=False)
        try:
            topology.wait_for_workers(url, 1, timeout=60, process=worker)
            yield url, job_queue.connect(url)
        finally:
            worker.stop()


@pytest.fixture()
def pool(queue):
    made = QueuePool(queue[0], poll_seconds=0.05)
    yield made
    made.shutdown(wait=False, cancel_futures=True)


@pytest.fixture(scope="module")
def small():
    model = load_model("small-convnet")
    return model, sample_image("chelsea"), model.default_cam_layer()


def remote(pool, key, target, *args, **options):
    """Submits `convviz_core.remote_jobs.<target>(*args)`; returns its ticket."""
    return pool.submit_job(key, RemoteCall(f"convviz_core.remote_jobs:{target}", args), **options)


def record(connection, ticket):
    return connection.hgetall(job_queue.job_key(ticket._job.job_id))


def test_the_worker_s_score_cam_scores_and_sanity_curves_equal_this_process_s(queue, pool, small):
    _, connection = queue
    model, image, layer = small
    source = builtin_source(model)
    ticket = remote(pool, "score-cam", "class_map", source, image, layer, None, "score-cam")
    worker_map = ticket.result(TIMEOUT)
    local_map = compute_class_map(model, image, layer, None, "score-cam")
    assert worker_map.class_index == local_map.class_index == 1
    np.testing.assert_allclose(worker_map.heatmap, local_map.heatmap, rtol=0, atol=1e-6)
    np.testing.assert_allclose(worker_map.probabilities, local_map.probabilities, rtol=0, atol=1e-6)
    # Computed by the worker, and the photo it was sent is not kept in Redis.
    done = record(connection, ticket)
    assert done[b"worker"] == b"worker-1" and done[b"outcome"] == b"ok" and b"payload" not in done

    grad_cam = compute_class_map(model, image, layer, 1, "grad-cam").heatmap
    maps = {"score-cam": local_map.heatmap, "grad-cam": grad_cam, "same-as-grad-cam": grad_cam}
    scores, chance = remote(pool, "scores", "map_scores", source, image, layer, 1, maps, 8, (0, 1)).result(TIMEOUT)
    assert list(scores) == list(maps)
    for method, heatmap in maps.items():
        expected = score_map(model, image, heatmap, 1, layer, 8)
        for name in ("deletion_auc", "insertion_auc", "deletion_curve", "insertion_curve"):
            np.testing.assert_allclose(getattr(scores[method].curves, name), getattr(expected.curves, name),
                                       rtol=0, atol=1e-6)
        np.testing.assert_allclose(scores[method].average_drop.average_drop, expected.average_drop.average_drop,
                                   rtol=0, atol=1e-6)
    expected_chance = chance_level(model, image, (15, 15), 1, layer, 8, (0, 1))
    assert chance.count == 2 and chance.class_index == 1
    for name in ("deletion_auc", "insertion_auc", "deletion_auc_spread", "insertion_auc_spread", "average_drop"):
        np.testing.assert_allclose(getattr(chance, name), getattr(expected_chance, name), rtol=0, atol=1e-6)

    sanity = remote(pool, "sanity", "sanity_curves", source, image, layer, 1, ("grad-cam", "layer-cam")).result(TIMEOUT)
    expected_sanity = cascading_randomization(model, image, ["grad-cam", "layer-cam"], 1, layer)
    assert sanity.steps == expected_sanity.steps
    for method in ("grad-cam", "layer-cam"):
        np.testing.assert_allclose(sanity.rank_correlation[method], expected_sanity.rank_correlation[method],
                                   rtol=0, atol=1e-6)
        np.testing.assert_allclose(sanity.ssim[method], expected_sanity.ssim[method], rtol=0, atol=1e-6)


def test_a_remote_score_cam_reports_progress_and_a_newer_request_stops_it_on_the_worker(queue, pool, small):
    _, connection = queue
    model, image, layer = small
    source = builtin_source(model)
    older = remote(pool, "score-cam-conv2d_3", "class_map", source, image, "conv2d_3", None, "score-cam",
                   session_id="alice", description="Score-CAM at conv2d_3")
    topology.wait_until(lambda: older.status().state == "running" and 0 < older.progress[0] < older.progress[1],
                        None, "progress from the worker", TIMEOUT)
    newer = remote(pool, "score-cam-class-0", "class_map", source, image, layer, 0, "score-cam", session_id="alice")
    with pytest.raises(JobCancelled, match="Score-CAM at conv2d_3 was cancelled: nobody waits for it any more"):
        older.result(TIMEOUT)
    # The worker stopped it part-way, and went on to the newer request.
    topology.wait_until(lambda: record(connection, older).get(b"state") == b"done", None, "the worker to stop",
                        TIMEOUT)
    stopped = record(connection, older)
    assert stopped[b"outcome"] == b"error" and int(stopped[b"done"]) < int(stopped[b"total"])
    assert isinstance(pickle.loads(stopped[b"error"]), JobCancelled)
    assert newer.result(TIMEOUT).class_index == 0


def test_an_uploaded_model_travels_by_its_sha256_through_the_upload_check(queue, pool, small, tmp_path):
    model, image, layer = small
    path = tmp_path / "mine.keras"
    model.keras_model.save(path)
    data = path.read_bytes()
    # The small convnet's own preprocessing is "divide by 255": the upload's maps are the built-in's.
    source = upload_source(data, "my model.keras", "divide by 255", None, (150, 150))
    assert source.digest == hashlib.sha256(data).hexdigest()
    worker_map = remote(pool, "upload", "class_map", source, image, layer, None, "grad-cam").result(TIMEOUT)
    np.testing.assert_allclose(worker_map.heatmap, compute_class_map(model, image, layer, None, "grad-cam").heatmap,
                               rtol=0, atol=1e-6)
    # A file that is not a model is refused by the worker's check, as by an upload's.
    refused = upload_source(b"not a model at all", "bad.keras", "divide by 255", None, (150, 150))
    with pytest.raises(InputError, match=r"This is not a \.keras file \(a \.keras file is a zip archive\)"):
        remote(pool, "refused", "class_map", refused, image, layer, None, "grad-cam").result(TIMEOUT)
    # A file the shared cache does not have: the worker says what to fix.
    missing = ModelSource("upload", "gone.keras", "0" * 64, "divide by 255", None, (150, 150))
    with pytest.raises(InputError, match=f"This worker cannot find the file {'0' * 64}.keras in .*CONVVIZ_CACHE_DIR"):
        remote(pool, "missing", "class_map", missing, image, layer, None, "grad-cam").result(TIMEOUT)


def test_a_dataset_report_from_a_zip_in_the_shared_cache_equals_this_process_s(queue, pool, small):
    model, image, layer = small
    images = {"cat.png": image, "rocket.png": sample_image("rocket")}
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, pixels in images.items():
            archive.writestr(name, png_bytes(pixels))
    digest = store_shared_file(UPLOADS_FOLDER, buffer.getvalue(), ".zip")
    labels = {"cat.png": 0}
    explained, report = remote(pool, "dataset", "dataset_report", builtin_source(model), digest, layer,
                               ("grad-cam",), (0,), None, labels).result(TIMEOUT)
    expected, _ = explain_dataset(model, layer, [png_bytes(pixels) for pixels in images.values()], list(images),
                                  ["grad-cam"], (0,), None, labels, lambda done, total: None)
    assert [item.name for item in explained] == ["cat.png", "rocket.png"]
    for item, reference in zip(explained, expected):
        assert item.predicted_class == reference.predicted_class and item.thumbnail == reference.thumbnail
        np.testing.assert_allclose(item.methods["grad-cam"].curves.deletion_auc,
                                   reference.methods["grad-cam"].curves.deletion_auc, rtol=0, atol=1e-6)
    # The cat is labelled class 0 and predicted 1: its confusion pictures came back too.
    assert explained[0].confusion is not None
    assert "report.csv" in {Path(name).name for name in zipfile.ZipFile(io.BytesIO(report)).namelist()}


def test_the_compare_page_s_score_cam_is_computed_by_the_worker(queue, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from convviz_app import cached

    url, connection = queue
    monkeypatch.setenv("CONVVIZ_QUEUE_URL", url)
    cached.job_pool.clear()
    cached.clear_memory_caches()
    try:
        at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
        at.session_state["model_choice"] = "small-convnet"
        at.run()
        at.switch_page("pages/compare.py").run()
        assert not at.exception and not at.error
        next(item for item in at.button if item.label == "Compute Score-CAM").click().run()
        assert not at.exception and not at.error
        assert "Score-CAM map" in [caption for image in at.main.image for caption in image.captions]
        jobs = {record[b"description"].decode(): record for record in
                (connection.hgetall(key) for key in connection.keys(job_queue.job_key("*")))}
        for description in ("Score-CAM of 'cross' at conv2d_4", "Scoring 6 maps against 3 random maps",
                            "Scoring the map against 3 random maps"):
            assert jobs[description][b"worker"] == b"worker-1" and jobs[description][b"outcome"] == b"ok", description
    finally:
        pool = cached.job_pool()
        cached.job_pool.clear()
        cached.atlas_store.clear()  # In case it was made with this pool.
        pool.shutdown(wait=False, cancel_futures=True)
        cached.clear_memory_caches()


def test_an_uploaded_model_s_atlas_is_computed_by_the_worker_and_kept_in_this_process(queue, pool, small, tmp_path):
    from convviz_core import load_uploaded_model
    from convviz_core.features.atlas_cache import FilterAtlasCache, atlas_request

    model, _, _ = small
    path = tmp_path / "mine.keras"
    model.keras_model.save(path)
    data = path.read_bytes()
    uploaded = load_uploaded_model(data, "mine.keras", preprocess="divide by 255", input_size=(150, 150))
    source = upload_source(data, "mine.keras", "divide by 255", None, (150, 150))
    request = atlas_request(uploaded, "conv2d_1", [0, 5, 9], size=32, steps=6)
    store = FilterAtlasCache(directory=tmp_path / "replica-atlases", pool=pool)

    ticket = store.submit(uploaded, request, use_disk=False, session_id="s", source=source)
    atlas = ticket.result(TIMEOUT)

    assert record(queue[1], ticket)[b"worker"] == b"worker-1"
    expected = FilterAtlasCache(directory=tmp_path / "here", memory_entries=1)._compute(uploaded, request, False, None)
    np.testing.assert_allclose(atlas.patterns, expected.patterns, rtol=0, atol=1e-6)
    # Kept in this replica's memory (an uploaded model's atlases never go to disk).
    assert store.lookup(request, use_disk=False) is not None
    assert not store.path(request).exists()

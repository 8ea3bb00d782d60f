"""Tests for `convviz_core.job_queue` and `convviz_core.worker`: long jobs on RQ workers over a real Redis.

Each test starts a real `redis-server` (Debian's, on a free port, in memory)
and real worker processes (`python -m convviz_core.worker`), and plays one or
two app replicas with `QueuePool`s in this process. The jobs are the fakes of
tests/queue_job_functions.py: they report progress until the test releases
them through Redis, so every test decides what runs when. Skipped where
redis-server is not installed (apt-get install redis-server).
"""

import signal
import time

import numpy as np
import pytest

from convviz_core import InputError, job_queue, worker
from convviz_core.job_queue import QueuePool, QueueUnavailable, WorkerLost
from convviz_core.jobs import JobCancelled, JobPool, JobTimedOut, Priority, QueueFull, RemoteCall, make_job_pool
from tools import topology

TIMEOUT = 20

pytestmark = pytest.mark.skipif(
    topology.REDIS_SERVER is None, reason="needs redis-server (apt-get install redis-server)"
)


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory):
    folder = tmp_path_factory.mktemp("redis")
    with topology.redis_server(folder) as (process, url):
        yield url, process, folder


@pytest.fixture()
def queue(redis_url, tmp_path):
    """(Redis URL, a fresh connection, a function that starts a worker): an empty Redis per test."""
    url, _, _ = redis_url
    connection = job_queue.connect(url)
    connection.flushall()
    workers = []

    def start_worker(count=1):
        started = []
        for _ in range(count):
            process = topology.start_worker(tmp_path, url, tmp_path / "cache", f"worker-{len(workers) + 1}",
                                            preload=False)
            workers.append(process)
            started.append(process)
        topology.wait_for_workers(url, len(workers), timeout=60, process=started[0])
        return started

    yield url, connection, start_worker
    for process in workers:
        process.stop()


@pytest.fixture()
def pools(queue):
    """A function that makes `QueuePool`s (app replicas); they are shut down after the test."""
    url = queue[0]
    made = []

    def make(**options):
        options.setdefault("max_queued", 8)
        pool = QueuePool(url, poll_seconds=0.05, **options)
        made.append(pool)
        return pool

    yield make
    for pool in made:
        pool.shutdown(wait=False, cancel_futures=True)


def gate(name, value=None):
    return RemoteCall("tests.queue_job_functions:gate", (name, value if value is not None else name))


def wait_started(connection, name, runs=1):
    topology.wait_until(lambda: int(connection.get(f"test:runs:{name}") or 0) >= runs, None,
                        f"run {runs} of {name}", TIMEOUT)


def release(connection, name):
    connection.set(f"test:release:{name}", "1")


def test_without_a_queue_url_the_app_keeps_its_in_process_pool(monkeypatch):
    monkeypatch.delenv("CONVVIZ_QUEUE_URL", raising=False)
    pool = make_job_pool(workers=1, max_queued=3)
    assert type(pool) is JobPool and pool.max_queued == 3
    # A RemoteCall is an ordinary job there: it runs in this process.
    assert pool.submit_job("local", RemoteCall("tests.test_job_queue:_times_two", (21,))).result(TIMEOUT) == 42
    monkeypatch.setenv("CONVVIZ_QUEUE_URL", "redis://127.0.0.1:1/0")
    assert type(make_job_pool()) is QueuePool  # Nothing is contacted until a job travels.


def _times_two(value, progress):
    return 2 * value


def test_a_job_runs_on_a_worker_reports_progress_and_is_shared_by_two_replicas(queue, pools):
    _, connection, start_worker = queue
    start_worker()
    first, second = pools(), pools()
    value = np.arange(6, dtype=np.float32).reshape(2, 3)
    ticket = first.submit_job("atlas", gate("atlas", value), session_id="alice")
    wait_started(connection, "atlas")
    topology.wait_until(lambda: ticket.status().state == "running" and ticket.progress == (1, 4), None,
                        "progress", TIMEOUT)
    # The same key from another replica's session joins the running job.
    joined = second.submit_job("atlas", gate("atlas", value), session_id="bob")
    release(connection, "atlas")
    np.testing.assert_array_equal(ticket.result(TIMEOUT), value)
    np.testing.assert_array_equal(joined.result(TIMEOUT), value)
    assert int(connection.get("test:runs:atlas")) == 1
    assert ticket.status().fraction == 1.0 and ticket.status().state == "done"
    # The health check of a worker's container: a worker named after the host reports in.
    assert worker.is_healthy(connection, "worker") and not worker.is_healthy(connection, "elsewhere")
    # A job's own error reaches its waiter as it was raised.
    with pytest.raises(ValueError, match="no such layer"):
        first.submit_job("bad", RemoteCall("tests.queue_job_functions:fail", ("no such layer",))).result(TIMEOUT)


def test_a_newer_request_cancels_the_sessions_job_unless_another_session_waits(queue, pools):
    _, connection, start_worker = queue
    start_worker()
    pool = pools()
    older = pool.submit_job("older", gate("older"), session_id="alice")
    wait_started(connection, "older")
    pool.submit_job("newer", gate("newer"), session_id="alice")
    with pytest.raises(JobCancelled, match="nobody waits"):
        older.result(TIMEOUT)
    topology.wait_until(lambda: connection.get("test:stopped:older") == b"JobCancelled", None, "stop", TIMEOUT)
    wait_started(connection, "newer")
    # Bob waits for the same job as Alice: her next request leaves it running for him.
    shared = pool.submit_job("newer", gate("newer"), session_id="bob")
    pool.submit_job("third", gate("third"), session_id="alice")
    release(connection, "newer")
    assert shared.result(TIMEOUT) == "newer"
    release(connection, "third")
    # A session that has gone: its job is cancelled (the app's probe says so).
    gone = set()
    probed = pools(session_alive=lambda session: session not in gone)
    abandoned = probed.submit_job("abandoned", gate("abandoned"), session_id="carol")
    wait_started(connection, "abandoned")
    gone.add("carol")
    with pytest.raises(JobCancelled):
        abandoned.result(TIMEOUT)
    topology.wait_until(lambda: connection.get("test:stopped:abandoned") == b"JobCancelled", None, "stop", TIMEOUT)


def test_a_full_queue_says_how_many_are_ahead_and_lets_one_wait_in_line(queue, pools):
    _, connection, start_worker = queue
    start_worker()
    pool = pools(max_queued=1)
    pool.submit_job("blocker", gate("blocker"))
    wait_started(connection, "blocker")
    queued = pool.submit_job("queued", gate("queued"), session_id="bob")
    with pytest.raises(QueueFull, match="2 computations are ahead of the atlas of conv1") as full:
        pools(max_queued=1).submit_job("late", gate("late"), session_id="carol", description="the atlas of conv1")
    assert full.value.jobs_ahead == 2
    waiting = pool.submit_job("late", gate("late"), session_id="carol", wait_in_line=True)
    topology.wait_until(lambda: waiting.status().jobs_ahead == 2, None, "2 ahead", TIMEOUT)
    assert queued.status().jobs_ahead == 1 and queued.status().state == "queued"
    # An urgent job goes ahead of both queued ones.
    urgent = pool.submit_job("urgent", gate("urgent"), priority=Priority.URGENT, session_id="dave")
    for name in ("blocker", "urgent", "queued", "late"):
        release(connection, name)
    assert urgent.result(TIMEOUT) == "urgent" and waiting.result(TIMEOUT) == "late"
    runs = [key.decode() for key in connection.keys("test:runs:*")]
    assert sorted(runs) == sorted(f"test:runs:{name}" for name in ("blocker", "urgent", "queued", "late"))


def test_a_job_past_its_time_limit_is_stopped(queue, pools):
    _, connection, start_worker = queue
    start_worker()
    pool = pools(time_limit=0.5)
    ticket = pool.submit_job("slow", gate("slow"), description="the slow job")
    with pytest.raises(JobTimedOut, match=r"The slow job took longer than this server allows \(0 s\)"):
        ticket.result(TIMEOUT)
    assert isinstance(ticket.future.exception(), InputError)


def test_a_background_job_makes_way_for_urgent_work_and_runs_again(queue, pools):
    _, connection, start_worker = queue
    start_worker()
    pool = pools()
    warm_up = pool.submit_job("warm", gate("warm"), priority=Priority.BACKGROUND)
    wait_started(connection, "warm")
    urgent = pool.submit_job("urgent", gate("urgent"), priority=Priority.URGENT, session_id="alice")
    wait_started(connection, "urgent")
    assert connection.get("test:stopped:warm") == b"_Preempted"
    release(connection, "urgent")
    release(connection, "warm")
    assert urgent.result(TIMEOUT) == "urgent" and warm_up.result(TIMEOUT) == "warm"
    assert int(connection.get("test:runs:warm")) == 2


def test_a_killed_worker_s_job_runs_again_on_another_then_fails_clearly(queue, pools):
    _, connection, start_worker = queue
    workers = {process.name: process for process in start_worker(3)}
    pool = pools()
    start = time.monotonic()
    ticket = pool.submit_job("atlas", gate("atlas"), session_id="alice", description="the atlas of conv1")
    wait_started(connection, "atlas")
    first = job_queue._text(connection.hget(job_queue.job_key(ticket._job.job_id), "worker"))
    workers[first].kill(signal.SIGKILL)
    wait_started(connection, "atlas", runs=2)
    second = job_queue._text(connection.hget(job_queue.job_key(ticket._job.job_id), "worker"))
    assert second != first and not ticket.done()
    # The second worker dies too: the page is told, within seconds, not left waiting.
    workers[second].kill(signal.SIGKILL)
    with pytest.raises(WorkerLost, match="The worker computing the atlas of conv1 stopped under it 2 times"):
        ticket.result(TIMEOUT)
    assert time.monotonic() - start < 3 * job_queue.JOB_HEARTBEAT_TTL + 10
    assert int(connection.get("test:runs:atlas")) == 2


def test_with_no_worker_a_queued_job_fails_instead_of_waiting_forever(queue, pools, monkeypatch):
    monkeypatch.setattr(job_queue, "NO_WORKER_SECONDS", 1)
    ticket = pools().submit_job("lonely", gate("lonely"), session_id="alice")
    with pytest.raises(QueueUnavailable, match="No worker has been running for 1 s to take .*python -m convviz_core.worker"):
        ticket.result(TIMEOUT)


def test_a_redis_restart_fails_queued_work_clearly_and_the_queue_comes_back(queue, pools, redis_url):
    url, connection, start_worker = queue
    _, redis_process, _ = redis_url
    start_worker()
    pool = pools()
    ticket = pool.submit_job("atlas", gate("atlas"), session_id="alice", description="the atlas of conv1")
    wait_started(connection, "atlas")
    redis_process.stop()
    with pytest.raises(QueueUnavailable, match="not reachable, so the atlas of conv1 cannot run now"):
        ticket.result(TIMEOUT)
    with pytest.raises(QueueUnavailable, match="The other pages work as usual"):
        pool.submit_job("other", gate("other"), session_id="alice", description="the atlas of conv1")
    # Work that needs no queue goes on in the replica.
    assert pool.submit_job("local", lambda progress: 7, session_id="alice").result(TIMEOUT) == 7
    redis_process.start()
    topology.wait_until(lambda: connection.ping(), redis_process, "Redis again", 30)
    topology.wait_for_workers(url, 1, timeout=60)
    again = pool.submit_job("again", gate("again"), session_id="alice")
    wait_started(connection, "again")
    release(connection, "again")
    assert again.result(TIMEOUT) == "again"


def test_a_built_in_model_s_atlas_is_computed_by_a_worker_into_the_cache_every_replica_reads(
        queue, pools, tmp_path, monkeypatch):
    from convviz_core import load_model
    from convviz_core.features.atlas_cache import FilterAtlasCache, atlas_request
    from convviz_core.features.patterns import filter_patterns

    _, connection, start_worker = queue
    start_worker()  # Its CONVVIZ_CACHE_DIR is tmp_path / "cache", as the replicas' here.
    monkeypatch.setenv("CONVVIZ_CACHE_DIR", str(tmp_path / "cache"))
    model = load_model("small-convnet")
    request = atlas_request(model, "conv2d_1", [0, 1], size=24, steps=2, precision="float32")
    replica_a, replica_b = FilterAtlasCache(pool=pools()), FilterAtlasCache(pool=pools())
    atlas = replica_a.submit(model, request, session_id="alice").result(60)
    assert atlas.source == "computed" and atlas.request == request
    expected = filter_patterns(model, "conv2d_1", [0, 1], size=24, steps=2, precision="float32")
    np.testing.assert_array_equal(atlas.patterns, expected)
    assert len(connection.keys(job_queue.job_key("*"))) == 1
    # The other replica finds it in the shared cache: no second job.
    ticket = replica_b.submit(model, request, session_id="bob")
    assert ticket.done() and ticket.result().source == "disk"
    np.testing.assert_array_equal(ticket.result().patterns, expected)
    # An uploaded model's atlas stays in the replica that holds the model.
    upload = load_model("small-convnet")
    upload.name = "my-upload.keras"
    own = atlas_request(upload, "conv2d_1", [0], size=24, steps=1, precision="float32")
    assert replica_a.submit(upload, own, session_id="alice").result(60).source == "computed"
    assert len(connection.keys(job_queue.job_key("*"))) == 1

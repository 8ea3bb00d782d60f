"""Tests for `convviz_core.jobs`: the one bounded pool for long computations.

The jobs here are fake: functions that report progress in a loop until the
test releases them, so every test is fast and decides exactly what runs when.
"""

import threading

import pytest

from convviz_core import InputError
from convviz_core.jobs import JobCancelled, JobPool, JobTimedOut, Priority, QueueFull, wait_for

TIMEOUT = 10


class Gate:
    """A fake long job: reports progress until released, remembers that (and how often) it ran."""

    def __init__(self, value=None):
        self.value = value
        self.release = threading.Event()
        self.started = threading.Event()
        self.runs = 0
        self.stopped_by = None

    def __call__(self, progress):
        self.runs += 1
        self.started.set()
        try:
            while not self.release.wait(0.002):
                progress(1, 4)
            progress(4, 4)
        except JobCancelled as error:
            self.stopped_by = error
            raise
        return self.value


@pytest.fixture()
def pool():
    pool = JobPool(workers=1, max_queued=8, idle_seconds=0.5)
    yield pool
    pool.shutdown(wait=True, cancel_futures=True)


def occupy(pool):
    """Fills the pool's one worker with an anonymous job; returns its gate and ticket."""
    gate = Gate("blocker")
    ticket = pool.submit_job("blocker", gate)
    assert gate.started.wait(TIMEOUT)
    return gate, ticket


def test_identical_requests_from_several_sessions_share_one_job(pool):
    gate = Gate(42)
    tickets = [pool.submit_job("atlas", gate, session_id=f"session-{index}") for index in range(3)]
    assert gate.started.wait(TIMEOUT)
    gate.release.set()
    assert [ticket.result(TIMEOUT) for ticket in tickets] == [42, 42, 42]
    assert gate.runs == 1


def test_a_newer_request_replaces_the_sessions_queued_one(pool):
    blocker, _ = occupy(pool)
    first, second = Gate("first"), Gate("second")
    replaced = pool.submit_job("first", first, session_id="alice")
    newer = pool.submit_job("second", second, session_id="alice")
    with pytest.raises(JobCancelled):
        replaced.result(TIMEOUT)
    blocker.release.set()
    second.release.set()
    assert newer.result(TIMEOUT) == "second"
    assert first.runs == 0


def test_a_newer_request_cancels_the_sessions_running_job(pool):
    first, second = Gate("first"), Gate("second")
    running = pool.submit_job("first", first, session_id="alice")
    assert first.started.wait(TIMEOUT)
    newer = pool.submit_job("second", second, session_id="alice")
    with pytest.raises(JobCancelled):
        running.result(TIMEOUT)
    assert isinstance(first.stopped_by, JobCancelled)
    second.release.set()
    assert newer.result(TIMEOUT) == "second"


def test_a_job_another_session_waits_for_is_not_cancelled_by_a_newer_request(pool):
    shared, own = Gate("shared"), Gate("own")
    alice = pool.submit_job("shared", shared, session_id="alice")
    bob = pool.submit_job("shared", shared, session_id="bob")
    assert shared.started.wait(TIMEOUT)
    alice_again = pool.submit_job("own", own, session_id="alice")
    assert alice_again.status().state == "queued" and alice_again.jobs_ahead == 1
    shared.release.set()
    assert bob.result(TIMEOUT) == "shared"
    # Alice's earlier ticket still gets the result: the job was not cancelled.
    assert alice.result(TIMEOUT) == "shared"
    own.release.set()
    assert alice_again.result(TIMEOUT) == "own"
    assert shared.runs == 1 and shared.stopped_by is None


def test_a_session_holds_at_most_one_running_and_one_queued_job(pool):
    blocker, _ = occupy(pool)
    gates = [Gate(index) for index in range(4)]
    tickets = [pool.submit_job(f"job-{index}", gate, session_id="alice") for index, gate in enumerate(gates)]
    # Only the newest is still queued (behind the anonymous blocker).
    assert [status.description for status in pool.jobs()] == ["your computation"] * 2
    for ticket in tickets[:-1]:
        with pytest.raises(JobCancelled):
            ticket.result(TIMEOUT)
    blocker.release.set()
    gates[-1].release.set()
    assert tickets[-1].result(TIMEOUT) == 3
    assert [gate.runs for gate in gates] == [0, 0, 0, 1]


def test_a_job_past_its_time_limit_stops_with_a_message_for_the_user(pool):
    endless = Gate()
    ticket = pool.submit_job("slow", endless, time_limit=0.05, description="the atlas of conv2d_3")
    with pytest.raises(JobTimedOut, match="The atlas of conv2d_3 took longer than this server allows"):
        ticket.result(TIMEOUT)
    assert isinstance(endless.stopped_by, JobTimedOut)
    # A timeout is the user's to act on (ask for less), so pages show it like other input errors.
    assert issubclass(JobTimedOut, InputError)


def test_beyond_the_queue_limit_a_submit_says_how_many_jobs_are_ahead_and_may_wait_anyway():
    pool = JobPool(workers=1, max_queued=2, idle_seconds=0.5)
    try:
        blocker, _ = occupy(pool)
        queued = [pool.submit_job(f"job-{index}", Gate(index), session_id=f"s{index}") for index in range(2)]
        with pytest.raises(QueueFull) as full:
            pool.submit_job("late", Gate("late"), session_id="carol")
        assert full.value.jobs_ahead == 3  # The running blocker and the two queued jobs.
        assert "3 computations are ahead" in str(full.value)
        # Refused: nothing was queued, so the refused session's state is unchanged.
        assert len(pool.jobs()) == 3
        late_gate = Gate("late")
        late = pool.submit_job("late", late_gate, session_id="carol", wait_in_line=True)
        assert late.jobs_ahead == 3
        # Joining a job under way is never refused.
        assert pool.submit_job("job-0", Gate(), session_id="dave").key == "job-0"
        # A more urgent job has nothing queued ahead of it.
        urgent = pool.submit_job("default", Gate("default"), priority=Priority.URGENT, session_id="erin")
        assert urgent.jobs_ahead == 1
        assert queued[0].jobs_ahead == 2
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def test_a_sessions_replaced_job_does_not_count_against_the_queue_limit():
    pool = JobPool(workers=1, max_queued=1, idle_seconds=0.5)
    try:
        blocker, _ = occupy(pool)
        pool.submit_job("first", Gate(), session_id="alice")
        # Alice's newer request replaces her queued one, so it fits.
        ticket = pool.submit_job("second", Gate(), session_id="alice")
        assert ticket.jobs_ahead == 1
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def test_queued_jobs_run_by_priority_then_in_order(pool):
    blocker, _ = occupy(pool)
    ran = []

    def job(name):
        return lambda progress: ran.append(name) or name

    submissions = [
        ("normal-1", Priority.NORMAL),
        ("background", Priority.BACKGROUND),
        ("urgent", Priority.URGENT),
        ("normal-2", Priority.NORMAL),
    ]
    tickets = [pool.submit_job(name, job(name), priority=priority) for name, priority in submissions]
    assert [ticket.jobs_ahead for ticket in tickets] == [2, 4, 1, 3]
    blocker.release.set()
    for ticket in tickets:
        ticket.result(TIMEOUT)
    assert ran == ["urgent", "normal-1", "normal-2", "background"]


def test_a_background_job_yields_to_a_users_request_and_runs_again_afterwards(pool):
    warm_up, request = Gate("warm"), Gate("user")
    background = pool.submit_job("warm-up", warm_up, priority=Priority.BACKGROUND)
    assert warm_up.started.wait(TIMEOUT)
    user = pool.submit_job("user", request, session_id="alice")
    assert request.started.wait(TIMEOUT)  # The worker is free for the user's job.
    assert background.status().state == "queued"
    request.release.set()
    warm_up.release.set()
    assert user.result(TIMEOUT) == "user"
    assert background.result(TIMEOUT) == "warm"
    assert warm_up.runs == 2


def test_a_user_joining_a_background_job_makes_it_a_normal_one(pool):
    warm_up = Gate("warm")
    pool.submit_job("warm-up", warm_up, priority=Priority.BACKGROUND)
    assert warm_up.started.wait(TIMEOUT)
    joined = pool.submit_job("warm-up", warm_up, session_id="alice")
    other = pool.submit_job("other", Gate("other"), session_id="bob")
    # Not preempted: a user waits for it now.
    assert joined.status().state == "running" and other.jobs_ahead == 1
    warm_up.release.set()
    assert joined.result(TIMEOUT) == "warm" and warm_up.runs == 1


def test_an_error_reaches_every_waiter_and_the_pool_goes_on(pool):
    def broken(progress):
        raise InputError("Layer 'x' has 4 filters.")

    tickets = [pool.submit_job("broken", broken, session_id=name) for name in ("alice", "bob")]
    for ticket in tickets:
        with pytest.raises(InputError, match="has 4 filters"):
            ticket.result(TIMEOUT)
    assert pool.submit_job("fine", lambda progress: "ok").result(TIMEOUT) == "ok"


def test_a_job_is_cancelled_when_its_only_waiter_withdraws(pool):
    gate = Gate()
    ticket = pool.submit_job("alone", gate, session_id="alice")
    assert gate.started.wait(TIMEOUT)
    ticket.cancel()
    with pytest.raises(JobCancelled):
        ticket.result(TIMEOUT)
    assert pool.jobs() == []


def test_forgetting_a_session_cancels_the_jobs_only_it_waits_for(pool):
    own, shared = Gate("own"), Gate("shared")
    running = pool.submit_job("own", own, session_id="alice")
    assert own.started.wait(TIMEOUT)
    bob = pool.submit_job("shared", shared, session_id="bob")
    pool.submit_job("shared", shared, session_id="carol")
    pool.forget_session("alice")
    pool.forget_session("carol")
    with pytest.raises(JobCancelled):
        running.result(TIMEOUT)
    shared.release.set()
    assert bob.result(TIMEOUT) == "shared"


def test_jobs_of_sessions_that_have_gone_are_cancelled_through_the_probe(monkeypatch):
    from convviz_core import jobs

    monkeypatch.setattr(jobs, "SESSION_CHECK_SECONDS", 0.0)
    alive = {"alice": True, "bob": True}
    pool = JobPool(workers=1, session_alive=lambda session: alive[session], idle_seconds=0.5)
    try:
        gate, queued_gate = Gate(), Gate()
        running = pool.submit_job("alice's", gate, session_id="alice")
        assert gate.started.wait(TIMEOUT)
        queued = pool.submit_job("bob's", queued_gate, session_id="bob")
        alive["bob"] = False
        alive["alice"] = False
        with pytest.raises(JobCancelled, match="sessions have gone"):
            running.result(TIMEOUT)
        with pytest.raises(JobCancelled, match="sessions have gone"):
            queued.result(TIMEOUT)
        assert queued_gate.runs == 0
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def test_progress_elapsed_and_waiting_are_reported(pool):
    gate = Gate("done")
    ticket = pool.submit_job("job", gate)
    assert gate.started.wait(TIMEOUT)
    seen = []

    def report(status):
        seen.append(status)
        if len(seen) == 3:
            gate.release.set()

    assert wait_for(ticket, report, poll_seconds=0.001) == "done"
    assert len(seen) >= 3 and {status.state for status in seen} == {"running"}
    assert seen[-1].done == 1 and seen[-1].total == 4 and seen[-1].fraction == 0.25
    final = ticket.status()
    assert final.state == "done" and final.fraction == 1.0 and final.elapsed > 0
    assert ticket.progress == (4, 4)


def test_the_pool_is_a_concurrent_futures_executor_and_shuts_down_cleanly():
    with JobPool(idle_seconds=0.5) as pool:
        assert pool.submit(pow, 2, 5).result(TIMEOUT) == 32
        assert list(pool.map(abs, [-1, -2])) == [1, 2]
    with pytest.raises(RuntimeError, match="shut down"):
        pool.submit(pow, 2, 5)


def test_shutting_down_cancels_running_and_queued_jobs_and_threads_are_daemons():
    pool = JobPool(workers=1, idle_seconds=0.5)
    gate, queued_gate = Gate(), Gate()
    running = pool.submit_job("running", gate)
    assert gate.started.wait(TIMEOUT)
    assert all(thread.daemon for thread in threading.enumerate() if thread.name == "convviz-job")
    queued = pool.submit_job("queued", queued_gate)
    pool.shutdown(wait=True, cancel_futures=True)
    for ticket in (running, queued):
        with pytest.raises(JobCancelled, match="server is stopping"):
            ticket.result(TIMEOUT)
    assert queued_gate.runs == 0


def test_idle_workers_end(monkeypatch):
    pool = JobPool(workers=1, idle_seconds=0.01)
    assert pool.submit_job("quick", lambda progress: 1).result(TIMEOUT) == 1
    for _ in range(500):
        if pool._threads == 0:
            break
        threading.Event().wait(0.01)
    assert pool._threads == 0
    # A new job starts a new worker.
    assert pool.submit_job("again", lambda progress: 2).result(TIMEOUT) == 2


# --- The Filters page over a full pool ------------------------------------------------------


def test_the_filters_page_says_how_many_jobs_are_ahead_and_offers_to_wait_in_line(tmp_path, monkeypatch):
    from pathlib import Path

    from streamlit.testing.v1 import AppTest

    from convviz_app import cached

    monkeypatch.setenv("CONVVIZ_CACHE_DIR", str(tmp_path))
    # A pool that refuses every job that would have to queue.
    monkeypatch.setattr(cached, "MAX_QUEUED_JOBS", 0)
    cached.job_pool.clear()
    cached.atlas_store.clear()
    pool = cached.job_pool()
    blocker = Gate("blocker")
    try:
        pool.submit_job("someone else's atlas", blocker)
        assert blocker.started.wait(TIMEOUT)
        at = AppTest.from_file(str(Path(__file__).resolve().parent.parent / "app.py"), default_timeout=240)
        at.session_state["model_choice"] = "small-convnet"
        at.session_state["filters_params:builtin:small-convnet"] = {
            "layer": "conv2d_1", "first": 0, "count": 8, "size": 64, "steps": 2,
        }
        at.run()
        at.switch_page("pages/filter-patterns.py").run()
        assert not at.exception
        assert at.main.warning[0].value.startswith("This server is busy: 1 computation is ahead of the 8 patterns of conv2d_1.")
        assert not at.main.image
        # The user chooses to wait: the page queues the atlas and shows it once the other job is done.
        threading.Timer(0.5, blocker.release.set).start()
        next(button for button in at.main.button if button.label == "Wait in line").click().run()
        assert not at.exception and not at.main.warning
        assert at.main.image[0].captions[0].startswith("Filters 0 to 7 of conv2d_1")
    finally:
        blocker.release.set()
        pool.shutdown(wait=True, cancel_futures=True)
        cached.job_pool.clear()
        cached.atlas_store.clear()


def test_a_job_that_would_not_wait_is_never_refused():
    pool = JobPool(workers=1, max_queued=0, idle_seconds=0.5)
    try:
        assert pool.submit_job("first", lambda progress: 1).result(TIMEOUT) == 1
    finally:
        pool.shutdown()

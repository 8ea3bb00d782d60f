"""One bounded pool for every long computation of a server (atlases, Score-CAM, sanity checks).

A teacher's server has a few cores and thirty students. Interactive views
(activations, Grad-CAM) answer in a fraction of a second and never go through
this pool; everything that takes seconds to minutes does, so that it is
bounded in every way a shared server needs:

- **Few workers.** One by default: on a 2-core machine a second long job
  would only halve the speed of the first and take the core the interactive
  views need.
- **Priorities.** `Priority.URGENT` (the built-in models' default atlases,
  which every student asks for) runs before `Priority.NORMAL` (a user's own
  request), which runs before `Priority.BACKGROUND` (a warm-up nobody waits
  for). A background job yields: when a more urgent job arrives and every
  worker is busy, the running background job stops at its next progress
  report and goes back to the queue, to be started again later.
- **One running and one queued job per session.** A session's newer request
  replaces its queued one and cancels its running one, unless another
  session waits on that job too. Identical requests (the same key) from
  several sessions share one job.
- **A time limit per job, a queue limit for the server.** Beyond the queue
  limit `submit_job` raises `QueueFull`, which says how many jobs are ahead;
  the caller may then submit again with `wait_in_line=True`.
- **Nobody waits, nothing runs.** A job whose every waiter has withdrawn, or
  whose sessions have all gone (`forget_session`, or the `session_alive`
  probe the app gives), is cancelled.

Cancellation is cooperative, as it must be for Python threads: a job function
receives a `JobProgress` and calls it with (done, total) between chunks of
work (`filter_patterns` does so every few compiled steps); the call raises
`JobCancelled` (or `JobTimedOut`) once the job is cancelled or over its time.
A job function that never reports progress cannot be stopped early.

Results are `concurrent.futures.Future`s, and `JobPool` is a
`concurrent.futures.Executor`, so `pool.submit(fn, *args)` works too (a
normal-priority, anonymous job that always waits in line). Its worker
threads are daemon threads started on demand and ended when idle, so an
unused pool holds no thread and a stopping server never waits for a job.

Several replicas of the app behind a load balancer share RQ workers instead:
`make_job_pool` gives a `convviz_core.job_queue.QueuePool`, with this API,
when `CONVVIZ_QUEUE_URL` is set.

This module is UI-free and imports neither Streamlit nor TensorFlow: session
ids are opaque strings given by the app.
"""

import atexit
import concurrent.futures
import dataclasses
import enum
import importlib
import itertools
import os
import pickle
import threading
import time
import weakref

from convviz_core.errors import InputError

# How many worker threads run long jobs at the same time, by default.
DEFAULT_WORKERS = 1
# How many queued jobs may be ahead of a new one before `submit_job` refuses
# it with `QueueFull` (unless the caller chooses to wait in line).
DEFAULT_MAX_QUEUED = 8
# Seconds a worker thread waits for work before it ends (a new one starts
# when work comes).
IDLE_SECONDS = 30.0
# How often, at most, a running job asks the app whether its sessions are
# still there (on a progress report).
SESSION_CHECK_SECONDS = 1.0


class Priority(enum.IntEnum):
    """The order in which queued jobs run: lower values first."""

    URGENT = 0
    NORMAL = 1
    BACKGROUND = 2


class JobCancelled(Exception):
    """The job was cancelled: nobody waits for it any more, or the server stops."""


class JobTimedOut(JobCancelled, InputError):
    """The job ran longer than its time limit and was stopped."""


class QueueFull(InputError):
    """Too many jobs are queued ahead of a new one; it was not queued.

    Attributes:
        jobs_ahead: How many jobs (running and queued) would run before it.
    """

    def __init__(self, jobs_ahead, description="your computation"):
        self.jobs_ahead = int(jobs_ahead)
        ahead = "1 computation is" if self.jobs_ahead == 1 else f"{self.jobs_ahead} computations are"
        super().__init__(
            f"This server is busy: {ahead} ahead of {description}. "
            "Wait in line, or try again in a while."
        )


class _Preempted(JobCancelled):
    """Raised in a background job to make way for a more urgent one; the job is queued again."""


@dataclasses.dataclass(frozen=True)
class JobStatus:
    """A snapshot of one job, as a waiter sees it.

    Attributes:
        state: "queued", "running" or "done" (finished, failed or cancelled).
        jobs_ahead: Jobs that run before this one (running ones included);
            0 once it runs.
        done, total: Units of work reported so far (0, 1 until the first
            report).
        elapsed: Seconds of running (the whole run once done; 0 while queued).
        waited: Seconds spent in the queue so far (the whole wait once it ran).
        description: What the job computes, for messages.
    """

    state: str
    jobs_ahead: int
    done: int
    total: int
    elapsed: float
    waited: float
    description: str

    @property
    def fraction(self):
        """`done / total`, in [0, 1]."""
        return min(1.0, max(0.0, self.done / max(1, self.total)))


class _Job:
    """One computation and everyone who waits for it (guarded by the pool's lock)."""

    def __init__(self, key, function, priority, time_limit, description, sequence):
        self.key = key
        self.function = function
        self.time_limit = time_limit
        self.description = description
        self.sequence = sequence
        self.future = concurrent.futures.Future()
        self.future_started = False
        # token -> (session id or None, priority).
        self.waiters = {}
        self.base_priority = Priority(priority)
        self.state = "queued"
        self.cancel_reason = None
        self.done_units, self.total_units = 0, 1
        self.queued_at = time.monotonic()
        self.started_at = None
        self.finished_at = None
        self.last_session_check = 0.0

    @property
    def priority(self):
        """The most urgent priority among the job's waiters (its own when nobody waits)."""
        return min([priority for _, priority in self.waiters.values()], default=self.base_priority)

    def order(self):
        return (self.priority, self.sequence)

    def sessions(self):
        return {session for session, _ in self.waiters.values()}


class JobProgress:
    """What a job function gets: call it with (done, total) between chunks of work.

    Each call records the progress that waiters see, then raises
    `JobCancelled` if the job was cancelled, or `JobTimedOut` if it has run
    past its time limit. `check()` does the same without recording progress.
    """

    def __init__(self, pool, job):
        self._pool = pool
        self._job = job

    def __call__(self, done, total):
        self._pool._report(self._job, done, total)

    def check(self):
        """Raises `JobCancelled` or `JobTimedOut` if the job should stop now."""
        self._pool._check(self._job)

    @property
    def cancelled(self):
        """Whether the job has been asked to stop (for jobs that prefer to poll)."""
        return self._job.cancel_reason is not None


class JobTicket:
    """One waiter's view of a job: its result, its progress, its place in the queue.

    Several tickets (several sessions, several reruns) can share one job.
    `cancel()` withdraws this waiter; the job itself is cancelled only when
    nobody else waits for it.
    """

    def __init__(self, pool, job, token):
        self._pool = pool
        self._job = job
        self._token = token

    @classmethod
    def completed(cls, key, value, description=""):
        """A ticket that is done already, with `value` (for answers found in a cache)."""
        job = _Job(key, None, Priority.NORMAL, None, description, -1)
        job.state = "done"
        job.started_at = job.finished_at = job.queued_at
        job.done_units = job.total_units = 1
        job.future.set_result(value)
        return cls(None, job, None)

    @property
    def key(self):
        """The job's key: equal keys share one job."""
        return self._job.key

    @property
    def future(self):
        """The job's `concurrent.futures.Future` (shared by all its waiters)."""
        return self._job.future

    def done(self):
        """Whether the job has finished, with a result, an error or cancelled."""
        return self._job.future.done()

    def wait(self, timeout=None):
        """Waits until the job is done; returns whether it is."""
        done, _ = concurrent.futures.wait([self._job.future], timeout=timeout)
        return bool(done)

    def result(self, timeout=None):
        """Returns the job's result, waiting for it if needed.

        Raises:
            JobCancelled: If the job was cancelled (`JobTimedOut` if it ran
                past its time limit).
            TimeoutError: If `timeout` seconds pass first.
            Exception: Whatever the job function raised, to every waiter.
        """
        return self._job.future.result(timeout)

    def status(self):
        """A `JobStatus` snapshot."""
        if self._pool is None:
            return self._pool_free_status()
        return self._pool._status(self._job)

    @property
    def progress(self):
        """(done, total) units of work so far."""
        return self._job.done_units, self._job.total_units

    @property
    def started(self):
        """Whether the job has started running (it may have been queued first)."""
        return self._job.started_at is not None

    @property
    def elapsed(self):
        """Seconds the job has run (its whole run once done)."""
        return self.status().elapsed

    @property
    def jobs_ahead(self):
        """How many jobs run before this one; 0 once it runs."""
        return self.status().jobs_ahead

    def cancel(self):
        """Withdraws this waiter; cancels the job if nobody else waits for it."""
        if self._pool is not None and self._token is not None:
            self._pool._withdraw_tokens(self._job, [self._token])

    def _pool_free_status(self):
        job = self._job
        return JobStatus("done", 0, job.done_units, job.total_units, 0.0, 0.0, job.description)

    def __repr__(self):
        return f"JobTicket(key={self._job.key!r}, state={self._job.state!r})"


_POOLS = weakref.WeakSet()


# How long the interpreter's exit waits for cancelled jobs to reach their next progress report.
EXIT_WAIT_SECONDS = 10


@atexit.register
def _stop_every_pool():
    # Running jobs stop at their next progress report instead of computing
    # while the interpreter shuts down around them: TensorFlow aborts the
    # process ("terminate called after throwing an instance of ''") when a
    # worker is still inside a compiled call then.
    running = []
    for pool in list(_POOLS):
        pool.shutdown(wait=False, cancel_futures=True)
        running.extend(pool.running_futures())
    concurrent.futures.wait(running, timeout=EXIT_WAIT_SECONDS)


class JobPool(concurrent.futures.Executor):
    """A bounded, prioritised pool of worker threads for long computations.

    Safe to use from many threads (one per session in a Streamlit server).

    Args:
        workers: How many jobs run at the same time.
        max_queued: How many queued jobs may be ahead of a new one; beyond
            that `submit_job` raises `QueueFull` unless `wait_in_line=True`.
        time_limit: Default seconds a job may run (None: no limit). Checked
            at each progress report.
        session_alive: Optional function of a session id that returns False
            once that session has gone (the app asks its server); jobs only
            gone sessions wait for are cancelled.
        idle_seconds: How long an idle worker thread lives.

    Example:

    ```python
    pool = JobPool()
    ticket = pool.submit_job(("atlas", key), lambda progress: compute(progress=progress),
                             session_id=session)
    result = ticket.result()
    ```
    """

    def __init__(
        self,
        workers=DEFAULT_WORKERS,
        max_queued=DEFAULT_MAX_QUEUED,
        time_limit=None,
        session_alive=None,
        idle_seconds=IDLE_SECONDS,
    ):
        if int(workers) < 1 or int(max_queued) < 0:
            raise ValueError(
                f"workers must be >= 1 and max_queued >= 0. Received: workers={workers}, "
                f"max_queued={max_queued}"
            )
        self.workers = int(workers)
        self.max_queued = int(max_queued)
        self.time_limit = time_limit
        self.session_alive = session_alive
        self.idle_seconds = float(idle_seconds)
        self._lock = threading.Condition(threading.RLock())
        self._jobs = {}  # key -> unfinished job that new waiters may join
        self._queue = []  # queued jobs
        self._running = []  # running jobs (cancelled ones too, until they stop)
        self._sessions = {}  # session id -> the job it last asked for
        self._threads = 0
        self._idle = 0
        self._sequence = itertools.count()
        self._tokens = itertools.count()
        self._shut_down = False
        _POOLS.add(self)

    # --- Submitting -----------------------------------------------------------------

    def submit_job(
        self,
        key,
        function,
        *,
        session_id=None,
        priority=Priority.NORMAL,
        time_limit=None,
        wait_in_line=False,
        description="your computation",
    ):
        """Queues `function(progress)` unless a job of the same key is under way; then joins it.

        Args:
            key: A hashable naming the result; equal keys share one job.
            function: Called in a worker thread with a `JobProgress`; its
                return value is the job's result.
            session_id: The asking session (an opaque string), or None for a
                caller outside any session (tools, tests, a warm-up), which
                the per-session rules do not touch.
            priority: A `Priority`.
            time_limit: Seconds the job may run; default: the pool's. A job
                joined by several waiters keeps the first one's limit.
            wait_in_line: Queue the job even when `max_queued` jobs are
                ahead of it.
            description: What the job computes, for messages ("the atlas of
                conv2d_3").

        Returns:
            A `JobTicket`.

        Raises:
            QueueFull: If `max_queued` queued jobs are ahead of a new job and
                `wait_in_line` is False. Nothing changes then: the session's
                earlier job goes on.
            RuntimeError: After `shutdown`.
        """
        priority = Priority(priority)
        with self._lock:
            if self._shut_down:
                raise RuntimeError("The job pool has been shut down.")
            token = next(self._tokens)
            previous = self._sessions.get(session_id) if session_id is not None else None
            job = self._jobs.get(key)
            if job is None:
                # The session's earlier job is cancelled by this request unless
                # someone else waits for it; it is not counted as ahead then.
                replaced = None
                if previous is not None and previous.sessions() <= {session_id}:
                    replaced = previous
                queued_ahead = [
                    other for other in self._queue if other is not replaced and other.priority <= priority
                ]
                running = [
                    other for other in self._running if other.cancel_reason is None and other is not replaced
                ]
                ahead = len(queued_ahead) + len(running)
                # Refused only when it would have to wait: no worker is free.
                if len(queued_ahead) >= self.max_queued and ahead >= self.workers and not wait_in_line:
                    raise QueueFull(ahead, description)
                job = _Job(
                    key,
                    function,
                    priority,
                    self.time_limit if time_limit is None else time_limit,
                    description,
                    next(self._sequence),
                )
                self._jobs[key] = job
                self._queue.append(job)
            job.waiters[token] = (session_id, priority)
            if session_id is not None:
                if previous is not None and previous is not job:
                    self._withdraw_session_locked(previous, session_id)
                self._sessions[session_id] = job
            self._make_way_locked()
            self._start_workers_locked()
            self._lock.notify_all()
            return JobTicket(self, job, token)

    def submit(self, fn, /, *args, **kwargs):
        """`concurrent.futures.Executor.submit`: runs `fn(*args, **kwargs)` as an anonymous job.

        Returns:
            A `concurrent.futures.Future`.
        """
        ticket = self.submit_job(
            ("call", object()),
            lambda progress: fn(*args, **kwargs),
            wait_in_line=True,
            description=getattr(fn, "__name__", "a computation"),
        )
        return ticket.future

    # --- Sessions --------------------------------------------------------------------

    def forget_session(self, session_id):
        """Withdraws a session that has gone from every job; cancels jobs nobody else waits for."""
        with self._lock:
            job = self._sessions.pop(session_id, None)
            for other in list(self._queue) + list(self._running):
                self._withdraw_session_locked(other, session_id)
            if job is not None:
                self._withdraw_session_locked(job, session_id)

    def jobs(self):
        """`JobStatus` of every queued and running job, in the order they run."""
        with self._lock:
            return [self._status(job) for job in self._running + sorted(self._queue, key=_Job.order)]

    def unfinished_tickets(self, key_filter=None):
        """Tickets that watch (without waiting for) every unfinished job.

        Args:
            key_filter: Optional function of a key; only jobs it accepts.

        Returns:
            A list of `JobTicket`s; cancelling them does nothing.
        """
        with self._lock:
            return [
                JobTicket(self, job, None)
                for job in self._running + self._queue
                if key_filter is None or key_filter(job.key)
            ]

    # --- Shutting down ---------------------------------------------------------------

    def shutdown(self, wait=True, *, cancel_futures=False):
        """Stops taking jobs; optionally cancels the queued and running ones.

        Args:
            wait: Wait for the running jobs to end (they end at their next
                progress report when cancelled).
            cancel_futures: Cancel every queued and running job.
        """
        with self._lock:
            self._shut_down = True
            if cancel_futures:
                for job in list(self._queue):
                    self._cancel_locked(job, "the server is stopping")
                for job in list(self._running):
                    self._cancel_locked(job, "the server is stopping")
            running = [job.future for job in self._running]
            self._lock.notify_all()
        if wait:
            concurrent.futures.wait(running)

    def running_futures(self):
        """The futures of the jobs running now."""
        with self._lock:
            return [job.future for job in self._running]

    # --- Inside the pool -------------------------------------------------------------

    def _status(self, job):
        with self._lock:
            now = time.monotonic()
            if job.state == "queued":
                running = sum(1 for other in self._running if other.cancel_reason is None)
                ahead = running + sum(1 for other in self._queue if other.order() < job.order())
                return JobStatus(
                    "queued", ahead, job.done_units, job.total_units, 0.0, now - job.queued_at, job.description
                )
            end = job.finished_at if job.finished_at is not None else now
            return JobStatus(
                job.state,
                0,
                job.done_units,
                job.total_units,
                end - job.started_at if job.started_at is not None else 0.0,
                (job.started_at or end) - job.queued_at,
                job.description,
            )

    def _withdraw_tokens(self, job, tokens):
        with self._lock:
            for token in tokens:
                job.waiters.pop(token, None)
            if not job.waiters:
                self._cancel_locked(job, "nobody waits for it any more")

    def _withdraw_session_locked(self, job, session_id):
        tokens = [token for token, (session, _) in job.waiters.items() if session == session_id]
        if tokens:
            self._withdraw_tokens(job, tokens)

    def _cancel_locked(self, job, reason, error_type=JobCancelled):
        if job.state == "done" or job.cancel_reason is not None:
            return
        job.cancel_reason = reason
        if self._jobs.get(job.key) is job:
            del self._jobs[job.key]
        if job.state == "queued":
            self._queue.remove(job)
            self._finish_locked(job, error=error_type(f"{_capitalised(job.description)} was cancelled: {reason}."))
        # A running job stops at its next progress report (`_check`).

    def _make_way_locked(self):
        """Asks one running background job to step aside when more urgent work waits."""
        if len(self._running) < self.workers or not self._queue:
            return
        most_urgent = min(job.priority for job in self._queue)
        if most_urgent >= Priority.BACKGROUND:
            return
        for job in self._running:
            if job.priority == Priority.BACKGROUND and job.cancel_reason is None:
                job.cancel_reason = "preempted"
                return

    def _start_workers_locked(self):
        waiting = len(self._queue)
        while self._threads < self.workers and waiting > self._idle:
            self._threads += 1
            self._idle += 1  # Counted idle until it takes a job.
            threading.Thread(target=self._work, name="convviz-job", daemon=True).start()

    def _next_job_locked(self):
        while self._queue:
            job = min(self._queue, key=_Job.order)
            self._queue.remove(job)
            if not job.future_started:
                job.future_started = True
                if not job.future.set_running_or_notify_cancel():
                    # Cancelled through its Future (`future.cancel()`).
                    job.state = "done"
                    if self._jobs.get(job.key) is job:
                        del self._jobs[job.key]
                    continue
            if not self._someone_is_there(job):
                job.cancel_reason = "its sessions have gone"
                if self._jobs.get(job.key) is job:
                    del self._jobs[job.key]
                self._finish_locked(job, error=JobCancelled(f"{_capitalised(job.description)} was cancelled: its sessions have gone."))
                continue
            job.state = "running"
            job.started_at = time.monotonic()
            job.done_units, job.total_units = 0, 1
            self._running.append(job)
            return job
        return None

    def _work(self):
        while True:
            with self._lock:
                job = None
                while True:
                    if not self._shut_down:
                        job = self._next_job_locked()
                    if job is not None or self._shut_down:
                        break
                    if not self._lock.wait(self.idle_seconds) and not self._queue:
                        break
                self._idle -= 1
                if job is None:
                    self._threads -= 1
                    return
            try:
                self._run(job)
            finally:
                with self._lock:
                    self._idle += 1

    def _run(self, job):
        progress = JobProgress(self, job)
        try:
            value = job.function(progress)
        except _Preempted:
            with self._lock:
                self._running.remove(job)
                if job.waiters and not self._shut_down:
                    # Back to the queue, to start again from the beginning.
                    job.cancel_reason = None
                    job.state = "queued"
                    job.started_at = None
                    job.done_units, job.total_units = 0, 1
                    self._queue.append(job)
                    self._lock.notify_all()
                else:
                    if self._jobs.get(job.key) is job:
                        del self._jobs[job.key]
                    self._finish_locked(job, error=JobCancelled(f"{_capitalised(job.description)} was cancelled."))
            return
        except BaseException as error:  # noqa: BLE001 - handed to every waiter.
            with self._lock:
                self._end_locked(job)
                self._finish_locked(job, error=error)
            if isinstance(error, (KeyboardInterrupt, SystemExit)):
                raise
            return
        with self._lock:
            self._end_locked(job)
            self._finish_locked(job, value=value)

    def _end_locked(self, job):
        self._running.remove(job)
        if self._jobs.get(job.key) is job:
            del self._jobs[job.key]

    def _finish_locked(self, job, value=None, error=None):
        job.state = "done"
        job.finished_at = time.monotonic()
        job.function = None  # Let go of what the job holds (a model, an image).
        for session, owned in list(self._sessions.items()):
            if owned is job:
                del self._sessions[session]
        if not job.future_started:
            job.future_started = True
            if not job.future.set_running_or_notify_cancel():
                self._lock.notify_all()
                return  # Cancelled through its Future already.
        if error is not None:
            job.future.set_exception(error)
        else:
            if job.done_units < job.total_units:
                job.done_units = job.total_units
            job.future.set_result(value)
        self._lock.notify_all()

    def _report(self, job, done, total):
        with self._lock:
            job.done_units, job.total_units = int(done), max(1, int(total))
        self._check(job)

    def _check(self, job):
        with self._lock:
            if job.cancel_reason is None:
                now = time.monotonic()
                if job.time_limit is not None and now - job.started_at > job.time_limit:
                    job.cancel_reason = "timed out"
                    if self._jobs.get(job.key) is job:
                        del self._jobs[job.key]
                elif now - job.last_session_check >= SESSION_CHECK_SECONDS:
                    job.last_session_check = now
                    if not self._someone_is_there(job):
                        self._cancel_locked(job, "its sessions have gone")
            reason = job.cancel_reason
        if reason is None:
            return
        if reason == "preempted":
            raise _Preempted(f"{_capitalised(job.description)} makes way for a more urgent job.")
        if reason == "timed out":
            raise JobTimedOut(
                f"{_capitalised(job.description)} took longer than this server allows "
                f"({job.time_limit:.0f} s) and was stopped. Ask for less work and try again."
            )
        raise JobCancelled(f"{_capitalised(job.description)} was cancelled: {reason}.")

    def _someone_is_there(self, job):
        """Whether any waiter is anonymous or a session the app still knows."""
        if not job.waiters:
            return False
        sessions = job.sessions()
        if None in sessions or self.session_alive is None:
            return True
        for session in sessions:
            try:
                if self.session_alive(session) is not False:
                    return True
            except Exception:  # noqa: BLE001 - a failing probe must not cancel work.
                return True
        return False


def _capitalised(text):
    return text[:1].upper() + text[1:]


class RemoteCall:
    """A job that a worker on another machine can run: an importable function and picklable arguments.

    Calling it runs it here (that is what `jobs.JobPool` does with it when no
    queue is configured): `finish(function(*args, progress=progress,
    **kwargs))`. A `job_queue.QueuePool` sends `target`, `args` and `kwargs` to a
    worker instead, and runs `finish` on the result in the replica, where
    `finish` may read what the worker stored in the shared cache. `finish`
    is never sent anywhere.

    Args:
        target: "package.module:function". The function takes the arguments
            and a `progress` keyword argument (a `jobs.JobProgress`, or the
            worker's equivalent).
        args: Picklable positional arguments (names and requests, never a
            model or a large array).
        kwargs: Picklable keyword arguments.
        finish: Optional function of the result, run by the caller.
    """

    def __init__(self, target, args=(), kwargs=None, finish=None):
        module, _, name = str(target).partition(":")
        if not module or not name:
            raise ValueError(f"A RemoteCall's target is 'package.module:function'. Received: target={target!r}")
        self.target = str(target)
        self.args = tuple(args)
        self.kwargs = dict(kwargs or {})
        self.finish = finish

    def __call__(self, progress):
        value = resolve_target(self.target)(*self.args, progress=progress, **self.kwargs)
        return self.finish(value) if self.finish is not None else value

    def payload(self):
        """What a worker gets: (target, args, kwargs), pickled."""
        return pickle.dumps((self.target, self.args, self.kwargs), protocol=pickle.HIGHEST_PROTOCOL)

    def __repr__(self):
        return f"RemoteCall({self.target!r}, args={self.args!r})"


def resolve_target(target):
    """The function a `RemoteCall` target names ("package.module:function")."""
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def make_job_pool(workers=DEFAULT_WORKERS, max_queued=DEFAULT_MAX_QUEUED, time_limit=None, session_alive=None):
    """The server's pool for long work: in this process, or on RQ workers when `CONVVIZ_QUEUE_URL` is set.

    Without the variable (`streamlit run app.py` alone) this is a `JobPool`,
    as it always was. With `CONVVIZ_QUEUE_URL=redis://host:6379/0` it is a
    `convviz_core.job_queue.QueuePool`: the same API, with the jobs that can
    travel (`job_queue.RemoteCall`) run by `python -m convviz_core.worker`
    processes and the others in a `JobPool` of `workers` threads here.

    Args:
        workers, max_queued, time_limit, session_alive: As for `JobPool`.

    Returns:
        A `JobPool` or a `QueuePool`.
    """
    url = os.environ.get("CONVVIZ_QUEUE_URL", "").strip()
    if not url:
        return JobPool(workers=workers, max_queued=max_queued, time_limit=time_limit, session_alive=session_alive)
    from convviz_core.job_queue import QueuePool

    return QueuePool(url, max_queued=max_queued, time_limit=time_limit, session_alive=session_alive, workers=workers)


def wait_for(ticket, report=None, poll_seconds=0.25):
    """Waits for a ticket's result, calling `report(status)` while it is not ready.

    This is the loop a page runs to draw a progress bar: `report` gets a
    `JobStatus` every `poll_seconds` (queued: `jobs_ahead`; running:
    `fraction` and `elapsed`), and never after the job is done.

    Args:
        ticket: A `JobTicket`.
        report: Optional function of a `JobStatus`.
        poll_seconds: How often `report` is called.

    Returns:
        The job's result.

    Raises:
        Whatever `ticket.result()` raises.
    """
    while not ticket.wait(poll_seconds):
        if report is not None:
            report(ticket.status())
    return ticket.result()

"""The second backend of `convviz_core.jobs`: long jobs on RQ workers over Redis, shared by app replicas.

`streamlit run app.py` alone keeps every long job in its own process
(`jobs.JobPool`). A course outgrows one process: with `CONVVIZ_QUEUE_URL`
(`redis://host:6379/0`) set, `jobs.make_job_pool` gives the app a
`QueuePool` instead, with the same public API (`submit_job`, tickets,
`wait_for`, `forget_session`, ...), so the pages do not change. Long jobs
then run in `python -m convviz_core.worker` processes (python-rq
`SimpleWorker`s, on any number of machines), and the rules of `jobs` hold
across every replica and worker:

- **Which jobs go to the workers.** Only a `RemoteCall`: a job named by an
  importable function and picklable arguments (an atlas of a built-in model
  is `RemoteCall("convviz_core.features.shared_atlas:compute_shared_atlas",
  (request,))`, an uploaded model's is `compute_atlas_of_source`; Score-CAM,
  faithfulness scores, the sanity check and a dataset's report are
  `convviz_core.remote_jobs` functions of a `models.sources.ModelSource`:
  the worker loads a built-in model by name, or an uploaded file from the
  shared cache through the upload's safety check, never a model from a
  pickle). Any other job function (a closure over what this replica holds
  in memory: a dataset read from a local folder, a unit's patches over a
  session's set) runs in this replica's own `JobPool`, as without a queue.
- **Identical requests share one job**, from any session of any replica:
  Redis maps a digest of the job's key to the job while it is unfinished.
- **Priorities** are three RQ queues that every worker empties most urgent
  first. A running background job (a warm-up) yields to queued urgent or
  normal work when every worker is busy: it stops at its next progress
  report and is queued again.
- **One running and one queued job per session; a newer request cancels the
  older** one unless another waiter (any session, any replica) waits too.
  A session lives on one replica (sticky sessions), so that replica keeps
  its sessions' bookkeeping; the waiters of each job are a Redis set.
- **Nobody waits, nothing runs.** A job whose last waiter withdraws is
  cancelled. Each replica withdraws its sessions that have gone (the app's
  `session_alive` probe), and refreshes a heartbeat key: the worker cancels
  a job whose waiters' replicas have all stopped.
- **A time limit** is checked by the worker at each progress report
  (`JobTimedOut`, as in `jobs`), and RQ's own job timeout stops a job that
  reports nothing for longer than the limit plus `HARD_LIMIT_GRACE_SECONDS`.
- **Queue limits with "N ahead"** count every replica's queued jobs and the
  running ones, against the workers alive (`QueueFull`).
- **Progress** is written by the worker to the job's Redis hash; each
  replica's watcher thread polls its jobs and resolves their futures.
- **A worker that dies mid-job** (killed, out of memory, its machine gone)
  stops refreshing the job's heartbeat key; a replica that waits for the job
  notices within `JOB_HEARTBEAT_TTL` seconds and queues it again at the
  front, once (`MAX_ATTEMPTS`); after that the waiters get `WorkerLost`
  (a `JobCancelled`, which every page shows). No job waits forever: queued
  jobs fail with `QueueUnavailable` once no worker has been alive for
  `NO_WORKER_SECONDS`, and so does every job when Redis cannot be reached.
  Pages that need no queue (activations, Grad-CAM) never touch Redis.

This module imports neither Streamlit nor TensorFlow.
"""

import concurrent.futures
import hashlib
import itertools
import os
import pickle
import threading
import time
import uuid
import weakref

import redis
import rq

from convviz_core.errors import InputError
from convviz_core.jobs import (
    DEFAULT_MAX_QUEUED,
    SESSION_CHECK_SECONDS,
    JobCancelled,
    JobPool,
    JobStatus,
    JobTicket,
    Priority,
    QueueFull,
    RemoteCall,
    _capitalised,
)

# Every Redis key ConvViz writes starts with this.
KEY_PREFIX = "convviz"
# The RQ queues, most urgent first (a worker listens to them in this order).
QUEUE_NAMES = {
    Priority.URGENT: "convviz-urgent",
    Priority.NORMAL: "convviz-normal",
    Priority.BACKGROUND: "convviz-background",
}
# How often a replica's watcher reads the state of the jobs it waits for.
POLL_SECONDS = 0.2
# A replica's heartbeat key lives this long; the watcher refreshes it every
# third of that. A job whose waiters' replicas have all gone is cancelled.
REPLICA_TTL = 15
# A running job's heartbeat key lives this long; the worker refreshes it every
# second from a thread of its own (a compiled call may report no progress for
# a while). Once it has expired the job's worker is taken for dead.
JOB_HEARTBEAT_TTL = 5
# A worker's presence: it refreshes its entry every second; one silent for
# longer than this no longer counts.
WORKER_TTL = 10
# How many times a job is started in all when its workers die under it.
MAX_ATTEMPTS = 2
# A queued job fails when no worker has been alive for this long (a worker
# that is started again loads TensorFlow and the models first: 20-60 s).
NO_WORKER_SECONDS = 90
# RQ's own (hard) timeout is the job's time limit plus this.
HARD_LIMIT_GRACE_SECONDS = 30
# Finished jobs' records are kept this long (for late readers), then expire.
RECORD_TTL = 3600


class QueueUnavailable(InputError):
    """The queue for long computations (Redis, or its workers) cannot be reached; nothing was lost but this job."""


class WorkerLost(JobCancelled):
    """The workers that ran a job stopped under it, `MAX_ATTEMPTS` times."""


def job_key(job_id):
    """The Redis hash of one job: its state, progress, payload and outcome."""
    return f"{KEY_PREFIX}:job:{job_id}"


def waiters_key(job_id):
    """The Redis set of one job's waiters ("replica|session|token")."""
    return f"{KEY_PREFIX}:waiters:{job_id}"


def heartbeat_key(job_id):
    """The key a worker keeps alive while it runs a job."""
    return f"{KEY_PREFIX}:alive:{job_id}"


def replica_key(replica_id):
    """The key a replica keeps alive while it waits for jobs."""
    return f"{KEY_PREFIX}:replica:{replica_id}"


def key_index_key(key):
    """The Redis key that maps a job key to its unfinished job."""
    return f"{KEY_PREFIX}:key:{hashlib.sha256(repr(key).encode('utf-8')).hexdigest()[:40]}"


RUNNING_KEY = f"{KEY_PREFIX}:running"
WORKERS_KEY = f"{KEY_PREFIX}:workers"


def connect(url, socket_timeout=5):
    """A Redis connection for `url` that fails within seconds when Redis is away.

    RQ stores pickles and needs raw bytes (no `decode_responses`).

    Args:
        url: `redis://host:port/db`.
        socket_timeout: Seconds a command may take; None for a worker, whose
            RQ loop blocks on the queues for minutes at a time.
    """
    return redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=socket_timeout,
                                health_check_interval=10)


def rq_queues(connection):
    """The RQ queues, most urgent first."""
    return [rq.Queue(name, connection=connection) for _, name in sorted(QUEUE_NAMES.items())]


def live_workers(connection, now=None):
    """How many workers have reported in within `WORKER_TTL` seconds."""
    now = time.time() if now is None else now
    return int(connection.zcount(WORKERS_KEY, now - WORKER_TTL, "+inf"))


def enqueue(connection, job_id, priority, time_limit, at_front=False):
    """Puts a job (whose record exists) on its priority's RQ queue; returns the RQ job's id.

    Each enqueueing gets a fresh RQ id, recorded in the job's hash as
    `ticket`: a worker runs only the RQ job that holds the current ticket, so
    a stale copy (moved to another queue, queued again after a worker died)
    does nothing.
    """
    ticket = f"{job_id}-{uuid.uuid4().hex[:8]}"
    connection.hset(job_key(job_id), mapping={"ticket": ticket, "priority": int(priority)})
    hard_limit = -1 if time_limit is None or time_limit == float("inf") else int(time_limit + HARD_LIMIT_GRACE_SECONDS)
    rq.Queue(QUEUE_NAMES[Priority(priority)], connection=connection).enqueue_call(
        "convviz_core.worker.run_job",
        args=(job_id, ticket),
        timeout=hard_limit,
        result_ttl=0,
        failure_ttl=RECORD_TTL,
        job_id=ticket,
        at_front=at_front,
        description=f"convviz job {job_id}",
    )
    return ticket


def _text(value, default=""):
    if value is None:
        return default
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _number(record, name, default=0.0):
    try:
        return float(_text(record.get(name.encode()), ""))
    except ValueError:
        return default


class _RemoteJob:
    """This replica's view of one queued job and of its own waiters (guarded by the pool's lock)."""

    def __init__(self, key, job_id, description, finish, time_limit, priority):
        self.key = key
        self.job_id = job_id
        self.description = description
        self.finish = finish
        self.time_limit = time_limit
        self.priority = Priority(priority)
        self.future = concurrent.futures.Future()
        self.waiters = {}  # token -> (session id or None, priority)
        self.state = "queued"
        self.done_units, self.total_units = 0, 1
        self.queued_at = time.time()
        self.started_at = None
        self.finished_at = None
        self.jobs_ahead = 0
        self.lost_since = None

    def sessions(self):
        return {session for session, _ in self.waiters.values()}


class QueuePool:
    """`jobs.JobPool`'s public API, with `RemoteCall` jobs run by RQ workers over Redis.

    Safe to use from many threads. Contacts Redis only when a `RemoteCall` is
    submitted, so an app whose Redis is away still shows every page that
    needs no queue.

    Args:
        url: The Redis URL (`redis://host:port/db`).
        max_queued: As for `JobPool`, counted over every replica's queued jobs.
        time_limit: Default seconds a job may run (None: no limit).
        session_alive: As for `JobPool`: a probe of this replica's sessions.
        workers: Workers of this replica's own pool, for jobs that are not
            `RemoteCall`s.
        replica_id: This replica's name in waiter entries (default: random).
        poll_seconds: How often the watcher reads the jobs' states.
    """

    runs_remote_calls = True

    def __init__(
        self,
        url,
        max_queued=DEFAULT_MAX_QUEUED,
        time_limit=None,
        session_alive=None,
        workers=1,
        replica_id=None,
        poll_seconds=POLL_SECONDS,
    ):
        self.url = url
        self.max_queued = int(max_queued)
        self.time_limit = time_limit
        self.session_alive = session_alive
        self.replica_id = replica_id or f"{os.uname().nodename}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.poll_seconds = float(poll_seconds)
        self.local = JobPool(workers=workers, max_queued=max_queued, time_limit=time_limit, session_alive=session_alive)
        self.connection = connect(url)
        self._lock = threading.RLock()
        self._jobs = {}  # job id -> _RemoteJob this replica waits for
        self._sessions = {}  # session id -> _RemoteJob it last asked for
        self._tokens = itertools.count()
        self._watcher = None
        self._shut_down = False
        self._last_replica_beat = 0.0
        self._last_session_check = 0.0
        self._no_worker_since = None  # When this replica last saw no worker alive (None: it saw one).

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
        """As `JobPool.submit_job`; a `RemoteCall` goes to the workers, anything else to this replica's pool.

        Raises:
            QueueFull: As for `JobPool`.
            QueueUnavailable: If Redis cannot be reached (for a `RemoteCall`).
            RuntimeError: After `shutdown`.
        """
        if not isinstance(function, RemoteCall):
            # The session's newer request: its remote job, if any, is withdrawn.
            ticket = self.local.submit_job(
                key, function, session_id=session_id, priority=priority, time_limit=time_limit,
                wait_in_line=wait_in_line, description=description,
            )
            if session_id is not None:
                self._withdraw_session(session_id)
            return ticket
        priority = Priority(priority)
        time_limit = self.time_limit if time_limit is None else time_limit
        try:
            ticket = self._submit_remote(key, function, session_id, priority, time_limit, wait_in_line, description)
        except redis.exceptions.RedisError as error:
            raise _unavailable(description, error) from error
        if session_id is not None:
            self.local.forget_session(session_id)
        return ticket

    def submit(self, fn, /, *args, **kwargs):
        """`concurrent.futures.Executor.submit`, in this replica's own pool."""
        return self.local.submit(fn, *args, **kwargs)

    def _submit_remote(self, key, call, session_id, priority, time_limit, wait_in_line, description):
        connection = self.connection
        with self._lock:
            if self._shut_down:
                raise RuntimeError("The job pool has been shut down.")
            previous = self._sessions.get(session_id) if session_id is not None else None
            job_id = self._unfinished_job_id(key)
            if job_id is None:
                replaced = None
                if previous is not None and self._only_waiter_is(previous, session_id):
                    replaced = previous.job_id
                self._refuse_if_full(priority, replaced, wait_in_line, description)
                job_id = self._create(key, call, priority, time_limit, description)
            job = self._jobs.get(job_id)
            if job is None:
                job = _RemoteJob(key, job_id, description, call.finish, time_limit, priority)
                self._jobs[job_id] = job
            token = next(self._tokens)
            job.waiters[token] = (session_id, priority)
            connection.sadd(waiters_key(job_id), self._member(session_id, token))
            connection.set(replica_key(self.replica_id), "1", ex=REPLICA_TTL)
            self._raise_priority(job_id, priority)
            if session_id is not None:
                if previous is not None and previous is not job:
                    self._withdraw_session_locked(previous, session_id)
                self._sessions[session_id] = job
            self._start_watcher_locked()
            return JobTicket(self, job, token)

    def _unfinished_job_id(self, key):
        """The id of the unfinished job of `key`, from any replica, or None."""
        job_id = _text(self.connection.get(key_index_key(key))) or None
        if job_id is None:
            return None
        state, cancel = self.connection.hmget(job_key(job_id), "state", "cancel")
        if _text(state) in ("", "done") or _text(cancel):
            return None
        return job_id

    def _only_waiter_is(self, job, session_id):
        members = {_text(member) for member in self.connection.smembers(waiters_key(job.job_id))}
        prefix = f"{self.replica_id}|{session_id}|"
        return all(member.startswith(prefix) for member in members)

    def _refuse_if_full(self, priority, replaced, wait_in_line, description):
        connection = self.connection
        pipeline = connection.pipeline()
        for level, name in sorted(QUEUE_NAMES.items()):
            if level <= priority:
                pipeline.lrange(f"rq:queue:{name}", 0, -1)
        pipeline.smembers(RUNNING_KEY)
        *queued_lists, running = pipeline.execute()
        queued = [_text(ticket) for tickets in queued_lists for ticket in tickets]
        queued_ahead = [ticket for ticket in queued if replaced is None or not ticket.startswith(f"{replaced}-")]
        running = [_text(member) for member in running if _text(member) != replaced]
        ahead = len(queued_ahead) + len(running)
        workers = max(1, live_workers(connection))
        if len(queued_ahead) >= self.max_queued and ahead >= workers and not wait_in_line:
            raise QueueFull(ahead, description)

    def _create(self, key, call, priority, time_limit, description):
        connection = self.connection
        job_id = uuid.uuid4().hex
        connection.hset(
            job_key(job_id),
            mapping={
                "key": repr(key)[:500],
                "description": description,
                "payload": call.payload(),
                "state": "queued",
                "priority": int(priority),
                "time_limit": "" if time_limit is None else repr(float(time_limit)),
                "queued_at": repr(time.time()),
                "attempt": 1,
                "done": 0,
                "total": 1,
            },
        )
        connection.expire(job_key(job_id), RECORD_TTL * 24)
        if not connection.set(key_index_key(key), job_id, nx=True, ex=RECORD_TTL * 24):
            # Another replica queued the same key a moment ago: join its job.
            connection.delete(job_key(job_id))
            other = self._unfinished_job_id(key)
            if other is not None:
                return other
            connection.set(key_index_key(key), job_id, ex=RECORD_TTL * 24)
        enqueue(connection, job_id, priority, time_limit)
        return job_id

    def _raise_priority(self, job_id, priority):
        """Moves a queued job to a more urgent queue when a more urgent waiter joins it."""
        record = self.connection.hmget(job_key(job_id), "state", "priority", "ticket", "time_limit")
        state, current, ticket, limit = (_text(value) for value in record)
        if state not in ("queued", "running") or not current or Priority(int(current)) <= priority:
            return
        if state == "running":
            # The worker reads it at its next check: a warm-up someone now waits for no longer yields.
            self.connection.hset(job_key(job_id), "priority", int(priority))
            return
        rq.Queue(QUEUE_NAMES[Priority(int(current))], connection=self.connection).remove(ticket)
        enqueue(self.connection, job_id, priority, float(limit) if limit else None)

    def _member(self, session_id, token):
        return f"{self.replica_id}|{'' if session_id is None else session_id}|{token}"

    # --- Sessions --------------------------------------------------------------------

    def forget_session(self, session_id):
        """Withdraws a session that has gone from every job, here and on the workers."""
        self.local.forget_session(session_id)
        self._withdraw_session(session_id)

    def _withdraw_session(self, session_id):
        with self._lock:
            self._sessions.pop(session_id, None)
            for job in list(self._jobs.values()):
                self._withdraw_session_locked(job, session_id)

    def _withdraw_session_locked(self, job, session_id):
        tokens = [token for token, (session, _) in job.waiters.items() if session == session_id]
        if tokens:
            self._withdraw_tokens(job, tokens)

    def _withdraw_tokens(self, job, tokens):
        if not isinstance(job, _RemoteJob):
            return self.local._withdraw_tokens(job, tokens)
        with self._lock:
            entries = [(token, job.waiters.pop(token)) for token in tokens if token in job.waiters]
            members = [self._member(session, token) for token, (session, _) in entries]
            try:
                if members:
                    pipeline = self.connection.pipeline()
                    pipeline.srem(waiters_key(job.job_id), *members)
                    pipeline.scard(waiters_key(job.job_id))
                    _, left = pipeline.execute()
                    if left == 0:
                        cancel_job(self.connection, job.job_id, "nobody waits for it any more")
            except redis.exceptions.RedisError:
                pass  # Redis away: the job is lost anyway, and the watcher says so.
            if not job.waiters:
                self._untrack_locked(job, error=JobCancelled(
                    f"{_capitalised(job.description)} was cancelled: nobody waits for it any more."))

    def _untrack_locked(self, job, value=None, error=None):
        self._jobs.pop(job.job_id, None)
        for session, owned in list(self._sessions.items()):
            if owned is job:
                del self._sessions[session]
        if job.state != "done":
            job.state = "done"
            job.finished_at = time.time()
        if job.future.done():
            return
        if job.future.set_running_or_notify_cancel():
            if error is not None:
                job.future.set_exception(error)
            else:
                job.done_units = job.total_units
                job.future.set_result(value)

    # --- Watching --------------------------------------------------------------------

    def _start_watcher_locked(self):
        if self._watcher is None or not self._watcher.is_alive():
            self._watcher = threading.Thread(
                target=_watch, args=(weakref.ref(self),), name="convviz-queue-watcher", daemon=True
            )
            self._watcher.start()

    def _poll(self):
        """One round of the watcher: heartbeats, gone sessions, the jobs' states. Returns whether to go on."""
        with self._lock:
            jobs = list(self._jobs.values())
        if not jobs:
            return False
        now = time.time()
        try:
            if now - self._last_replica_beat >= REPLICA_TTL / 3:
                self.connection.set(replica_key(self.replica_id), "1", ex=REPLICA_TTL)
                self._last_replica_beat = now
            if self.session_alive is not None and now - self._last_session_check >= SESSION_CHECK_SECONDS:
                self._last_session_check = now
                self._withdraw_gone_sessions(jobs)
            pipeline = self.connection.pipeline()
            for job in jobs:
                pipeline.hgetall(job_key(job.job_id))
                pipeline.exists(heartbeat_key(job.job_id))
            answers = pipeline.execute()
            workers = live_workers(self.connection) if any(job.state == "queued" for job in jobs) else None
            if workers == 0:
                self._no_worker_since = self._no_worker_since or now
            elif workers is not None:
                self._no_worker_since = None
            for index, job in enumerate(jobs):
                self._update(job, answers[2 * index], bool(answers[2 * index + 1]), workers)
        except redis.exceptions.RedisError as error:
            with self._lock:
                for job in list(self._jobs.values()):
                    self._untrack_locked(job, error=_unavailable(job.description, error))
                self._sessions.clear()
            return False
        return True

    def _withdraw_gone_sessions(self, jobs):
        with self._lock:
            for job in jobs:
                for session in {session for session in job.sessions() if session is not None}:
                    try:
                        gone = self.session_alive(session) is False
                    except Exception:  # noqa: BLE001 - a failing probe must not cancel work.
                        gone = False
                    if gone:
                        self._withdraw_session_locked(job, session)
                        if self._sessions.get(session) is job:
                            del self._sessions[session]

    def _update(self, job, record, alive, workers):
        if not record:
            with self._lock:
                self._untrack_locked(job, error=QueueUnavailable(
                    f"The queue lost {job.description} (was Redis restarted?). Ask for it again."))
            return
        state = _text(record.get(b"state"))
        job.done_units = int(_number(record, "done", 0))
        job.total_units = max(1, int(_number(record, "total", 1)))
        started = _number(record, "started_at", 0.0)
        job.started_at = started or None
        if state == "queued":
            job.state = "queued"
            job.jobs_ahead = self._jobs_ahead(record)
            if workers == 0 and time.time() - (self._no_worker_since or time.time()) > NO_WORKER_SECONDS:
                fail_job(self.connection, job.job_id, QueueUnavailable(
                    f"No worker has been running for {NO_WORKER_SECONDS} s to take {job.description}. "
                    "Ask the server's administrator to start `python -m convviz_core.worker`."))
        elif state == "running":
            job.state = "running"
            if not alive and time.time() - started > JOB_HEARTBEAT_TTL:
                recover_job(self.connection, job.job_id)
        elif state == "done":
            self._finish(job, record)

    def _jobs_ahead(self, record):
        ticket = _text(record.get(b"ticket"))
        priority = Priority(int(_number(record, "priority", Priority.NORMAL)))
        ahead = int(self.connection.scard(RUNNING_KEY))
        for level, name in sorted(QUEUE_NAMES.items()):
            if level < priority:
                ahead += int(self.connection.llen(f"rq:queue:{name}"))
            elif level == priority:
                position = self.connection.lpos(f"rq:queue:{name}", ticket)
                ahead += int(position) if position is not None else 0
        return ahead

    def _finish(self, job, record):
        outcome = _text(record.get(b"outcome"))
        value = error = None
        if outcome == "ok":
            try:
                value = pickle.loads(record.get(b"result", pickle.dumps(None)))
                if job.finish is not None:
                    value = job.finish(value)
            except Exception as failure:  # noqa: BLE001 - handed to every waiter.
                error = failure
        else:
            error = _error_from(record, job.description)
        with self._lock:
            self._untrack_locked(job, value=value, error=error)

    # --- Status ----------------------------------------------------------------------

    def _status(self, job):
        if not isinstance(job, _RemoteJob):
            return self.local._status(job)
        now = time.time()
        if job.state == "queued":
            return JobStatus("queued", job.jobs_ahead, job.done_units, job.total_units, 0.0, now - job.queued_at,
                             job.description)
        end = job.finished_at if job.finished_at is not None else now
        started = job.started_at if job.started_at is not None else end
        return JobStatus(job.state, 0, job.done_units, job.total_units, max(0.0, end - started),
                         max(0.0, started - job.queued_at), job.description)

    def jobs(self):
        """`JobStatus` of this replica's local jobs and of the remote jobs it waits for."""
        with self._lock:
            remote = [self._status(job) for job in self._jobs.values()]
        return self.local.jobs() + remote

    def unfinished_tickets(self, key_filter=None):
        """Tickets that watch (without waiting for) every unfinished job this replica knows."""
        with self._lock:
            remote = [
                JobTicket(self, job, None)
                for job in self._jobs.values()
                if key_filter is None or key_filter(job.key)
            ]
        return self.local.unfinished_tickets(key_filter) + remote

    def running_futures(self):
        """The futures of this replica's running local jobs."""
        return self.local.running_futures()

    def shutdown(self, wait=True, *, cancel_futures=False):
        """Stops taking jobs; with `cancel_futures`, withdraws this replica's waiters from every remote job."""
        with self._lock:
            self._shut_down = True
            if cancel_futures:
                for job in list(self._jobs.values()):
                    self._withdraw_tokens(job, list(job.waiters))
        self.local.shutdown(wait=wait, cancel_futures=cancel_futures)


def _watch(pool_reference):
    while True:
        pool = pool_reference()
        if pool is None:
            return
        with pool._lock:
            if not pool._jobs:
                pool._watcher = None
                return
        keep_going = pool._poll()
        poll_seconds = pool.poll_seconds
        del pool
        if not keep_going:
            continue
        time.sleep(poll_seconds)


def _unavailable(description, error):
    return QueueUnavailable(
        f"The queue for long computations is not reachable, so {description} cannot run now "
        f"({type(error).__name__}: {error}). The other pages work as usual; try again in a minute."
    )


def _error_from(record, description):
    raw = record.get(b"error")
    if raw:
        try:
            error = pickle.loads(raw)
            if isinstance(error, BaseException):
                return error
        except Exception:  # noqa: BLE001 - an error that cannot be read is described instead.
            pass
    reason = _text(record.get(b"cancel")) or "it failed"
    return JobCancelled(f"{_capitalised(description)} was cancelled: {reason}.")


def _finish_record(connection, job_id, mapping):
    """Marks a job done (once): returns False if it was done already."""
    with connection.pipeline() as pipeline:
        while True:
            try:
                pipeline.watch(job_key(job_id))
                if _text(pipeline.hget(job_key(job_id), "state")) in ("", "done"):
                    pipeline.unwatch()
                    return False
                key = _text(pipeline.hget(job_key(job_id), "key"))
                pipeline.multi()
                pipeline.hset(job_key(job_id), mapping={**mapping, "state": "done", "finished_at": repr(time.time())})
                # The arguments (a photo, a dataset's request) are not needed any more.
                pipeline.hdel(job_key(job_id), "payload")
                pipeline.expire(job_key(job_id), RECORD_TTL)
                pipeline.srem(RUNNING_KEY, job_id)
                pipeline.delete(waiters_key(job_id))
                pipeline.execute()
                _drop_key_index(connection, key, job_id)
                return True
            except redis.exceptions.WatchError:
                continue


def _drop_key_index(connection, key_repr, job_id):
    # The index is found by the key's repr; drop it only if it still names this job.
    index = f"{KEY_PREFIX}:key:{hashlib.sha256(key_repr.encode('utf-8')).hexdigest()[:40]}"
    if _text(connection.get(index)) == job_id:
        connection.delete(index)


def cancel_job(connection, job_id, reason):
    """Asks a job to stop: a queued one is done at once, a running one stops at its next progress report."""
    connection.hset(job_key(job_id), "cancel", reason)
    record = connection.hmget(job_key(job_id), "state", "priority", "ticket", "description")
    state, priority, ticket, description = (_text(value) for value in record)
    if state == "queued":
        if priority:
            rq.Queue(QUEUE_NAMES[Priority(int(priority))], connection=connection).remove(ticket)
        fail_job(connection, job_id, JobCancelled(f"{_capitalised(description)} was cancelled: {reason}."))


def fail_job(connection, job_id, error):
    """Ends a job with an error for all its waiters (unless it ended already)."""
    return _finish_record(connection, job_id, {"outcome": "error", "error": pickle_error(error)})


def pickle_error(error):
    """An exception, pickled; one that cannot be is replaced by a `JobCancelled` with its message."""
    try:
        data = pickle.dumps(error, protocol=pickle.HIGHEST_PROTOCOL)
        pickle.loads(data)
        return data
    except Exception:  # noqa: BLE001 - any exception must reach the waiters in some form.
        return pickle.dumps(JobCancelled(f"{type(error).__name__}: {error}"))


def recover_job(connection, job_id):
    """Queues a job whose worker died again at the front, or fails it after `MAX_ATTEMPTS` (once, whoever calls).

    Returns:
        "requeued", "failed" or None when another replica did it first.
    """
    record = connection.hmget(job_key(job_id), "attempt", "priority", "time_limit", "description", "state")
    attempt, priority, limit, description, state = (_text(value) for value in record)
    if state != "running" or not connection.set(f"{KEY_PREFIX}:recover:{job_id}:{attempt}", "1", nx=True, ex=RECORD_TTL):
        return None
    attempt = int(attempt or 1)
    if attempt >= MAX_ATTEMPTS:
        fail_job(connection, job_id, WorkerLost(
            f"The worker computing {description} stopped under it {attempt} times; it was not finished. "
            "Try again; if it happens again, tell the server's administrator."))
        return "failed"
    connection.hset(job_key(job_id), mapping={"state": "queued", "attempt": attempt + 1, "done": 0, "total": 1,
                                              "started_at": ""})
    connection.srem(RUNNING_KEY, job_id)
    enqueue(connection, job_id, Priority(int(priority or Priority.NORMAL)), float(limit) if limit else None,
            at_front=True)
    return "requeued"

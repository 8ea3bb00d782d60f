"""`python -m convviz_core.worker`: a worker that runs ConvViz's long jobs from the Redis queue.

Start as many as the machines have cores to spare for long work (one per
2 cores leaves room for the pages), on any machine that reaches Redis and the
shared cache folder:

    CONVVIZ_QUEUE_URL=redis://redis:6379/0 CONVVIZ_CACHE_DIR=/shared/cache python -m convviz_core.worker

Each worker is a python-rq `SimpleWorker`: it runs one job at a time in its
own process, so the built-in models are loaded once (at start, unless
`--no-preload`) and TensorFlow's compiled functions are kept from one job to
the next (a forking worker would start TensorFlow again for every job). The
queue's rules (progress, cancellation, time limits, a dead worker's job
queued again) are described in `convviz_core.job_queue`; `run_job` is the
worker's side of them.
"""

import argparse
import contextlib
import functools
import itertools
import logging
import os
import pickle
import socket
import sys
import threading
import time
import uuid

import redis
import rq
from rq.timeouts import JobTimeoutException

from convviz_core import job_queue
from convviz_core.job_queue import (
    JOB_HEARTBEAT_TTL,
    QUEUE_NAMES,
    RUNNING_KEY,
    WORKERS_KEY,
    _text,
    enqueue,
    fail_job,
    heartbeat_key,
    job_key,
    replica_key,
    waiters_key,
)
from convviz_core.jobs import (
    SESSION_CHECK_SECONDS,
    JobCancelled,
    JobTimedOut,
    Priority,
    _capitalised,
    _Preempted,
    resolve_target,
)

# How often a worker writes progress to Redis, and how often it looks for a
# cancellation, at most (progress reports can come every few milliseconds).
PROGRESS_WRITE_SECONDS = 0.1
CANCEL_CHECK_SECONDS = 0.25

# The job this process runs now, for the heartbeat thread: {"job_id": ...}.
_CURRENT = {}


@functools.cache
def builtin_model(name):
    """A built-in model by name, loaded once per worker process (never from a pickle)."""
    from convviz_core import load_model

    return load_model(name)


class WorkerProgress:
    """The `progress` a job function gets in a worker: like `jobs.JobProgress`, over Redis.

    Each call records (done, total) for the waiters (at most every
    `PROGRESS_WRITE_SECONDS`), then raises `JobCancelled` if the job was
    cancelled or its waiters' replicas have all gone, `JobTimedOut` past its
    time limit, or makes way (`_Preempted`) for more urgent work when it is a
    background job and every worker is busy.
    """

    def __init__(self, connection, job_id, description, time_limit, priority):
        self._connection = connection
        self._job_id = job_id
        self._description = description
        self._time_limit = time_limit
        self._priority = priority
        self._started = time.monotonic()
        self._last_write = 0.0
        self._last_check = 0.0
        self._last_session_check = time.monotonic()
        self._reason = None

    def __call__(self, done, total):
        now = time.monotonic()
        if now - self._last_write >= PROGRESS_WRITE_SECONDS or done >= total:
            self._last_write = now
            self._connection.hset(job_key(self._job_id), mapping={"done": int(done), "total": max(1, int(total))})
        self.check()

    @property
    def cancelled(self):
        """Whether the job has been asked to stop."""
        return self._reason is not None or bool(_text(self._connection.hget(job_key(self._job_id), "cancel")))

    def check(self):
        """Raises `JobCancelled`, `JobTimedOut` or `_Preempted` if the job should stop now."""
        now = time.monotonic()
        if self._time_limit is not None and now - self._started > self._time_limit:
            raise JobTimedOut(
                f"{_capitalised(self._description)} took longer than this server allows "
                f"({self._time_limit:.0f} s) and was stopped. Ask for less work and try again."
            )
        if now - self._last_check < CANCEL_CHECK_SECONDS:
            return
        self._last_check = now
        reason, priority = (_text(value) for value in self._connection.hmget(job_key(self._job_id), "cancel",
                                                                             "priority"))
        if priority:
            self._priority = Priority(int(priority))
        if not reason and now - self._last_session_check >= SESSION_CHECK_SECONDS:
            self._last_session_check = now
            if not self._someone_is_there():
                reason = "its sessions have gone"
                self._connection.hset(job_key(self._job_id), "cancel", reason)
        if reason:
            self._reason = reason
            raise JobCancelled(f"{_capitalised(self._description)} was cancelled: {reason}.")
        if self._priority == Priority.BACKGROUND and self._more_urgent_work_waits():
            raise _Preempted(f"{_capitalised(self._description)} makes way for a more urgent job.")

    def _someone_is_there(self):
        members = [_text(member) for member in self._connection.smembers(waiters_key(self._job_id))]
        replicas = {member.split("|", 1)[0] for member in members}
        return any(self._connection.exists(replica_key(replica)) for replica in replicas)

    def _more_urgent_work_waits(self):
        queued = sum(
            self._connection.llen(f"rq:queue:{name}")
            for priority, name in QUEUE_NAMES.items()
            if priority < Priority.BACKGROUND
        )
        if not queued:
            return False
        busy = self._connection.scard(RUNNING_KEY)
        return busy >= job_queue.live_workers(self._connection)


def run_job(job_id, ticket):
    """Runs one queued job (RQ calls this): its function, its progress, its outcome in the job's Redis hash.

    Does nothing when the RQ job is a stale copy (`ticket` is no longer the
    job's), or the job was cancelled or finished meanwhile. Never raises for
    a job's own error: that goes to the waiters.
    """
    connection = rq.get_current_job().connection
    record = connection.hgetall(job_key(job_id))
    if not record or _text(record.get(b"ticket")) != ticket or _text(record.get(b"state")) != "queued":
        return
    description = _text(record.get(b"description"), "your computation")
    if _text(record.get(b"cancel")):
        fail_job(connection, job_id, JobCancelled(
            f"{_capitalised(description)} was cancelled: {_text(record.get(b'cancel'))}."))
        return
    limit = _text(record.get(b"time_limit"))
    time_limit = float(limit) if limit and float(limit) != float("inf") else None
    priority = Priority(int(_text(record.get(b"priority"), "1")))
    pipeline = connection.pipeline()
    pipeline.hset(job_key(job_id), mapping={
        "state": "running", "started_at": repr(time.time()), "done": 0, "total": 1,
        "worker": _CURRENT.get("name", ""),
    })
    pipeline.sadd(RUNNING_KEY, job_id)
    pipeline.set(heartbeat_key(job_id), "1", ex=JOB_HEARTBEAT_TTL)
    pipeline.execute()
    _CURRENT["job_id"] = job_id
    try:
        target, args, kwargs = pickle.loads(record[b"payload"])
        progress = WorkerProgress(connection, job_id, description, time_limit, priority)
        value = resolve_target(target)(*args, progress=progress, **kwargs)
    except _Preempted:
        _CURRENT.pop("job_id", None)
        connection.hset(job_key(job_id), mapping={"state": "queued", "done": 0, "total": 1, "started_at": ""})
        connection.srem(RUNNING_KEY, job_id)
        enqueue(connection, job_id, priority, time_limit)
        return
    except JobTimeoutException:
        fail_job(connection, job_id, JobTimedOut(
            f"{_capitalised(description)} took longer than this server allows and was stopped. "
            "Ask for less work and try again."))
    except BaseException as error:  # noqa: BLE001 - handed to every waiter.
        fail_job(connection, job_id, error)
        if isinstance(error, (KeyboardInterrupt, SystemExit)):
            raise
    else:
        try:
            result = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as error:  # noqa: BLE001 - a result that cannot travel is an error.
            fail_job(connection, job_id, TypeError(f"The result of {description} cannot be sent back: {error}"))
        else:
            job_queue._finish_record(connection, job_id, {"outcome": "ok", "result": result})
    finally:
        _CURRENT.pop("job_id", None)
        with contextlib.suppress(redis.exceptions.RedisError):
            connection.delete(heartbeat_key(job_id))



def _beat(connection, name, stop):
    """Keeps this worker's presence and its running job's heartbeat fresh, every second."""
    while True:
        try:
            connection.zadd(WORKERS_KEY, {name: time.time()})
            job_id = _CURRENT.get("job_id")
            if job_id is not None:
                connection.set(heartbeat_key(job_id), "1", ex=JOB_HEARTBEAT_TTL)
        except redis.exceptions.RedisError:
            pass  # Redis away: RQ's own loop waits for it to come back.
        if stop.wait(1.0):
            return


def is_healthy(connection, host_name):
    """Whether a worker whose name starts with `host_name` has reported in within `WORKER_TTL` seconds."""
    try:
        names = connection.zrangebyscore(WORKERS_KEY, time.time() - job_queue.WORKER_TTL, "+inf")
    except redis.exceptions.RedisError:
        return False
    return any(_text(name).startswith(f"{host_name}-") for name in names)


def _wait_for_redis(connection, most_seconds=30.0):
    """Pings Redis until it answers, waiting longer each time (up to `most_seconds` between pings)."""
    wait = 0.5
    while True:
        try:
            connection.ping()
            return
        except redis.exceptions.ConnectionError:
            time.sleep(wait)
            wait = min(most_seconds, 2 * wait)


def main(argv=None):
    """Runs a worker until it is stopped (SIGTERM or Ctrl-C: it finishes its job first)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=os.environ.get("CONVVIZ_QUEUE_URL"),
                        help="Redis URL (default: $CONVVIZ_QUEUE_URL)")
    parser.add_argument("--name", default=f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:4]}",
                        help="this worker's name")
    parser.add_argument("--no-preload", action="store_true",
                        help="load the built-in models at their first job, not at start")
    parser.add_argument("--burst", action="store_true", help="stop when the queues are empty")
    parser.add_argument("--health", action="store_true",
                        help="exit 0 if a worker of this machine (host name) has reported in recently, else 1")
    args = parser.parse_args(argv)
    if not args.url:
        parser.error("give --url or set CONVVIZ_QUEUE_URL (redis://host:6379/0)")
    if args.health:
        return 0 if is_healthy(job_queue.connect(args.url), socket.gethostname()) else 1
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    if not args.no_preload:
        from convviz_core.models.registry import BUILTIN_MODELS

        for name, entry in BUILTIN_MODELS.items():
            if entry.weights_file is None:
                builtin_model(name)
    connection = job_queue.connect(args.url, socket_timeout=None)
    _CURRENT["name"] = args.name
    stop = threading.Event()
    threading.Thread(target=_beat, args=(connection, args.name, stop), name="convviz-worker-beat",
                     daemon=True).start()
    log = logging.getLogger("convviz.worker")
    log.warning("ConvViz worker %s listening on %s", args.name, args.url)
    try:
        for round_number in itertools.count():
            # A new RQ registration each round: Redis may have come back empty.
            name = args.name if round_number == 0 else f"{args.name}-{round_number}"
            worker = rq.SimpleWorker(job_queue.rq_queues(connection), connection=connection, name=name)
            try:
                worker.work(burst=args.burst, logging_level="WARNING")
                if args.burst or worker._stop_requested or worker._shutdown_requested_date is not None:
                    break
            except redis.exceptions.RedisError as error:
                log.warning("Redis is away (%s); waiting for it to come back", error)
            _wait_for_redis(connection)
    finally:
        stop.set()
        try:
            connection.zrem(WORKERS_KEY, args.name)
        except redis.exceptions.RedisError:
            pass
    return 0


if __name__ == "__main__":
    # RQ imports `convviz_core.worker` to call `run_job`: run that module's
    # `main`, not this `__main__` copy, so that both share `_CURRENT`.
    from convviz_core.worker import main as worker_main

    sys.exit(worker_main())

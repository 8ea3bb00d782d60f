"""Fake long jobs for tests/test_job_queue.py, run by real workers (`python -m convviz_core.worker`).

They talk to the test through the worker's Redis: a job counts its runs and
its starts, reports progress until the test sets its release key, and says
what stopped it. No TensorFlow: a worker that runs them starts in a second.
"""

import time

import rq

from convviz_core.jobs import JobCancelled


def gate(name, value, progress):
    """Reports (1, 4) until `test:release:<name>` exists, then returns `value`."""
    connection = rq.get_current_job().connection
    connection.incr(f"test:runs:{name}")
    try:
        while not connection.exists(f"test:release:{name}"):
            progress(1, 4)
            time.sleep(0.01)
        progress(4, 4)
    except JobCancelled as error:
        connection.set(f"test:stopped:{name}", type(error).__name__)
        raise
    return value


def fail(message, progress):
    """Raises a `ValueError` with `message`."""
    raise ValueError(message)

"""Checks an uploaded model file in a child process before the server loads it.

A model file is a program: Keras's safe_mode refuses the known ways to run
code from one, but its documentation says safe_mode is not isolation, and a
file can also ask for more memory or time than a shared server has. So
`check_model_file` first loads the file in a fresh, limited Python process
(`convviz_core/safety/model_check_child.py`), the same way the server will, and the
server loads it only if that child reports success. A file that hangs, exhausts
memory or crashes kills only the child.

The limits, chosen for a server with a few cores and a few GB of memory:

- `MAX_MODEL_FILE_BYTES`: 200 MiB, Streamlit's default `server.maxUploadSize`
  (200, in MiB). It admits ResNet50 (98 MB), Xception (88 MB) and the book's
  convnets (a few to 40 MB); VGG16 with its 500 MB classifier is built in.
- `MAX_UNPACKED_BYTES`: 400 MiB, what the members of a `.keras` archive, or
  the weights an HDF5 file declares, may add up to. Keras stores members
  uncompressed, so a real model unpacks to about its file size.
- `CHECK_TIME_LIMIT_SECONDS`: 60 s of wall time, and as many seconds of CPU
  time. Importing TensorFlow takes 5-10 s on a busy server; loading a 200 MB
  model and running it once takes a few more.
- `CHECK_MEMORY_LIMIT_BYTES`: 4 GiB of address space (`RLIMIT_AS`).
  TensorFlow alone reserves about 1.9 GiB of address space in the child (0.8
  GiB resident, with one thread); Keras then needs about eight times a
  model's weights, so a 199 MiB model peaks at 3.4 GiB (1.9 GiB resident).
  A limit on address space, unlike one on resident memory, also stops a
  single huge allocation before it touches a page.
- `MAX_CONCURRENT_CHECKS`: 2 children at a time (each holds 1-2 GB while it
  runs); further uploads wait up to `CHECK_QUEUE_SECONDS` for a turn.

The child runs with `python -I` (no user site, no PYTHON* variables), a
minimal environment (CPU only, one TensorFlow thread, its own temporary
folder as HOME and TMPDIR) and a lower priority. It is not a network or
filesystem sandbox: it relies on Keras and the inspection to run no code from
the file; the limits bound what the file can cost.
"""

import dataclasses
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from convviz_core.errors import InputError

MAX_MODEL_FILE_BYTES = 200 * 1024**2
MAX_UNPACKED_BYTES = 2 * MAX_MODEL_FILE_BYTES
CHECK_TIME_LIMIT_SECONDS = 60
CHECK_MEMORY_LIMIT_BYTES = 4 * 1024**3
MAX_CONCURRENT_CHECKS = 2
CHECK_QUEUE_SECONDS = 120

_CHILD_SCRIPT = Path(__file__).with_name("model_check_child.py")
_CHECK_SLOTS = threading.BoundedSemaphore(MAX_CONCURRENT_CHECKS)
_logger = logging.getLogger(__name__)


class ModelFileRefused(InputError):
    """An uploaded model file that ConvViz will not load; the message says why.

    Attributes:
        stage: The defence that refused it: "upload" (name or size), "inspection"
            (its structure, before TensorFlow is imported), "keras" (Keras's
            safe loading), "model" (not a usable image model) or "limits" (the
            check ran out of time or memory, or crashed).
        final: Whether the same file would be refused again. False when the
            check ran out of time or crashed, which a busy server can cause.
    """

    def __init__(self, stage, message, final=True):
        super().__init__(message)
        self.stage = stage
        self.final = final

    def __reduce__(self):
        # Pickled whole, so that a queue's worker hands it to the page as it was raised.
        return type(self), (self.stage, str(self), self.final)


@dataclasses.dataclass(frozen=True)
class ModelCheckReport:
    """What the child found in a model file that passed the check.

    Attributes:
        input_shape: The input shape without the batch axis (None for free sides).
        input_size: The (height, width) the test image had.
        output_shapes: The shape of each output, without the batch axis.
        layer_count: The layers of the model, nested models' layers included.
        image_layer_count: The layers with a (height, width, channels) output.
        parameter_count: The number of weights.
        seconds: How long the check took, TensorFlow's import included.
    """

    input_shape: tuple
    input_size: tuple
    output_shapes: tuple
    layer_count: int
    image_layer_count: int
    parameter_count: int
    seconds: float


def _gibibytes(size):
    return f"{size / 1024**3:g} GB"


def _child_environment(folder):
    """The child's whole environment: nothing of the server's is passed on."""
    return {
        "PATH": os.defpath,
        "LANG": "C.UTF-8",
        "HOME": folder,
        "TMPDIR": folder,
        "KERAS_HOME": os.path.join(folder, "keras"),
        "KERAS_BACKEND": "tensorflow",
        "CUDA_VISIBLE_DEVICES": "",
        "TF_CPP_MIN_LOG_LEVEL": "3",
        # One thread: fewer thread stacks under the address-space limit, and
        # the check leaves the other cores to the dashboard's users.
        "TF_NUM_INTRAOP_THREADS": "1",
        "TF_NUM_INTEROP_THREADS": "1",
        "OMP_NUM_THREADS": "1",
        # Each glibc malloc arena reserves 64 MB of address space.
        "MALLOC_ARENA_MAX": "2",
    }


def _limits_message(reason, time_limit_seconds, memory_limit_bytes):
    if reason == "time":
        return (
            f"The model file took too long to check (more than {time_limit_seconds} s to load "
            "and run once on a test image). Upload a smaller model, or try again when the "
            "server is less busy."
        )
    if reason == "memory":
        return (
            f"The model file needed more than {_gibibytes(memory_limit_bytes)} of memory to load "
            "and run once on a test image. Upload a smaller model, or one with a smaller input size."
        )
    return (
        "Checking the model file crashed, most often because loading it or running it on a "
        f"test image needs more than {_gibibytes(memory_limit_bytes)} of memory, or because "
        "the file is damaged. Save the model again with model.save('model.keras'), or upload "
        "a smaller model."
    )


def check_model_file(
    path,
    name=None,
    input_size=None,
    time_limit_seconds=CHECK_TIME_LIMIT_SECONDS,
    memory_limit_bytes=CHECK_MEMORY_LIMIT_BYTES,
):
    """Loads a model file in a limited child process, as the server would.

    Args:
        path: A `.keras` or `.h5` file at a path the server chose.
        name: The model's name in messages; default: the one saved in the file.
        input_size: (height, width) to run a model that accepts any size at;
            default: the `VisionModel` default.
        time_limit_seconds: Wall-time and CPU-time limit of the child.
        memory_limit_bytes: Address-space limit of the child.

    Returns:
        A `ModelCheckReport`.

    Raises:
        ModelFileRefused: (an `InputError`) if the file is not a model ConvViz
            can load safely, or the check ran out of time or memory.
        InputError: If other checks keep the server busy for too long.
    """
    if not _CHECK_SLOTS.acquire(timeout=CHECK_QUEUE_SECONDS):
        raise InputError("The server is busy checking other model files. Try again in a minute.")
    try:
        return _run_child(Path(path).resolve(), name, input_size, time_limit_seconds, memory_limit_bytes)
    finally:
        _CHECK_SLOTS.release()


def _run_child(path, name, input_size, time_limit_seconds, memory_limit_bytes):
    request = {
        "path": str(path),
        "name": name,
        "input_size": list(input_size) if input_size is not None else None,
        "max_unpacked_bytes": MAX_UNPACKED_BYTES,
        "memory_bytes": int(memory_limit_bytes),
        "cpu_seconds": int(max(1, time_limit_seconds)),
        # Keras may extract the weights to disk; nothing else is written.
        "file_bytes": MAX_UNPACKED_BYTES + 1024**2,
    }
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="convviz-check-") as folder:
        stderr_path = os.path.join(folder, "stderr.txt")
        with open(stderr_path, "wb") as stderr:
            try:
                child = subprocess.Popen(
                    [sys.executable, "-I", "-B", str(_CHILD_SCRIPT), json.dumps(request)],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=stderr,
                    cwd=folder,
                    env=_child_environment(folder),
                    start_new_session=True,
                )
            except OSError as error:
                raise InputError(
                    f"The server could not start the model check ({error.strerror}). Try again in a minute."
                ) from None
            try:
                output, _ = child.communicate(timeout=time_limit_seconds)
            except subprocess.TimeoutExpired:
                _kill(child)
                message = _limits_message("time", time_limit_seconds, memory_limit_bytes)
                raise ModelFileRefused("limits", message, final=False) from None
            finally:
                if child.poll() is None:
                    _kill(child)
        report = _parse_report(output)
        if report is None:
            with open(stderr_path, "rb") as stderr:
                stderr.seek(max(0, os.path.getsize(stderr_path) - 2000))
                _logger.warning(
                    "The model check of %s ended with status %s and no report; its last output:\n%s",
                    path.name,
                    child.returncode,
                    stderr.read().decode("utf-8", "replace"),
                )
    seconds = time.monotonic() - started
    if report is None:
        # SIGXCPU: the CPU-time limit. Anything else (a segmentation fault when a
        # native allocation fails under the memory limit, the kernel's OOM killer) is a crash.
        reason = "time" if child.returncode == -signal.SIGXCPU else "crash"
        message = _limits_message(reason, time_limit_seconds, memory_limit_bytes)
        raise ModelFileRefused("limits", message, final=False)
    if not report.get("ok"):
        if report.get("stage") == "limits":
            message = _limits_message(report.get("reason"), time_limit_seconds, memory_limit_bytes)
            raise ModelFileRefused("limits", message)
        raise ModelFileRefused(str(report.get("stage")), str(report.get("error")))
    return ModelCheckReport(
        input_shape=tuple(report["input_shape"]),
        input_size=tuple(report["input_size"]),
        output_shapes=tuple(tuple(shape) for shape in report["output_shapes"]),
        layer_count=report["layer_count"],
        image_layer_count=report["image_layer_count"],
        parameter_count=report["parameter_count"],
        seconds=seconds,
    )


def _kill(child):
    """Kills the child and anything it started (its own process group), and reaps it."""
    try:
        os.killpg(child.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    child.communicate()


def _parse_report(output):
    """The child's JSON report, or None if it wrote none (it was killed or crashed)."""
    lines = output.decode("utf-8", "replace").strip().splitlines()
    if not lines:
        return None
    try:
        report = json.loads(lines[-1])
    except ValueError:
        return None
    return report if isinstance(report, dict) else None

"""A cache of filter atlases shared by every session, on disk and in memory.

A filter atlas (the book's figure 5-30: the pattern that each filter of a layer
responds to most) takes seconds to minutes of gradient ascent, but for a
built-in model it depends only on fixed weights and fixed parameters. So a
class of thirty students should compute each atlas once: atlases of built-in
models are kept as `.npy` files under `paths.cache_dir("atlases")`, which
survive server restarts; atlases of every model (uploads too) are also kept in
a small in-memory LRU, so moving a slider never reads them again.

An atlas's key holds everything its pixels depend on: the model's name and a
digest of its weights, the layer, the filters, the pattern size, the steps,
the step size, the seed, the precision, the Keras version, and
`ATLAS_FORMAT_VERSION` plus a digest of `convviz_core/patterns.py`, so that a
change to the algorithm never serves a stale picture.

Atlases are computed in background threads (`AtlasJob`), so a computation
survives the rerun of the page that asked for it, and concurrent requests for
the same atlas share one computation. Files are written to a temporary name in
the same folder and renamed with `os.replace`, so a reader never sees half a
file.
"""

import collections
import dataclasses
import functools
import hashlib
import inspect
import json
import os
import re
import tempfile
import threading
import time
import warnings
from pathlib import Path

import keras
import numpy as np

from convviz_core.features import patterns as patterns_module
from convviz_core.errors import InputError
from convviz_core.models.registry import BUILTIN_MODELS
from convviz_core.paths import cache_dir

# Bump when the meaning or layout of a stored atlas changes.
ATLAS_FORMAT_VERSION = 1
# The disk cache is pruned, oldest first, above this size. An 8x8 atlas of a
# 224x224 model is 9.6 MB, so this keeps about two hundred of them.
MAX_DISK_BYTES = 2 * 1024**3
# Atlases kept in memory per `FilterAtlasCache` (9.6 MB each at most for 64
# filters of 224x224).
MEMORY_ENTRIES = 16
# At most this many filters in one atlas: the book's 8x8 grid.
MAX_FILTERS = 64

_SUFFIX = ".npy"


@dataclasses.dataclass(frozen=True)
class AtlasRequest:
    """Everything the patterns of one atlas depend on; build it with `atlas_request`.

    Attributes:
        model_name: The `VisionModel`'s name.
        weights_digest: `weights_digest(model)`.
        layer_name: A layer from `model.layer_names`.
        filter_indices: The filters, in grid order.
        height, width: The size the patterns are optimised at.
        steps, step_size, seed, precision: As for `filter_patterns`.
    """

    model_name: str
    weights_digest: str
    layer_name: str
    filter_indices: tuple
    height: int
    width: int
    steps: int
    step_size: float
    seed: int
    precision: str

    @property
    def key(self):
        """A hex digest naming this atlas; equal requests have equal keys."""
        fields = dataclasses.asdict(self)
        fields["filter_indices"] = list(self.filter_indices)
        fields["format_version"] = ATLAS_FORMAT_VERSION
        fields["algorithm"] = _algorithm_digest()
        fields["keras"] = keras.__version__
        text = json.dumps(fields, sort_keys=True)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]

    @property
    def file_name(self):
        """The cache file's name: the model's name (made safe) and the key."""
        safe_name = re.sub(r"[^A-Za-z0-9_.-]", "_", self.model_name)[:40] or "model"
        return f"{safe_name}-{self.key}{_SUFFIX}"


@dataclasses.dataclass(frozen=True, eq=False)
class Atlas:
    """A computed atlas.

    Attributes:
        request: The `AtlasRequest` it answers.
        patterns: uint8 array (filters, height, width, 3), read-only (it is
            shared by every session).
        source: "memory", "disk" or "computed".
    """

    request: AtlasRequest
    patterns: np.ndarray
    source: str


@functools.lru_cache(maxsize=1)
def _algorithm_digest():
    # Any edit to the pattern code (the ascent, the start image, the
    # deprocessing) changes this digest, and so every key.
    source = inspect.getsource(patterns_module)
    return hashlib.sha256(source.encode("utf-8")).hexdigest()[:16]


def weights_digest(model):
    """Returns a digest of a `VisionModel`'s weights, computed once per model.

    Two models with the same architecture name but different weights (say, a
    retrained small convnet) get different digests, so their atlases never mix.
    """

    def compute():
        digest = hashlib.sha256()
        for weight in model.keras_model.weights:
            values = np.ascontiguousarray(keras.ops.convert_to_numpy(weight))
            digest.update(f"{weight.path}:{values.dtype}:{values.shape};".encode("utf-8"))
            digest.update(values.tobytes())
        return digest.hexdigest()[:32]

    return model.cached_function(("weights_digest",), compute)


def atlas_request(
    model,
    layer_name,
    filter_indices,
    size=64,
    steps=40,
    step_size=1.0,
    seed=0,
    precision=None,
):
    """Validates the parameters of an atlas and gathers them into an `AtlasRequest`.

    Args:
        model: A `VisionModel`.
        layer_name: A layer from `model.layer_names`.
        filter_indices: At most `MAX_FILTERS` channels of that layer.
        size: Pattern side for models that accept any input size; a model
            with a fixed input size uses it instead (so the key does not
            depend on `size` for such models).
        steps, step_size, seed: As for `filter_patterns`.
        precision: "float32", "bfloat16" or None for the default.

    Returns:
        An `AtlasRequest`.

    Raises:
        InputError: For an unknown layer, no filters or more than
            `MAX_FILTERS`, or steps out of range. A filter out of the
            layer's range is reported when the atlas is computed.
    """
    # Raises InputError for a layer without a spatial output; the range of the
    # filters is checked by `filter_patterns` itself.
    model.layer_info(layer_name)
    filter_indices = tuple(int(index) for index in filter_indices)
    if not filter_indices:
        raise InputError("Choose at least one filter.")
    if len(filter_indices) > MAX_FILTERS:
        raise InputError(
            f"An atlas shows at most {MAX_FILTERS} filters (an 8x8 grid); "
            f"{len(filter_indices)} were chosen. Choose a smaller range."
        )
    if not 0 <= int(steps) <= 1000:
        raise InputError(f"Choose between 0 and 1000 steps. Received: steps={steps}")
    if not np.isfinite(step_size):
        raise InputError(f"The step size must be a finite number. Received: {step_size}")
    precision = precision or patterns_module.default_precision()
    if precision not in patterns_module.PRECISIONS:
        raise ValueError(
            f"precision must be one of {patterns_module.PRECISIONS}. Received: {precision}"
        )
    height, width = patterns_module.pattern_size(model, size)
    return AtlasRequest(
        model_name=model.name,
        weights_digest=weights_digest(model),
        layer_name=layer_name,
        filter_indices=filter_indices,
        height=int(height),
        width=int(width),
        steps=int(steps),
        step_size=float(step_size),
        seed=int(seed),
        precision=precision,
    )


def is_builtin(model):
    """Whether a `VisionModel` is one of ConvViz's built-in models (by name)."""
    return model.name in BUILTIN_MODELS


class AtlasJob:
    """The computation of one atlas, running in a background thread.

    The thread is not tied to the session that started it: when a user moves
    a slider or leaves the page while an atlas is computed, the computation
    goes on and its result lands in the cache, and any session asking for the
    same atlas meanwhile gets this job back (see `FilterAtlasCache.submit`).
    """

    def __init__(self, request):
        self.request = request
        self._lock = threading.Lock()
        self._finished = threading.Event()
        self._done_units, self._total_units = 0, 1
        self._started = None
        self._elapsed = None
        self._atlas = None
        self._error = None

    @property
    def progress(self):
        """(done, total) units of work so far; (0, 1) while the job waits its turn."""
        with self._lock:
            return self._done_units, self._total_units

    @property
    def started(self):
        """Whether the computation has begun (jobs run one at a time)."""
        return self._started is not None

    @property
    def elapsed(self):
        """Seconds since the computation began (its duration once finished)."""
        if self._elapsed is not None:
            return self._elapsed
        if self._started is None:
            return 0.0
        return time.monotonic() - self._started

    def done(self):
        """Whether the job has finished, with a result or an error."""
        return self._finished.is_set()

    def wait(self, timeout=None):
        """Waits for the job to finish; returns whether it has."""
        return self._finished.wait(timeout)

    def result(self, timeout=None):
        """Returns the job's `Atlas`, waiting for it if needed.

        Raises:
            InputError: Whatever the computation raised (a filter out of
                range, say).
            TimeoutError: If `timeout` seconds pass first.
        """
        if not self._finished.wait(timeout):
            raise TimeoutError(f"The atlas of '{self.request.layer_name}' is not ready yet.")
        if self._error is not None:
            raise self._error
        return self._atlas

    def _begin(self):
        self._started = time.monotonic()

    def _report(self, done, total):
        with self._lock:
            self._done_units, self._total_units = int(done), max(1, int(total))

    def _finish(self, atlas=None, error=None):
        self._elapsed = self.elapsed
        self._atlas, self._error = atlas, error
        self._finished.set()


class FilterAtlasCache:
    """Computes filter atlases once and keeps them in memory and, for built-in models, on disk.

    One instance serves every session of a server (the app keeps it with
    `st.cache_resource`); it is safe to use from several threads at once.
    Atlases are computed in background threads, `max_running` at a time (one
    by default: on a small server a second one would only halve the speed of
    the first), and each atlas is computed at most once at a time.

    Args:
        directory: The folder of the disk cache. Default:
            `paths.cache_dir("atlases")`, resolved on first use.
        memory_entries: How many atlases to keep in memory.
        max_disk_bytes: The disk cache is pruned, least recently used first,
            when it grows past this.
        max_running: How many atlases are computed at the same time.
    """

    def __init__(
        self,
        directory=None,
        memory_entries=MEMORY_ENTRIES,
        max_disk_bytes=MAX_DISK_BYTES,
        max_running=1,
    ):
        self._directory = Path(directory) if directory is not None else None
        self.memory_entries = int(memory_entries)
        self.max_disk_bytes = int(max_disk_bytes)
        self._memory = collections.OrderedDict()
        self._jobs = {}
        self._lock = threading.Lock()
        self._running = threading.Semaphore(max_running)

    @property
    def directory(self):
        """The folder of the disk cache (created if needed)."""
        if self._directory is None:
            self._directory = cache_dir("atlases")
        self._directory.mkdir(parents=True, exist_ok=True)
        return self._directory

    def path(self, request):
        """Where the disk cache keeps the atlas of `request`."""
        return self.directory / request.file_name

    def lookup(self, request, use_disk=True):
        """Returns the atlas of `request` if it is already cached, else None.

        Args:
            request: An `AtlasRequest`.
            use_disk: Whether to look in the disk cache too.

        Returns:
            An `Atlas` with source "memory" or "disk", or None.
        """
        with self._lock:
            patterns = self._memory.get(request.key)
            if patterns is not None:
                self._memory.move_to_end(request.key)
                return Atlas(request, patterns, "memory")
        if not use_disk:
            return None
        patterns = load_atlas(self.path(request), request)
        if patterns is None:
            return None
        self._remember(request, patterns)
        return Atlas(request, patterns, "disk")

    def submit(self, model, request, use_disk=None):
        """Starts computing the atlas of `request`, unless it is cached or under way.

        Args:
            model: The `VisionModel` the request was made for.
            request: An `AtlasRequest` from `atlas_request(model, ...)`.
            use_disk: Whether to read and write the disk cache. Default:
                only for built-in models, whose weights never change; an
                uploaded model's atlases stay in memory.

        Returns:
            An `AtlasJob`: the one already computing this atlas if there is
            one, else a new one (already finished when a cache had the atlas).
        """
        if request.model_name != model.name or request.weights_digest != weights_digest(model):
            raise ValueError(
                f"The request was made for the model '{request.model_name}', not '{model.name}'."
            )
        if use_disk is None:
            use_disk = is_builtin(model)
        with self._lock:
            job = self._jobs.get(request.key)
            if job is not None:
                return job
            job = self._jobs[request.key] = AtlasJob(request)
        cached = self.lookup(request, use_disk=use_disk)
        if cached is not None:
            self._settle(job, atlas=cached)
            return job
        thread = threading.Thread(
            target=self._compute,
            args=(model, job, use_disk),
            name=f"atlas-{request.layer_name}",
            # A server that stops must not wait for an atlas nobody will see.
            daemon=True,
        )
        thread.start()
        return job

    def get_or_compute(self, model, request, progress=None, use_disk=None, poll_seconds=0.1):
        """Returns the atlas of `request`, computing it only if no cache has it.

        Args:
            model, request, use_disk: As for `submit`.
            progress: Optional function called with (done, total) while the
                patterns are computed.
            poll_seconds: How often progress is reported.

        Returns:
            An `Atlas`.

        Raises:
            InputError: If the computation raised one.
        """
        job = self.submit(model, request, use_disk=use_disk)
        while not job.wait(poll_seconds):
            if progress is not None and job.started:
                progress(*job.progress)
        return job.result()

    def running_jobs(self):
        """The jobs not yet finished, oldest first."""
        with self._lock:
            return [job for job in self._jobs.values() if not job.done()]

    def clear_memory(self):
        """Forgets the atlases kept in memory (the disk cache stays)."""
        with self._lock:
            self._memory.clear()

    def _compute(self, model, job, use_disk):
        request = job.request
        try:
            with self._running:
                # Another job may have stored this atlas while this one waited.
                cached = self.lookup(request, use_disk=use_disk)
                if cached is not None:
                    self._settle(job, atlas=cached)
                    return
                job._begin()
                patterns = patterns_module.filter_patterns(
                    model,
                    request.layer_name,
                    request.filter_indices,
                    size=request.height,
                    steps=request.steps,
                    step_size=request.step_size,
                    seed=request.seed,
                    precision=request.precision,
                    progress=job._report,
                )
            patterns.setflags(write=False)
            if use_disk:
                save_atlas(self.path(request), patterns)
                prune(self.directory, self.max_disk_bytes)
            self._remember(request, patterns)
            self._settle(job, atlas=Atlas(request, patterns, "computed"))
        except BaseException as error:  # Handed to whoever waits for the job.
            self._settle(job, error=error)

    def _settle(self, job, atlas=None, error=None):
        with self._lock:
            if self._jobs.get(job.request.key) is job:
                del self._jobs[job.request.key]
        job._finish(atlas=atlas, error=error)

    def _remember(self, request, patterns):
        with self._lock:
            self._memory[request.key] = patterns
            self._memory.move_to_end(request.key)
            while len(self._memory) > self.memory_entries:
                self._memory.popitem(last=False)


def load_atlas(path, request=None):
    """Reads an atlas file, or returns None if it is missing or unusable.

    A file that cannot be read or does not match the request (a truncated or
    foreign file) is removed, so it is computed again.

    Args:
        path: The `.npy` file.
        request: If given, the shape the patterns must have.

    Returns:
        A read-only uint8 array (filters, height, width, 3), or None.
    """
    path = Path(path)
    try:
        patterns = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, EOFError):
        _remove_quietly(path)
        return None
    expected = None
    if request is not None:
        expected = (len(request.filter_indices), request.height, request.width, 3)
    if patterns.dtype != np.uint8 or patterns.ndim != 4 or (
        expected is not None and patterns.shape != expected
    ):
        _remove_quietly(path)
        return None
    try:
        # The access time drives pruning: recently used atlases are kept.
        os.utime(path)
    except OSError:
        pass
    patterns.setflags(write=False)
    return patterns


def save_atlas(path, patterns):
    """Writes an atlas file atomically: to a temporary file, then `os.replace`.

    A disk that is full or read-only only costs the cache: a warning is
    issued and nothing is raised.

    Args:
        path: The `.npy` file to write.
        patterns: uint8 array (filters, height, width, 3).

    Returns:
        True if the file was written.
    """
    path = Path(path)
    patterns = np.asarray(patterns)
    if patterns.dtype != np.uint8 or patterns.ndim != 4:
        raise ValueError(
            f"An atlas must be a uint8 array (n, height, width, 3). Received: "
            f"dtype={patterns.dtype}, shape={patterns.shape}"
        )
    temporary = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=".atlas-", suffix=".tmp")
        with os.fdopen(descriptor, "wb") as file:
            np.save(file, patterns, allow_pickle=False)
        os.replace(temporary, path)
        return True
    except OSError as error:
        warnings.warn(f"Could not cache the filter atlas at {path}: {error}.")
        if temporary is not None:
            _remove_quietly(Path(temporary))
        return False


def prune(directory, max_bytes=MAX_DISK_BYTES):
    """Removes the least recently used atlas files until the folder fits in `max_bytes`.

    Returns:
        The number of files removed.
    """
    entries = []
    for path in Path(directory).glob(f"*{_SUFFIX}"):
        try:
            status = path.stat()
        except OSError:
            continue
        entries.append((status.st_mtime, status.st_size, path))
    total = sum(size for _, size, _ in entries)
    removed = 0
    for _, size, path in sorted(entries):
        if total <= max_bytes:
            break
        if _remove_quietly(path):
            total -= size
            removed += 1
    return removed


def _remove_quietly(path):
    try:
        path.unlink()
        return True
    except OSError:
        return False

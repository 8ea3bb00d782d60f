"""A cache of filter atlases shared by every session, on disk and in memory.

A filter atlas (the book's figure 5-30: the pattern that each filter of a layer
responds to most) takes seconds to minutes of gradient ascent, but for a
built-in model it depends only on fixed weights and fixed parameters. So a
class of thirty students should compute each atlas once: atlases of built-in
models are kept as `.npy` files under `paths.cache_dir("atlases")`, which
survive server restarts; atlases of every model (uploads too) are also kept in
a small in-memory LRU, so moving a slider never reads them again.

An atlas's key holds everything its pixels depend on: the model's name, a
digest of its weights and one of its architecture, its preprocessing
(`VisionModel.preprocess_key`), the layer, the filters, the pattern size, the
steps, the step size, the seed, the precision, the Keras and TensorFlow
versions, and `ATLAS_FORMAT_VERSION` plus a digest of the source of every
`convviz_core` module the patterns depend on (`dependency_modules`), so that
a change to the algorithm, the graph runner or a preprocessing preset never
serves a stale picture.

Atlases are computed by the server's one `convviz_core.jobs.JobPool`, so a
computation survives the rerun of the page that asked for it, identical
requests share one computation, each session has at most one atlas under
way, and a job nobody waits for any more is cancelled (see `jobs`). A
cancelled or failed computation stores nothing. Files are written to a
temporary name in the same folder and renamed with `os.replace`, so a reader
never sees half a file.
"""

import ast
import collections
import dataclasses
import functools
import hashlib
import importlib
import importlib.util
import json
import os
import re
import tempfile
import threading
import types
import uuid
import warnings
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from convviz_core.errors import InputError
from convviz_core.features import patterns as patterns_module
from convviz_core.jobs import JobPool, JobTicket, Priority, RemoteCall, wait_for
from convviz_core.models.registry import BUILTIN_MODELS
from convviz_core.paths import cache_dir

# Bump when the meaning or layout of a stored atlas changes.
ATLAS_FORMAT_VERSION = 3
# The disk cache is pruned, oldest first, above this size. An 8x8 atlas of a
# 224x224 model is 9.6 MB, so this keeps about two hundred of them.
MAX_DISK_BYTES = 2 * 1024**3
# Atlases kept in memory per `FilterAtlasCache` (9.6 MB each at most for 64
# filters of 224x224).
MEMORY_ENTRIES = 16
# At most this many filters in one atlas: the book's 8x8 grid.
MAX_FILTERS = 64
# The modules whose code decides an atlas's pixels, with every `convviz_core`
# module they import: the optimiser, the graph runner it drives, the
# `VisionModel` and its preprocessing, the registry's presets, this cache.
ALGORITHM_ROOTS = (
    "convviz_core.features.patterns",
    "convviz_core.features.atlas_cache",
    "convviz_core.models.vision_model",
    "convviz_core.models.registry",
)

_SUFFIX = ".npy"


@dataclasses.dataclass(frozen=True)
class AtlasRequest:
    """Everything the patterns of one atlas depend on; build it with `atlas_request`.

    Attributes:
        model_name: The `VisionModel`'s name.
        weights_digest: `weights_digest(model)`.
        architecture_digest: `architecture_digest(model)`.
        preprocess_key: `model.preprocess_key`.
        layer_name: A layer from `model.layer_names`.
        filter_indices: The filters, in grid order.
        height, width: The size the patterns are optimised at.
        steps, step_size, seed, precision: As for `filter_patterns`.
        method, objective, schedule: As for `filter_patterns`.
    """

    model_name: str
    weights_digest: str
    architecture_digest: str
    preprocess_key: str
    layer_name: str
    filter_indices: tuple
    height: int
    width: int
    steps: int
    step_size: float
    seed: int
    precision: str
    method: str = "gradient-ascent"
    objective: str = "channel"
    schedule: str = "book"

    @property
    def key(self):
        """A hex digest naming this atlas; equal requests have equal keys."""
        fields = dataclasses.asdict(self)
        fields["filter_indices"] = list(self.filter_indices)
        fields["format_version"] = ATLAS_FORMAT_VERSION
        fields["algorithm"] = _algorithm_digest()
        fields["keras"] = keras.__version__
        fields["tensorflow"] = tf.__version__
        text = json.dumps(fields, sort_keys=True)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]

    @property
    def file_name(self):
        """The cache file's name: the model's name (made safe) and the key."""
        safe_name = re.sub(r"[^A-Za-z0-9_.-]", "_", self.model_name)[:40] or "model"
        return f"{safe_name}-{self.key}{_SUFFIX}"

    def matches(self, model):
        """Whether this request was made for `model` (same name, weights, architecture, preprocessing)."""
        return (
            self.model_name == model.name
            and self.weights_digest == weights_digest(model)
            and self.architecture_digest == architecture_digest(model)
            and self.preprocess_key == model.preprocess_key
        )


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


def _module_source(module_name):
    """The source text of a module of this package (what the algorithm digest reads)."""
    spec = importlib.util.find_spec(module_name)
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        return ""
    return Path(spec.origin).read_text(encoding="utf-8")


def _is_module(name):
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def _imported_modules(module_name, source):
    """The `convviz_core` modules a module's source imports, wherever the import statement is."""
    package = module_name if _module_source_is_package(module_name) else module_name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = importlib.util.resolve_name("." * node.level + (node.module or ""), package) if node.level else node.module
            found.add(base)
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                if _is_module(candidate):
                    found.add(candidate)
                elif base == "convviz_core":
                    # The package's lazy names (`from convviz_core import grad_cam`).
                    value = getattr(importlib.import_module(base), alias.name, None)
                    owner = getattr(value, "__name__", None) if isinstance(value, types.ModuleType) else getattr(value, "__module__", None)
                    if owner:
                        found.add(owner)
    return {name for name in found if name == "convviz_core" or name.startswith("convviz_core.")}


def _module_source_is_package(module_name):
    spec = importlib.util.find_spec(module_name)
    return spec is not None and spec.submodule_search_locations is not None


def dependency_modules(roots=ALGORITHM_ROOTS):
    """Every `convviz_core` module the roots import, transitively, with the packages that hold them.

    Returns:
        A sorted list of module names.
    """
    seen, pending = set(), list(roots)
    while pending:
        name = pending.pop()
        if name in seen:
            continue
        seen.add(name)
        # Importing a module runs its packages' `__init__` too.
        parts = name.split(".")
        pending.extend(".".join(parts[:index]) for index in range(1, len(parts)))
        pending.extend(_imported_modules(name, _module_source(name)))
    return sorted(seen)


@functools.lru_cache(maxsize=1)
def _algorithm_digest():
    # Any edit to the code the patterns depend on (the ascent, the start
    # image, the deprocessing, the graph runner, a preprocessing preset)
    # changes this digest, and so every key.
    digest = hashlib.sha256()
    for name in dependency_modules():
        digest.update(f"{name}\n{_module_source(name)}\n".encode("utf-8"))
    return digest.hexdigest()[:16]


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


def architecture_digest(model):
    """Returns a digest of a `VisionModel`'s architecture (its Keras config), computed once per model.

    Two uploads with the same weights but another activation, say, get
    different digests. A model whose config cannot be written as JSON gets a
    digest unique to this `VisionModel`, so its atlases are never shared.
    """

    def compute():
        try:
            config = keras.saving.serialize_keras_object(model.keras_model)
            text = json.dumps(config, sort_keys=True)
        except (TypeError, ValueError, NotImplementedError, AttributeError):
            text = f"unique:{uuid.uuid4().hex}"
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]

    return model.cached_function(("architecture_digest",), compute)


def atlas_request(
    model,
    layer_name,
    filter_indices,
    size=64,
    steps=None,
    step_size=None,
    seed=0,
    precision=None,
    method="gradient-ascent",
    objective="channel",
    schedule="book",
):
    """Validates the parameters of an atlas and gathers them into an `AtlasRequest`.

    Args:
        model: A `VisionModel`.
        layer_name: A layer from `model.layer_names`.
        filter_indices: At most `MAX_FILTERS` channels of that layer.
        size: Pattern side where the layer allows any size
            (`patterns.pattern_size`); otherwise the model's input size is
            used (so the key does not depend on `size` there).
        steps, step_size, seed, method, objective, schedule: As for
            `filter_patterns` (None: the method's defaults).
        precision: "float32", "bfloat16" or None for the default.

    Returns:
        An `AtlasRequest`.

    Raises:
        InputError: For an unknown layer, no filters, more than
            `MAX_FILTERS` or one out of the layer's range, or steps or a
            step size out of range (`patterns.check_pattern_request`).
    """
    method, objective = patterns_module.check_method(method, objective)
    defaults = patterns_module.method_defaults(method)
    steps = defaults[0] if steps is None else steps
    step_size = defaults[1] if step_size is None else step_size
    filter_indices, steps, step_size, precision = patterns_module.check_pattern_request(
        model, layer_name, filter_indices, steps, step_size, precision, max_filters=MAX_FILTERS
    )
    schedule = patterns_module.check_schedule(schedule)
    if method == "fourier":
        # Lucid's recipe runs in float32 whatever the CPU, with Adam.
        precision, schedule = "float32", "book"
    height, width = patterns_module.pattern_size(model, size, layer_name)
    return AtlasRequest(
        model_name=model.name,
        weights_digest=weights_digest(model),
        architecture_digest=architecture_digest(model),
        preprocess_key=model.preprocess_key,
        layer_name=layer_name,
        filter_indices=filter_indices,
        height=int(height),
        width=int(width),
        steps=steps,
        step_size=step_size,
        seed=int(seed),
        precision=precision,
        method=method,
        objective=objective,
        schedule=schedule,
    )


def is_builtin(model):
    """Whether a `VisionModel` is one of ConvViz's built-in models (by name)."""
    return model.name in BUILTIN_MODELS


def describe(request):
    """What an atlas request computes, in words, for progress bars and messages."""
    count = len(request.filter_indices)
    if count == 1:
        return f"the pattern of filter {request.filter_indices[0]} of {request.layer_name}"
    return f"the {count} patterns of {request.layer_name}"


class FilterAtlasCache:
    """Computes filter atlases once and keeps them in memory and, for built-in models, on disk.

    One instance serves every session of a server (the app keeps it with
    `st.cache_resource`); it is safe to use from several threads at once.
    Atlases are computed by a `convviz_core.jobs.JobPool`: the server's one
    pool for long work, or a private one-worker pool.

    Args:
        directory: The folder of the disk cache. Default:
            `paths.cache_dir("atlases")`, resolved on first use.
        memory_entries: How many atlases to keep in memory.
        max_disk_bytes: The disk cache is pruned, least recently used first,
            when it grows past this.
        pool: The `JobPool` that computes atlases. Default: a new one with
            one worker.
    """

    def __init__(
        self,
        directory=None,
        memory_entries=MEMORY_ENTRIES,
        max_disk_bytes=MAX_DISK_BYTES,
        pool=None,
    ):
        self._directory = Path(directory) if directory is not None else None
        self.memory_entries = int(memory_entries)
        self.max_disk_bytes = int(max_disk_bytes)
        self.pool = pool if pool is not None else JobPool(workers=1)
        self._memory = collections.OrderedDict()
        self._lock = threading.Lock()

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

    def submit(
        self,
        model,
        request,
        use_disk=None,
        session_id=None,
        priority=Priority.NORMAL,
        wait_in_line=False,
        time_limit=None,
        source=None,
    ):
        """Returns the atlas of `request` at once if a cache has it, else queues its computation.

        Args:
            model: The `VisionModel` the request was made for.
            request: An `AtlasRequest` from `atlas_request(model, ...)`.
            use_disk: Whether to read and write the disk cache. Default:
                only for built-in models, whose weights never change; an
                uploaded model's atlases stay in memory.
            session_id, priority, wait_in_line, time_limit: As for
                `JobPool.submit_job`: the session's earlier atlas is
                cancelled unless another session waits for it too.
            source: For an uploaded model, the `models.sources.ModelSource`
                a queue's worker loads it from (its file in the shared
                cache), or None to compute its atlases in this process.

        Returns:
            A `convviz_core.jobs.JobTicket` whose result is an `Atlas`:
            already done when a cache had the atlas, else the job computing
            it (shared with anyone who asked for the same atlas).

        Raises:
            ValueError: If the request was made for another model.
            convviz_core.jobs.QueueFull: If too many jobs are ahead and
                `wait_in_line` is False.
        """
        if not request.matches(model):
            raise ValueError(
                f"The request was made for the model '{request.model_name}' (with its weights "
                f"and preprocessing), not '{model.name}'."
            )
        if use_disk is None:
            use_disk = is_builtin(model)
        cached = self.lookup(request, use_disk=use_disk)
        if cached is not None:
            return JobTicket.completed(("atlas", request.key), cached, describe(request))

        if use_disk and is_builtin(model) and getattr(self.pool, "runs_remote_calls", False):
            # On a queue's workers (`convviz_core.job_queue`): the worker loads
            # the built-in model by name and writes the atlas to the shared
            # disk cache; this replica reads it from there. An uploaded
            # model's atlas stays in this process (below): the model lives in
            # this replica's memory only, and its atlases are not kept on disk.
            compute = RemoteCall(
                "convviz_core.features.shared_atlas:compute_shared_atlas",
                (request,),
                finish=functools.partial(self._read_shared_atlas, request),
            )
        elif not use_disk and source is not None and getattr(self.pool, "runs_remote_calls", False):
            # An uploaded model's atlas on a queue's worker: the worker loads
            # the model from its file in the shared cache (through the upload
            # check) and sends the patterns back; they stay in this
            # replica's memory only, as an uploaded model's atlases do.
            compute = RemoteCall(
                "convviz_core.features.shared_atlas:compute_atlas_of_source",
                (source, request),
                finish=functools.partial(self._keep_returned_atlas, request),
            )
        else:

            def compute(progress):
                return self._compute(model, request, use_disk, progress)

        return self.pool.submit_job(
            ("atlas", request.key),
            compute,
            session_id=session_id,
            priority=priority,
            time_limit=time_limit,
            wait_in_line=wait_in_line,
            description=describe(request),
        )

    def _compute(self, model, request, use_disk, progress):
        """Computes an atlas in a job (unless another job has stored it since), and caches it."""
        # Another job may have stored this atlas since `submit` looked.
        cached = self.lookup(request, use_disk=use_disk)
        if cached is not None:
            return cached
        # Looked up at call time, so a test may wrap it.
        patterns = patterns_module.filter_patterns(
            model,
            request.layer_name,
            request.filter_indices,
            size=request.height,
            steps=request.steps,
            step_size=request.step_size,
            seed=request.seed,
            precision=request.precision,
            progress=progress,
            method=request.method,
            objective=request.objective,
            schedule=request.schedule,
        )
        # Only a finished computation gets here: a cancelled one raised
        # from `progress`, so a cache never holds part of an atlas.
        patterns.setflags(write=False)
        if use_disk:
            save_atlas(self.path(request), patterns)
            prune(self.directory, self.max_disk_bytes)
        self._remember(request, patterns)
        return Atlas(request, patterns, "computed")

    def _read_shared_atlas(self, request, source):
        """The atlas a queue's worker stored in the shared disk cache (`compute_shared_atlas`)."""
        atlas = self.lookup(request, use_disk=True)
        if atlas is None:
            raise InputError(
                f"A worker computed {describe(request)}, but this server cannot find it in {self.directory}. "
                "The app and its workers must share one cache folder (the same CONVVIZ_CACHE_DIR on a shared volume)."
            )
        return Atlas(request, atlas.patterns, source)

    def _keep_returned_atlas(self, request, patterns):
        """Keeps in memory the patterns a queue's worker sent back (`compute_atlas_of_source`)."""
        patterns = np.array(patterns)
        patterns.setflags(write=False)
        self._remember(request, patterns)
        return Atlas(request, patterns, "computed")

    def get_or_compute(self, model, request, progress=None, use_disk=None, poll_seconds=0.1, **submit_options):
        """Returns the atlas of `request`, computing it only if no cache has it (waiting in line).

        Args:
            model, request, use_disk: As for `submit`.
            progress: Optional function called with (done, total) while the
                patterns are computed.
            poll_seconds: How often progress is reported.
            **submit_options: `session_id`, `priority`, `time_limit` for
                `submit`.

        Returns:
            An `Atlas`.

        Raises:
            InputError: If the computation raised one.
            convviz_core.jobs.JobCancelled: If the job was cancelled.
        """
        submit_options.setdefault("wait_in_line", True)
        ticket = self.submit(model, request, use_disk=use_disk, **submit_options)

        def report(status):
            if progress is not None and status.state == "running":
                progress(status.done, status.total)

        return wait_for(ticket, report, poll_seconds)

    def running_jobs(self):
        """Tickets watching the atlases under way or queued (they do not count as waiters)."""
        return self.pool.unfinished_tickets(lambda key: isinstance(key, tuple) and key[:1] == ("atlas",))

    def clear_memory(self):
        """Forgets the atlases kept in memory (the disk cache stays)."""
        with self._lock:
            self._memory.clear()

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

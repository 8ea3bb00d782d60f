"""Reads PyTorch state dicts saved in the legacy (pre-zip) format, with numpy only.

ConvViz's default model ships as a `torch.save` file, and torch is a large
dependency we do not want. The legacy format is a handful of pickles followed by
raw storage bytes, so numpy can read it. The file is untrusted input, so it is
unpickled with an allow-list: the few globals a state dict needs are accepted,
every other global is refused before anything is called, and no pickled code
can run.

The layout of a legacy file, as `torch.serialization._legacy_save` writes it:

1. a pickle of the magic number,
2. a pickle of the protocol version (1001),
3. a pickle of system information (endianness, type sizes),
4. the main pickle: the state dict, whose tensors refer to storages through
   persistent ids,
5. a pickle of the list of storage keys, in the order their bytes follow,
6. for each storage: its element count as a little-endian int64, then its raw
   bytes.
"""

import collections
import os
import pickle
import struct

import numpy as np

from convviz_core.errors import InputError

_LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL_VERSION = 1001

# The longest state dict we accept; a guard against hostile files that claim
# billions of storages.
_MAXIMUM_STORAGE_COUNT = 100_000


class _StorageType:
    """Stands for a `torch.<Name>Storage` class: only its element type is kept.

    Instances are deliberately not callable, so a pickle that tries to call a
    storage class (rather than just name it in a persistent id) fails.
    """

    __slots__ = ("name", "dtype")

    def __init__(self, name, dtype):
        self.name = name
        self.dtype = np.dtype(dtype)


class _StorageReference:
    """A storage named by the main pickle; its bytes come later in the file."""

    __slots__ = ("key", "dtype", "element_count")

    def __init__(self, key, dtype, element_count):
        self.key = key
        self.dtype = dtype
        self.element_count = element_count


class _PendingTensor:
    """A tensor whose storage bytes have not been read yet.

    `__slots__` without `__dict__` means a pickle cannot set arbitrary
    attributes on it through the BUILD opcode.
    """

    __slots__ = ("storage", "storage_offset", "shape", "strides")

    def __init__(self, storage, storage_offset, shape, strides):
        self.storage = storage
        self.storage_offset = storage_offset
        self.shape = shape
        self.strides = strides


def _is_int_tuple(value):
    return isinstance(value, tuple) and all(
        isinstance(item, int) and not isinstance(item, bool) for item in value
    )


def _rebuild_tensor(storage, storage_offset, shape, strides, *unused_arguments):
    """Stands in for `torch._utils._rebuild_tensor_v2`.

    The unused arguments are `requires_grad`, the backward hooks and, in newer
    files, metadata; none of them matters for reading weights.

    Raises:
        pickle.UnpicklingError: If the arguments are not those of a tensor.
    """
    if not isinstance(storage, _StorageReference):
        raise pickle.UnpicklingError(
            f"A tensor must be built on a storage; received {type(storage).__name__}."
        )
    if not (isinstance(storage_offset, int) and _is_int_tuple(shape) and _is_int_tuple(strides)):
        raise pickle.UnpicklingError(
            "A tensor's offset, shape and strides must be integers; received "
            f"offset={storage_offset!r}, shape={shape!r}, strides={strides!r}."
        )
    if len(shape) != len(strides):
        raise pickle.UnpicklingError(
            f"A tensor's shape {shape} and strides {strides} differ in length."
        )
    return _PendingTensor(storage, storage_offset, shape, strides)


# Exactly the globals that a state dict saved by legacy `torch.save` refers to.
# Anything else in a file we are asked to read is refused.
_ALLOWED_GLOBALS = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch", "FloatStorage"): _StorageType("FloatStorage", "<f4"),
    ("torch", "LongStorage"): _StorageType("LongStorage", "<i8"),
}


class _ForbiddenGlobalError(pickle.UnpicklingError):
    """Raised by the unpickler for a global outside the allow-list."""


class _RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the allow-listed globals."""

    def __init__(self, file):
        super().__init__(file)
        self.storages = {}

    def find_class(self, module, name):
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise _ForbiddenGlobalError(
                f"The file refers to `{module}.{name}`, which a PyTorch state dict "
                "never needs; refusing to load it, since it could run code."
            ) from None

    def persistent_load(self, persistent_id):
        if not (isinstance(persistent_id, tuple) and len(persistent_id) == 6
                and persistent_id[0] == "storage"):
            raise pickle.UnpicklingError(
                f"Unsupported persistent id {persistent_id!r}; expected a storage."
            )
        _, storage_type, key, unused_location, element_count, view = persistent_id
        if view is not None:
            # Storage views were written only by very old PyTorch versions.
            raise pickle.UnpicklingError(
                f"Storage {key!r} is a storage view, which is not supported."
            )
        if not isinstance(storage_type, _StorageType):
            raise pickle.UnpicklingError(
                f"Storage {key!r} has an unsupported type {storage_type!r}."
            )
        if not isinstance(key, str) or not isinstance(element_count, int) or element_count < 0:
            raise pickle.UnpicklingError(
                f"Storage id {persistent_id!r} has a bad key or element count."
            )
        reference = self.storages.get(key)
        if reference is None:
            reference = _StorageReference(key, storage_type.dtype, element_count)
            self.storages[key] = reference
        elif reference.dtype != storage_type.dtype or reference.element_count != element_count:
            raise pickle.UnpicklingError(
                f"Storage {key!r} is described in two incompatible ways."
            )
        return reference


def _load_pickle(unpickler, description, path):
    """Runs `unpickler`, turning every failure into an `InputError`."""
    try:
        return unpickler.load()
    except _ForbiddenGlobalError as error:
        raise InputError(f"{path}: {error}") from None
    except Exception as error:
        # Everything in the file is untrusted; any failure to parse it means it
        # is not a file we can read, whatever exception the parser raised.
        raise InputError(
            f"{path} is not a legacy PyTorch `torch.save` file: cannot read its "
            f"{description} ({type(error).__name__}: {error})."
        ) from error


def _read_exactly(file, byte_count, description, path):
    # Checking against the file's size first means a hostile byte count cannot
    # make us allocate more memory than the file holds.
    remaining = os.fstat(file.fileno()).st_size - file.tell()
    data = file.read(byte_count) if byte_count <= remaining else b""
    if len(data) != byte_count:
        raise InputError(
            f"{path} is truncated: expected {byte_count} bytes of {description}, "
            f"found {min(remaining, byte_count)}. Re-install or re-download the file."
        )
    return data


def _materialize(name, pending, storage_arrays, path):
    """Builds a numpy array from a tensor's storage, offset, shape and strides."""
    storage = storage_arrays[pending.storage.key]
    if any(size < 0 for size in pending.shape) or any(stride < 0 for stride in pending.strides):
        raise InputError(f"{path}: tensor {name!r} has a negative size or stride.")
    if pending.storage_offset < 0:
        raise InputError(f"{path}: tensor {name!r} has a negative storage offset.")
    if 0 in pending.shape:
        return np.zeros(pending.shape, dtype=storage.dtype)
    last_index = pending.storage_offset + sum(
        (size - 1) * stride for size, stride in zip(pending.shape, pending.strides)
    )
    if last_index >= storage.size:
        raise InputError(
            f"{path}: tensor {name!r} (shape {pending.shape}, strides "
            f"{pending.strides}, offset {pending.storage_offset}) reaches past the "
            f"end of its storage of {storage.size} elements."
        )
    view = np.lib.stride_tricks.as_strided(
        storage[pending.storage_offset:],
        shape=pending.shape,
        strides=tuple(stride * storage.itemsize for stride in pending.strides),
        writeable=False,
    )
    # A copy detaches the tensor from the shared storage buffer and makes it
    # contiguous, native-endian and writable.
    return np.array(view, dtype=storage.dtype.newbyteorder("="), order="C", copy=True)


def read_state_dict(path):
    """Reads a PyTorch state dict saved by legacy (pre-zip) `torch.save`.

    Only the globals a state dict needs (`collections.OrderedDict`,
    `torch._utils._rebuild_tensor_v2`, `torch.FloatStorage`,
    `torch.LongStorage`) are accepted; a file that refers to any other global
    is refused before any of it runs.

    Args:
        path: Path of the `.pth` file (str or `os.PathLike`).

    Returns:
        A dict from parameter name to a numpy array (float32 for weights, int64
        for counters such as `num_batches_tracked`), in the file's order.

    Raises:
        InputError: If the file is not a legacy `torch.save` state dict, is
            truncated, or refers to a global outside the allow-list.
    """
    path = os.fspath(path)
    with open(path, "rb") as file:
        head = file.read(4)
        if head.startswith(b"PK"):
            raise InputError(
                f"{path} is a zip-format `torch.save` file (PyTorch 1.6 and later); "
                "only the legacy format is supported. Re-save it with "
                "`torch.save(state_dict, path, _use_new_zipfile_serialization=False)`."
            )
        file.seek(0)

        magic_number = _load_pickle(_RestrictedUnpickler(file), "magic number", path)
        if magic_number != _LEGACY_MAGIC_NUMBER:
            raise InputError(
                f"{path} is not a legacy PyTorch `torch.save` file: its magic number "
                f"is {magic_number!r}."
            )
        protocol_version = _load_pickle(_RestrictedUnpickler(file), "protocol version", path)
        if protocol_version != _LEGACY_PROTOCOL_VERSION:
            raise InputError(
                f"{path} uses torch.save protocol version {protocol_version!r}; "
                f"only {_LEGACY_PROTOCOL_VERSION} is supported."
            )
        system_information = _load_pickle(_RestrictedUnpickler(file), "system information", path)
        if not isinstance(system_information, dict) or not system_information.get(
            "little_endian", False
        ):
            raise InputError(
                f"{path} was saved on a big-endian machine or lacks system "
                f"information ({system_information!r}); only little-endian files "
                "are supported."
            )

        # This unpickler is kept: it records the storages the tensors refer to.
        unpickler = _RestrictedUnpickler(file)
        state_dict = _load_pickle(unpickler, "state dict", path)
        if not isinstance(state_dict, dict) or not all(
            isinstance(name, str) and isinstance(value, _PendingTensor)
            for name, value in state_dict.items()
        ):
            raise InputError(
                f"{path} does not hold a state dict (a mapping from names to tensors)."
            )

        storage_keys = _load_pickle(_RestrictedUnpickler(file), "storage keys", path)
        if not isinstance(storage_keys, list) or len(storage_keys) > _MAXIMUM_STORAGE_COUNT:
            raise InputError(f"{path} has a malformed list of storage keys.")
        if set(storage_keys) != set(unpickler.storages):
            raise InputError(
                f"{path}: the storages listed at the end of the file differ from "
                "those the tensors use."
            )

        storage_arrays = {}
        for key in storage_keys:
            reference = unpickler.storages[key]
            (element_count,) = struct.unpack(
                "<q", _read_exactly(file, 8, f"the size of storage {key}", path)
            )
            if element_count != reference.element_count:
                raise InputError(
                    f"{path}: storage {key} holds {element_count} elements, but the "
                    f"state dict says {reference.element_count}."
                )
            data = _read_exactly(
                file,
                element_count * reference.dtype.itemsize,
                f"storage {key}",
                path,
            )
            storage_arrays[key] = np.frombuffer(data, dtype=reference.dtype)

    return {
        name: _materialize(name, pending, storage_arrays, path)
        for name, pending in state_dict.items()
    }

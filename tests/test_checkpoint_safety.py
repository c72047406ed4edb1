"""gf.load never runs code from a file unless told it is trusted (weights_only=False)."""
import collections
import os
import random

import numpy as np
import pytest

import gradflow as gf
from gradflow import checkpoint
from gradflow.checkpoint import CheckpointError, UnsafeCheckpointError


class RunsShell:
    """What an attacker pickles: unpickling it calls os.system."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


class CallsEval:
    def __reduce__(self):
        return eval, ("__import__('os').getpid()",)


class Custom:
    """A harmless user class: still not in the allow list."""

    def __init__(self, value=3):
        self.value = value


def write_checkpoint(path, obj):
    """A well-formed checkpoint (magic, length, a valid SHA-256) around any pickle: what anyone can craft."""
    gf.save(obj, path)
    return path


def test_os_system_payload_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    path = write_checkpoint(tmp_path / "evil.ckpt", {"model": {"w": gf.ones(2)}, "x": RunsShell(marker)})
    with pytest.raises(UnsafeCheckpointError, match=r"refused global (posix|nt|os)\.system") as info:
        gf.load(path)
    assert str(path) in str(info.value) and "weights_only=False" in str(info.value)
    assert not marker.exists()


def test_the_same_payload_runs_with_the_explicit_opt_in(tmp_path):
    # proves the crafted file really is an attack, so the refusal above is meaningful
    marker = tmp_path / "pwned"
    path = write_checkpoint(tmp_path / "evil.ckpt", [RunsShell(marker)])
    gf.load(path, weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize("payload, name", [
    (CallsEval(), "builtins.eval"),
    (Custom(), "tests.test_checkpoint_safety.Custom"),
    (random.Random(0), "random.Random"),
    (collections.defaultdict(list), "collections.defaultdict"),
    (np.random.default_rng(0), "numpy.random"),
    (print, "builtins.print"),
])
def test_unexpected_globals_are_named(tmp_path, payload, name):
    path = write_checkpoint(tmp_path / "x.ckpt", {"payload": payload})
    with pytest.raises(UnsafeCheckpointError, match="refused global " + name.replace(".", r"\.")):
        gf.load(path)


def test_nested_payloads_are_refused(tmp_path):
    marker = tmp_path / "pwned"
    deep = {"a": [1, (2, {"b": collections.OrderedDict(c=[{"d": (RunsShell(marker),)}])})]}
    path = write_checkpoint(tmp_path / "nested.ckpt", {"model": gf.zeros(3), "optimizer": deep})
    with pytest.raises(UnsafeCheckpointError, match="refused global"):
        gf.load(path)
    assert not marker.exists()


def test_payload_hidden_in_an_object_array_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    hidden = np.empty(2, dtype=object)
    hidden[0], hidden[1] = 1.5, RunsShell(marker)
    path = write_checkpoint(tmp_path / "objarray.ckpt", {"w": hidden})
    with pytest.raises(UnsafeCheckpointError):
        gf.load(path)
    assert not marker.exists()


def test_hand_written_pickle_opcodes_are_refused(tmp_path):
    # Not through pickle.dumps: a GLOBAL opcode naming subprocess.check_output, as a crafted file would.
    payload = b"csubprocess\ncheck_output\n(S'true'\ntR."
    data = checkpoint.MAGIC + checkpoint._HEADER.pack(
        checkpoint.VERSION, len(payload), __import__("hashlib").sha256(payload).digest()) + payload
    path = tmp_path / "raw.ckpt"
    path.write_bytes(data)
    with pytest.raises(UnsafeCheckpointError, match=r"subprocess\.check_output"):
        gf.load(path)


def test_everything_a_checkpoint_holds_loads_exactly(tmp_path):
    state = {
        "model": collections.OrderedDict(w=gf.randn(3, 4), b=gf.zeros(4, dtype=gf.float64)),
        "arrays": [np.arange(6, dtype=np.int64).reshape(2, 3), np.zeros((2, 4))[:, ::2], np.ones(3, np.float16),
                   np.array([True, False]), np.zeros(0, np.uint8)],
        "scalars": [np.float64(1.5), np.int64(-3), np.float32(2.0), np.bool_(True)],
        "dtype": np.dtype("float32"),
        "numpy_rng": np.random.get_state(), "python_rng": random.getstate(),
        "gradflow_rng": gf.random.get_rng_state(),
        "plain": {"t": (1, 2.5, "s", None, True, b"x", 1j), "s": {1, 2}, "f": frozenset({3})},
    }
    path = write_checkpoint(tmp_path / "ok.ckpt", state)
    back = gf.load(path)
    assert isinstance(back["model"], collections.OrderedDict)
    for k, t in state["model"].items():
        assert back["model"][k].dtype == t.dtype and np.array_equal(back["model"][k].numpy(), t.numpy())
    for a, b in zip(state["arrays"], back["arrays"]):
        assert a.dtype == b.dtype and np.array_equal(a, b)
    assert back["scalars"] == state["scalars"] and [type(s) for s in back["scalars"]] == [type(s) for s in
                                                                                          state["scalars"]]
    assert back["dtype"] == np.float32 and back["plain"] == state["plain"]
    assert back["python_rng"] == state["python_rng"] and back["gradflow_rng"] == state["gradflow_rng"]
    assert back["numpy_rng"][0] == "MT19937" and np.array_equal(back["numpy_rng"][1], state["numpy_rng"][1])


def test_model_and_optimizer_state_dicts_round_trip(tmp_path):
    model = gf.nn.Sequential(gf.nn.Conv2d(2, 3, 3), gf.nn.BatchNorm2d(3))
    opt = gf.optim.Adam(model.parameters(), lr=1e-3)
    model(gf.randn(2, 2, 5, 5)).sum().backward()
    opt.step()
    sched = gf.optim.lr_scheduler.MultiStepLR(opt, [2, 4])
    gf.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict()},
            tmp_path / "m.ckpt")
    back = gf.load(tmp_path / "m.ckpt")
    model.load_state_dict(back["model"])
    opt.load_state_dict(back["optimizer"])
    sched.load_state_dict(back["scheduler"])


def test_add_safe_globals_allows_a_trusted_class(tmp_path):
    path = write_checkpoint(tmp_path / "c.ckpt", {"c": Custom(7)})
    with pytest.raises(UnsafeCheckpointError):
        gf.load(path)
    checkpoint.add_safe_globals([Custom])
    try:
        assert gf.load(path)["c"].value == 7
        assert ("tests.test_checkpoint_safety", "Custom") in checkpoint.get_safe_globals()
    finally:
        checkpoint._user_safe_globals.clear()


def test_unsafe_file_is_not_skipped_by_the_fallback(tmp_path):
    # A crafted last.ckpt must stop the run loudly, not be mistaken for damage and replaced by .prev.
    path = tmp_path / "last.ckpt"
    gf.save({"ok": 1}, path)
    gf.save({"x": CallsEval()}, path, keep_previous=True)
    with pytest.raises(UnsafeCheckpointError, match="builtins.eval"):
        checkpoint.load_with_fallback(path)


def test_unsafe_error_is_a_checkpoint_error():
    # the CLI reports CheckpointErrors as clean one-line errors; a refusal must be one of them
    assert issubclass(UnsafeCheckpointError, CheckpointError)

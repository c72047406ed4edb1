import numpy as np
import pytest
from hypothesis import strategies as st

import gradflow.functional as F
from tests.opinfo import ErrorInput, OpInfo, Sample, arrays, op_tests

torch = pytest.importorskip("torch")


@st.composite
def pad_samples(d):
    mode = d(st.sampled_from(["constant", "reflect", "replicate", "circular"]))
    ndim = d(st.integers(3, 4)) if mode != "constant" else d(st.integers(1, 4))
    shape = tuple(d(st.integers(2, 4)) for _ in range(ndim))
    padded_dims = ndim - 2 if mode != "constant" else d(st.integers(1, ndim))   # torch: last ndim-2 dims
    pad = []
    for i in range(padded_dims):
        n = shape[ndim - 1 - i]
        top = n - 1 if mode == "reflect" else n
        pad += [d(st.integers(0, top)), d(st.integers(0, top))]
    kwargs = dict(pad=tuple(pad), mode=mode)
    if mode == "constant":
        kwargs["value"] = d(st.floats(-2, 2))
    return Sample((d(arrays(shape)),), kwargs)


OPS = [
    OpInfo("pad", F.pad, pad_samples(), torch_op=torch.nn.functional.pad,
           errors=(ErrorInput(Sample((np.ones((1, 1, 3)),), dict(pad=(3, 0), mode="reflect")), ValueError, "at most 2"),
                   ErrorInput(Sample((np.ones((1, 1, 3)),), dict(pad=(1,))), ValueError, "even number"),
                   ErrorInput(Sample((np.ones((1, 1, 3)),), dict(pad=(1, 1), mode="mirror")), ValueError, "mode"))),
    OpInfo("linear", F.linear, st.integers(1, 3).flatmap(lambda n: st.tuples(
        arrays((2, n)), arrays((3, n)), st.one_of(st.none(), arrays((3,))))).map(lambda t: Sample(t)),
           torch_op=torch.nn.functional.linear,
           errors=(ErrorInput(Sample((np.ones((2, 3)), np.ones((4, 2)))), ValueError, "features"),)),
]
test_gradcheck, test_matches_torch, test_errors = op_tests(OPS)

"""pair(): the one int-or-pair argument check shared by conv, pool, interpolate and the conv layers."""
import numpy as np
import pytest

from gradflow.ops.arguments import pair


@pytest.mark.parametrize("value,expected", [(3, (3, 3)), ((1, 2), (1, 2)), ([4], (4, 4)), (np.int64(2), (2, 2)),
                                            ((np.int32(1), 5), (1, 5))])
def test_pairs_of_ints(value, expected):
    out = pair(value, "stride", "op")
    assert out == expected and all(type(v) is int for v in out)


def test_real_numbers_when_not_integers():
    assert pair(1.5, "scale_factor", "interpolate", integers=False) == (1.5, 1.5)
    assert pair((2, 0.5), "scale_factor", "interpolate", integers=False) == (2, 0.5)


@pytest.mark.parametrize("value,error,message", [
    (1.5, TypeError, "op: stride must be an int or a pair of ints, got 1.5"),
    (True, TypeError, "stride must be an int"),
    ((1, "2"), TypeError, "stride must be an int"),
    ((1, 2, 3), ValueError, r"op: stride must be an int or a pair of ints \(one per spatial dim\)"),
    ((), ValueError, "one per spatial dim"),
    (0, ValueError, "op: stride must be positive, got 0"),
    ((1, 0), ValueError, r"stride must be positive, got \(1, 0\)"),
])
def test_bad_values_name_the_argument(value, error, message):
    with pytest.raises(error, match=message):
        pair(value, "stride", "op", minimum=1)


def test_minimum_zero_allows_zero():
    assert pair(0, "padding", "op", minimum=0) == (0, 0)
    with pytest.raises(ValueError, match="padding must be non-negative, got -1"):
        pair(-1, "padding", "op", minimum=0)
    with pytest.raises(TypeError, match="a number or a pair of numbers"):
        pair("2", "scale_factor", "interpolate", integers=False)


def test_conv_layer_checks_its_arguments_when_built():
    import gradflow.nn as nn
    with pytest.raises(ValueError, match="Conv2d: kernel_size must be positive"):
        nn.Conv2d(1, 1, 0)
    with pytest.raises(ValueError, match="ConvTranspose2d: output_padding must be non-negative"):
        nn.ConvTranspose2d(1, 1, 2, output_padding=-1)
    assert nn.Conv2d(1, 1, (3, 1), padding=[1]).padding == (1, 1)

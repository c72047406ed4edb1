"""gradflow.nn.functional is gradflow.functional under PyTorch's import path."""
import gradflow.functional
import gradflow.nn.functional as F


def test_same_public_names_and_same_objects():
    assert sorted(F.__all__) == sorted(gradflow.functional.__all__)
    assert dir(F) == dir(gradflow.functional)
    for name in gradflow.functional.__all__:
        assert getattr(F, name) is getattr(gradflow.functional, name), name


def test_unknown_name_is_an_attribute_error():
    try:
        F.no_such_function
    except AttributeError as error:
        assert "no_such_function" in str(error)
    else:
        raise AssertionError("expected AttributeError")

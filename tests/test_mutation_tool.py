"""tools/mutation: the mutants it generates, how they are applied, and the score table."""
import ast
import textwrap

from tools.mutation.__main__ import load_equivalent, summary
from tools.mutation.mutants import generate

SOURCE = textwrap.dedent('''
    class Square:
        @staticmethod
        def forward(ctx, a):
            return a * a

        @staticmethod
        def backward(ctx, g):
            """docstring: never mutated"""
            (a,) = ctx.saved_tensors
            if a.ndim > 1:
                raise ValueError(f"message {a.ndim - 1} never mutated")
            out = g * 2 * a - x[i]
            out += g
            return out
''')


def _mutants(select=lambda name: name.endswith(".backward")):
    return generate("m.py", SOURCE, select)


def test_every_operator_kind_at_its_place_and_only_inside_the_selected_function():
    replacements = {(m.operator, m.original, m.replacement) for m in _mutants()}
    assert ("sign", "g * 2 * a - x[i]", "(g * 2 * a + x[i])") in replacements
    assert ("drop-term", "g * 2 * a - x[i]", "(g * 2 * a)") in replacements
    assert ("drop-term", "g * 2 * a", "(g * 2)") in replacements
    assert ("swap", "g * 2 * a - x[i]", "(x[i] - g * 2 * a)") in replacements
    assert ("index", "x[i]", "x[i + 1]") in replacements
    assert ("compare", "a.ndim > 1", "(a.ndim >= 1)") in replacements
    assert ("sign", "out += g", "out -= g") in replacements and ("drop-term", "out += g", "pass") in replacements
    assert all(m.function == "Square.backward" for m in _mutants())
    assert not any("message" in m.original or "docstring" in m.original for m in _mutants())
    assert {m.function for m in _mutants(lambda name: True)} == {"Square.forward", "Square.backward"}


def test_a_mutant_changes_only_its_span_and_still_parses():
    for m in _mutants():
        mutated = m.apply(SOURCE)
        ast.parse(mutated)
        changed = [i for i, (a, b) in enumerate(zip(SOURCE.splitlines(), mutated.splitlines())) if a != b]
        assert changed == [m.line - 1], m.key
        assert m.replacement in mutated.splitlines()[m.line - 1]


def test_keys_are_unique_and_free_of_line_numbers():
    keys = [m.key for m in _mutants()]
    assert len(set(keys)) == len(keys)
    shifted = generate("m.py", "\n\n\n" + SOURCE, lambda name: name.endswith(".backward"))
    assert [m.key for m in shifted] == keys


def test_equivalent_list_and_score_table(tmp_path):
    listed = tmp_path / "equivalent.txt"
    listed.write_text("# header\n\nm.py::f: a => b  # why it cannot matter\n")
    assert load_equivalent(listed) == {"m.py::f: a => b": "why it cannot matter"}
    results = [dict(path="m.py", verdict=v, total_in_module=5) for v in ("killed", "timeout", "equivalent", "survived")]
    table = summary(results)
    assert "| m.py | 4 / 5 | 2 | 1 | 1 | 66.7% |" in table

"""Operator-level mutants of Python source, generated with `ast`.

A mutant is one small change at one place: flip a sign (+ <-> -, drop a unary minus,
+= <-> -=), drop a term (a + b -> a or b, a * b -> a or b, a / b -> a, drop an
accumulating statement), swap the operands of a non-commutative operator, shift an index
by one (x[i] -> x[i + 1], also slice bounds), or change a comparison (< <-> <=,
== <-> !=, is <-> is not, ...). Mutants are applied by splicing the replacement text
over the original node's source span, so the rest of the file (comments, line numbers of
everything before the change) stays as it was.
"""
import ast
import dataclasses

_SIGN = {ast.Add: ast.Sub, ast.Sub: ast.Add}
_SWAPPABLE = (ast.Sub, ast.Div, ast.FloorDiv, ast.Mod, ast.Pow, ast.MatMult)
_COMPARE = {ast.Lt: [ast.LtE], ast.LtE: [ast.Lt], ast.Gt: [ast.GtE], ast.GtE: [ast.Gt],
            ast.Eq: [ast.NotEq], ast.NotEq: [ast.Eq], ast.Is: [ast.IsNot], ast.IsNot: [ast.Is],
            ast.In: [ast.NotIn], ast.NotIn: [ast.In]}


@dataclasses.dataclass(frozen=True)
class Mutant:
    path: str          # relative to the repository root
    function: str      # qualified name of the enclosing function
    operator: str      # sign | drop-term | swap | index | compare
    line: int
    original: str      # source text of the node replaced
    replacement: str   # its mutated text
    span: tuple        # (lineno, col, end_lineno, end_col) of the node, as ast gives them
    occurrence: int    # how many identical (function, original, replacement) came before

    @property
    def key(self):
        """Stable across edits elsewhere in the file (no line number in it)."""
        suffix = f" #{self.occurrence}" if self.occurrence else ""
        return f"{self.path}::{self.function}: {self.original} => {self.replacement}{suffix}"

    def apply(self, source):
        lines = source.splitlines(keepends=True)
        start, col, end, end_col = self.span
        # ast columns are UTF-8 byte offsets
        head = lines[start - 1].encode()[:col].decode()
        tail = lines[end - 1].encode()[end_col:].decode()
        return "".join(lines[:start - 1]) + head + self.replacement + tail + "".join(lines[end:])


def _text(node):
    return ast.unparse(node)


def _paren(node):
    return f"({_text(node)})"


def _expression_mutants(node):
    """(operator, replacement text) for one expression node."""
    if isinstance(node, ast.BinOp):
        op = type(node.op)
        if op in _SIGN:
            yield "sign", _paren(ast.BinOp(node.left, _SIGN[op](), node.right))
        if op in (ast.Add, ast.Sub, ast.Mult):
            yield "drop-term", _paren(node.left)
            yield "drop-term", _paren(node.right)
        elif op is ast.Div:
            yield "drop-term", _paren(node.left)
        if op in _SWAPPABLE:
            yield "swap", _paren(ast.BinOp(node.right, node.op, node.left))
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        yield "sign", _paren(node.operand)
    elif isinstance(node, ast.Compare) and len(node.ops) == 1:
        for new in _COMPARE.get(type(node.ops[0]), []):
            yield "compare", _paren(ast.Compare(node.left, [new()], node.comparators))
    elif isinstance(node, ast.Subscript):
        yield from _index_mutants(node)


def _shifted(expr):
    return ast.BinOp(expr, ast.Add(), ast.Constant(1))


def _is_index_expression(expr):
    if isinstance(expr, ast.Constant):
        return isinstance(expr.value, int) and not isinstance(expr.value, bool)
    return isinstance(expr, (ast.Name, ast.BinOp, ast.Attribute, ast.Call, ast.Subscript, ast.UnaryOp))


def _index_mutants(node):
    elements = node.slice.elts if isinstance(node.slice, ast.Tuple) else [node.slice]
    for i, element in enumerate(elements):
        variants = []
        if isinstance(element, ast.Slice):
            for bound in ("lower", "upper"):
                value = getattr(element, bound)
                if value is not None and _is_index_expression(value):
                    variants.append(ast.Slice(**{**{f: getattr(element, f) for f in ("lower", "upper", "step")},
                                                 bound: _shifted(value)}))
        elif _is_index_expression(element):
            variants.append(_shifted(element))
        for variant in variants:
            new_elements = list(elements)
            new_elements[i] = variant
            new_slice = ast.Tuple(new_elements, ast.Load()) if isinstance(node.slice, ast.Tuple) else variant
            yield "index", _text(ast.Subscript(node.value, new_slice, node.ctx))


def _statement_mutants(node):
    if isinstance(node, ast.AugAssign) and type(node.op) in _SIGN:
        yield "sign", _text(ast.AugAssign(node.target, _SIGN[type(node.op)](), node.value))
        yield "drop-term", "pass"


def _walk_own(function):
    """Nodes of a function's body, not descending into nested functions or classes."""
    stack = list(reversed(function.body))
    while stack:
        node = stack.pop()
        yield node
        if isinstance(node, (ast.Raise, ast.Assert, ast.JoinedStr)):
            continue   # error messages and checks' texts: mutating them changes no gradient
        children = [c for c in ast.iter_child_nodes(node)
                    if not isinstance(c, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda))]
        stack.extend(reversed(children))


def functions(tree):
    """(qualified name, node) of every function, methods included."""
    out = []

    def visit(node, prefix):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                name = prefix + child.name
                out.append((name, child))
                visit(child, name + ".")
            elif isinstance(child, ast.ClassDef):
                visit(child, prefix + child.name + ".")
    visit(tree, "")
    return out


def _docstring(function):
    body = function.body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
            and isinstance(body[0].value.value, str):
        return body[0]
    return None


def generate(path, source, select):
    """Every mutant of the functions `select(qualified_name)` accepts, in source order."""
    tree = ast.parse(source)
    seen = {}
    mutants = []
    for name, function in functions(tree):
        if not select(name):
            continue
        docstring = _docstring(function)
        for node in _walk_own(function):
            if node is docstring:
                continue
            generators = _statement_mutants(node) if isinstance(node, ast.stmt) else _expression_mutants(node)
            for operator, replacement in generators:
                original = ast.get_source_segment(source, node)
                if original is None or replacement == original:
                    continue
                signature = (name, original, replacement)
                occurrence = seen.get(signature, 0)
                seen[signature] = occurrence + 1
                mutants.append(Mutant(path, name, operator, node.lineno, " ".join(original.split()), replacement,
                                      (node.lineno, node.col_offset, node.end_lineno, node.end_col_offset),
                                      occurrence))
    return mutants


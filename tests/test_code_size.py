"""Size limits that keep the code easy to live in: small functions and a small ``Pruner``."""

from __future__ import annotations

import ast
from pathlib import Path

import compressor

ROOT = Path(compressor.__file__).parent

#: Longest function body, in lines, docstring excluded.
MAX_FUNCTION_LINES = 60

#: Declarative tables: a function that only lists options (one ``add_argument`` per option).
TABLES = {("cli.py", "build_parser")}


def _body_lines(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    body = node.body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
            and isinstance(body[0].value.value, str):
        body = body[1:]
    if not body:
        return 0
    return body[-1].end_lineno - body[0].lineno + 1  # type: ignore[operator]


def _functions() -> list[tuple[str, str, int]]:
    found = []
    for path in sorted(ROOT.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                found.append((path.relative_to(ROOT).as_posix(), node.name, _body_lines(node)))
    return found


def test_no_function_is_longer_than_the_limit():
    long = [(f, name, n) for f, name, n in _functions()
            if n > MAX_FUNCTION_LINES and (f, name) not in TABLES]
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines: {long}"


def test_the_allowed_tables_are_still_tables():
    tree = ast.parse((ROOT / "cli.py").read_text(encoding="utf-8"))
    parser = next(n for n in ast.walk(tree)
                  if isinstance(n, ast.FunctionDef) and n.name == "build_parser")
    calls = [n for n in ast.walk(parser) if isinstance(n, ast.Call)
             and isinstance(n.func, ast.Attribute) and n.func.attr == "add_argument"]
    assert len(calls) >= 20
    assert not any(isinstance(n, (ast.For, ast.While, ast.If, ast.Try)) for n in ast.walk(parser))


def test_the_pruner_stays_small():
    source = (ROOT / "pruning" / "pruner.py").read_text(encoding="utf-8")
    assert len(source.splitlines()) < 200
    tree = ast.parse(source)
    pruner = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Pruner")
    branches = [n for n in ast.walk(pruner) if isinstance(n, ast.Attribute)
                and n.attr in ("UNSTRUCTURED", "NM", "CHANNEL", "HEAD", "BLOCK")]
    assert not branches, "granularity-specific code belongs in compressor/pruning/units.py"

"""Small modules and short functions: each module of eiclip_core fits in 400 lines, each function in 60.

A function is counted from its first decorator to its last line, docstring and nested functions included.
"""
import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "eiclip_core"
MODULE_LINES = 400
FUNCTION_LINES = 60


def sources() -> list:
    return sorted(PACKAGE.rglob("*.py"))


def where(path: Path, line: int) -> str:
    return f"{path.relative_to(PACKAGE.parent)}:{line}"


def long_functions(path: Path) -> list:
    """(first line, name, lines) of every function or method in `path` longer than FUNCTION_LINES."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            first = min([node.lineno] + [d.lineno for d in node.decorator_list])
            size = node.end_lineno - first + 1
            if size > FUNCTION_LINES:
                found.append((first, node.name, size))
    return found


def test_the_scan_sees_the_whole_package():
    names = {p.relative_to(PACKAGE).as_posix() for p in sources()}
    assert {"__init__.py", "model/loss.py", "train/loop.py"} <= names, names


def test_no_module_over_400_lines():
    sizes = {p: len(p.read_text().splitlines()) for p in sources()}
    over = [f"{where(p, 1)} {n} lines" for p, n in sizes.items() if n > MODULE_LINES]
    assert not over, f"modules over {MODULE_LINES} lines:\n" + "\n".join(over)


def test_no_function_over_60_lines():
    over = [f"{where(p, first)} {name}: {size} lines" for p in sources() for first, name, size in long_functions(p)]
    assert not over, f"functions over {FUNCTION_LINES} lines:\n" + "\n".join(over)


def test_a_function_counts_from_its_first_decorator_to_its_last_line(tmp_path):
    body = "".join(f"    x{i} = {i}\n" for i in range(FUNCTION_LINES - 3))
    source = tmp_path / "m.py"
    source.write_text(f"@a\n@b\ndef fits():\n{body}\n\n@a\n@b\ndef over():\n{body}    return x0\n")
    assert long_functions(source) == [(FUNCTION_LINES + 3, "over", FUNCTION_LINES + 1)]  # "fits" is 60 lines

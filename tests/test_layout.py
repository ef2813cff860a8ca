"""The house rules of docs/development.md, read from the source: the modules' imports draw no circle, serving
and evaluation never reach training, modules and functions stay short, and so does the sweep's main path."""

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parent.parent / "src" / "mnist_mlp"
TRAINING = {
    "train",
    "seeds",
    "callbacks",
    "recipe",
    "engine",
    "checkpoint",
    "sweep",
    "studies",
    "bench",
    "peers",
}
COMMAND_LAYER = {"cli", "arguments", "advice", "doctor", "planning"}  # where a command to run may be worded


def _imports() -> dict[str, set[str]]:
    """Module -> the package's modules it imports, at the top or inside a function."""
    names = {path.stem for path in PACKAGE.glob("*.py")}
    found = {}
    for path in PACKAGE.glob("*.py"):
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module == "mnist_mlp":
                deps |= {alias.name for alias in node.names if alias.name in names}
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("mnist_mlp."):
                deps.add(node.module.split(".")[1])
            elif isinstance(node, ast.Import):
                deps |= {a.name.split(".")[1] for a in node.names if a.name.startswith("mnist_mlp.")}
        found[path.stem] = deps - {path.stem, "__init__"}
    return found


def _reach(imports: dict[str, set[str]], start: str) -> set[str]:
    seen, stack = set(), [start]
    while stack:
        for module in imports[stack.pop()] - seen:
            seen.add(module)
            stack.append(module)
    return seen


def test_no_module_imports_itself_through_others():
    imports = _imports()
    circles = sorted(module for module in imports if module in _reach(imports, module))
    assert circles == [], f"modules on an import circle: {circles}"


@pytest.mark.parametrize("module", ["serve", "evaluate", "predict", "otherdigits", "plots", "experiments"])
def test_serving_and_evaluation_never_reach_training(module):
    assert _reach(_imports(), module) & TRAINING == set()


def test_the_sweep_reads_suggest_train_report_in_a_few_lines():
    tree = ast.parse((PACKAGE / "sweep.py").read_text())
    sweep = next(node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name == "sweep")
    assert sweep.end_lineno - sweep.lineno + 1 <= 40


def test_modules_and_functions_stay_a_readable_size():
    """No module over 400 lines (cli.py: 450) and no function over 60, but the parser's (a list of flags)."""
    long = []
    for path in PACKAGE.glob("*.py"):
        source = path.read_text()
        lines = source.count("\n")
        if lines > (450 if path.stem == "cli" else 400):
            long.append(f"{path.name}: {lines} lines")
        for node in ast.walk(ast.parse(source)):
            length = getattr(node, "end_lineno", 0) - getattr(node, "lineno", 0) + 1
            if (
                isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
                and node.name != "build_parser"
                and length > 60
            ):
                long.append(f"{path.stem}.{node.name}: {length} lines")
    assert sorted(long) == []


def test_signal_handlers_are_installed_in_one_module():
    """signals.py owns Ctrl-C, `kill` and a closed terminal for the command, training and the server."""
    installing = sorted(
        path.name
        for path in PACKAGE.glob("*.py")
        if path.name != "signals.py" and "signal.signal(" in path.read_text()
    )
    assert installing == []


def test_commands_that_read_mnist_are_worded_only_in_the_command_layer():
    """Advice from one place: the library raises errors that carry a Fix, and advice.py words the command with
    the user's --cache-dir. A library module that writes out `mnist-mlp train ...` itself would advise a
    command that looks in the default cache."""
    command = re.compile(
        r"mnist-mlp (?:train|evaluate|data|inspect|sweep) (?!--help`)[^`\n\"]*`"
    )  # --help: no advice
    found = [
        f"{path.name}: {match.group(0)}"
        for path in sorted(PACKAGE.glob("*.py"))
        if path.stem not in COMMAND_LAYER
        for match in command.finditer(path.read_text())
    ]
    assert found == []


def test_every_fix_the_library_raises_has_its_words():
    """A Fix whose action advice.py does not know would be a KeyError where the user should read advice."""
    from mnist_mlp import advice

    raised = {
        node.args[0].value
        for path in PACKAGE.glob("*.py")
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "Fix" and node.args
    }
    assert raised and raised <= set(advice.ACTIONS), raised - set(advice.ACTIONS)

"""The package imports one way: no import cycle, no upward import, and algorithms built from
parts.

Every module under ``offrl_jax/`` is parsed (``ast``), its imports collected wherever they are
written (module level, inside functions, under ``if TYPE_CHECKING``), and each import resolved to
the module it loads (``from offrl_jax.parts import sac`` loads ``offrl_jax.parts.sac``;
``from offrl_jax.data import Dataset`` loads the package ``offrl_jax.data``). A failure names
the importing ``file:line``. Imports by name at run time (``importlib``: the algorithm registry,
the command line's subcommands) are not seen.

Layers, lowest first; a module may import its own layer and the layers below it, never one
above: a stage uses the stages below it (those it takes its tools from or hands its data to) and
none of them calls it back:

0. ``pytrees``, ``files``, ``networks``, ``tasks``: saving pytrees, atomic file output, the
   network modules and distributions, the environments' specifications;
1. ``data``, ``policies``, ``envs``: datasets on disk and in memory (read from the paths they
   are given), the behaviour-policy files, the simulators;
2. ``models``: the dynamics ensemble, its buffer, rollouts and store;
3. ``parts``: the agents and pieces algorithms share;
4. ``algorithms``: one module per paper;
5. ``evaluation``: scoring a policy in its environment;
6. ``results``: the records, logs, provenance and tables of runs; training and generation write
   through it, so it stands below them (it reads the algorithms' configs for its tables);
7. ``generation``: training behaviour policies (the SAC part), collecting and checking datasets
   (evaluation), writing them where ``data`` reads them; above ``data`` although the data it
   makes comes first, because it is built from the agents;
8. ``training``: the training loop and the runner (which generates missing data);
9. ``cli``: the command line, ``offrl_jax/cli.py`` and every package's ``cli.py``.

``benchmarks/``, ``tools/`` and ``tests/`` stand outside the package, above all of it: they may
import any module, and no module of ``offrl_jax`` imports them.

Algorithm modules (``offrl_jax/algorithms/*.py`` but ``base`` and ``registry``) import only
``parts``, ``networks``, ``data``, ``tasks``, ``policies``, ``pytrees`` and
``algorithms.base``; a piece two algorithms share belongs in ``parts``.

Imports that break these rules and stay are listed in ``ALLOWED`` with their reason; they are
left out of every check.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "offrl_jax"

LAYERS = (
    ("pytrees", "files", "networks", "tasks"),
    ("data", "policies", "envs"),
    ("models",),
    ("parts",),
    ("algorithms",),
    ("evaluation",),
    ("results",),
    ("generation",),
    ("training",),
    ("cli",),
)

ALGORITHM_IMPORTS = ("offrl_jax.parts", "offrl_jax.networks", "offrl_jax.data", "offrl_jax.tasks",
                     "offrl_jax.policies", "offrl_jax.pytrees", "offrl_jax.algorithms.base")

# (importing module, imported module or a package above it) -> why the import stays.
ALLOWED: dict[tuple[str, str], str] = {}


def module_name(path: Path, root: Path = REPO) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def imports(path: Path, known: dict[str, Path], root: Path = REPO) -> list[tuple[str, int]]:
    """``(imported module, line)`` of every ``offrl_jax`` import in the file, wherever it is."""
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                # ``from pkg import sub`` loads the submodule ``pkg.sub`` when there is one.
                target = f"{base}.{alias.name}"
                found.append((target if target in known else base, node.lineno))
    return [(target, line) for target, line in found
            if target == "offrl_jax" or target.startswith("offrl_jax.")]


def layer_of(module: str) -> int:
    parts = module.split(".")
    if len(parts) == 1 or parts[-1] == "cli":
        return len(LAYERS) - 1
    for index, names in enumerate(LAYERS):
        if parts[1] in names:
            return index
    raise AssertionError(f"{module}: in no layer; place offrl_jax.{parts[1]} in LAYERS")


def allowed(importer: str, target: str) -> bool:
    return any(importer == source and (target == name or target.startswith(name + "."))
               for source, name in ALLOWED)


def edges() -> list[tuple[str, str, str]]:
    """``(importer, imported, "file:line")`` for every import of the package but the allowed."""
    known = modules()
    out = []
    for name, path in known.items():
        for target, line in imports(path, known):
            edge = (name, target, f"{path.relative_to(REPO)}:{line}")
            if target != name and not allowed(name, target) and edge not in out:
                out.append(edge)
    return out


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def package_of(module: str) -> str:
    """The unit of the layers: ``offrl_jax.<name>``, every ``cli`` module on its own."""
    parts = module.split(".")
    return module if parts[-1] == "cli" else ".".join(parts[:2])


def _cycle_report(graph_edges: list[tuple[str, str, str]]) -> list[str]:
    graph: dict[str, set[str]] = {}
    for source, target, _ in graph_edges:
        graph.setdefault(source, set()).add(target)
    report = []
    for component in cycles(graph):
        members = set(component)
        report.append(" <-> ".join(component) + ": " + "; ".join(
            f"{where} imports {target}" for source, target, where in graph_edges
            if source in members and target in members))
    return report


def test_no_module_cycle():
    """Between modules; a package's ``__init__`` importing its own modules is left out (a module
    that imports its package's ``__init__`` only runs after it, the package idiom)."""
    report = _cycle_report([e for e in edges() if not _is_own_package(*e[:2])])
    assert not report, "import cycles:\n" + "\n".join(report)


def _is_own_package(importer: str, target: str) -> bool:
    """A package's ``__init__`` re-exports its modules, which import siblings through it."""
    return importer.startswith(target + ".")


def test_no_package_cycle():
    package_edges = list(dict.fromkeys(
        (package_of(source), package_of(target), where) for source, target, where in edges()
        if package_of(source) != package_of(target)))
    report = _cycle_report(package_edges)
    assert not report, "import cycles between packages:\n" + "\n".join(report)


def test_no_upward_import():
    upward = [f"{where}: {source} (layer {layer_of(source)}) imports {target} "
              f"(layer {layer_of(target)})"
              for source, target, where in edges() if layer_of(target) > layer_of(source)]
    assert not upward, "upward imports:\n" + "\n".join(upward)


def test_algorithms_import_parts_only():
    wrong = []
    for source, target, where in edges():
        parts = source.split(".")
        if (parts[:2] != ["offrl_jax", "algorithms"] or len(parts) != 3
                or parts[2] in ("base", "registry")):
            continue
        if not any(target == ok or target.startswith(ok + ".") for ok in ALGORITHM_IMPORTS):
            wrong.append(f"{where}: {source} imports {target}")
    assert not wrong, "algorithms import beyond parts, networks, data, tasks:\n" + "\n".join(
        wrong)


def test_package_imports_nothing_outside_it():
    """``benchmarks``, ``tools`` and ``tests`` stand above the package."""
    outside = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level
                     else [])
            outside += [f"{path.relative_to(REPO)}:{node.lineno} imports {name}" for name in names
                        if name.split(".")[0] in ("benchmarks", "tools", "tests")]
    assert not outside, "\n".join(outside)


def test_allowed_imports_still_exist():
    """An exception whose import is gone is deleted from ``ALLOWED``."""
    known = modules()
    present = {(name, target) for name, path in known.items()
               for target, _ in imports(path, known)}
    stale = [pair for pair in ALLOWED
             if not any(source == pair[0] and (target == pair[1]
                                               or target.startswith(pair[1] + "."))
                        for source, target in present)]
    assert not stale, f"ALLOWED lists imports that are gone: {stale}"


def test_the_rule_sees_imports_inside_functions(tmp_path):
    module = tmp_path / "offrl_jax" / "data" / "late.py"
    module.parent.mkdir(parents=True)
    module.write_text("import os\n\n\ndef f():\n    from offrl_jax.training import loop\n")
    known = {"offrl_jax.training.loop": module}
    assert imports(module, known, tmp_path) == [("offrl_jax.training.loop", 5)]
    assert layer_of("offrl_jax.training.loop") > layer_of("offrl_jax.data.late")

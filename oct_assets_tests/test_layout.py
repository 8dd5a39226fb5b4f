"""The architecture, kept by tests: arrows point one way, from the Dagster layer to the libraries.

The libraries (`store`, `dataset`, `cluster`, `ml`, and `paths`) never import Dagster nor the
Dagster layer; no import cycle anywhere in `oct_assets`, not even a function-level one; loading
the definitions imports none of torch, paramiko, numpy and PIL.
"""

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "oct_assets"
LIBRARIES = (
    "oct_assets.contracts",
    "oct_assets.store",
    "oct_assets.dataset",
    "oct_assets.cluster",
    "oct_assets.ml",
    "oct_assets.serving",
)
# Each library imports only the packages named here (and itself): the contracts leaf at the
# bottom, the store on it, the ML core shippable with the leaf alone (`cluster/code.py`).
ALLOWED_BELOW = {
    "oct_assets.contracts": set(),
    "oct_assets.paths": set(),
    "oct_assets.store": {"oct_assets.contracts", "oct_assets.paths"},
    "oct_assets.dataset": {"oct_assets.contracts"},
    "oct_assets.ml": {"oct_assets.contracts"},
    "oct_assets.serving": {"oct_assets.contracts", "oct_assets.dataset", "oct_assets.ml"},
    "oct_assets.cluster": {"oct_assets.contracts", "oct_assets.ml"},
}
# Modules outside the libraries that must not load Dagster either: the desk commands
# (`python -m oct_assets predict` answers without it) and the dispatcher in front of them.
DAGSTER_FREE = ("oct_assets.paths", "oct_assets.cli.desk", "oct_assets.__main__")
DAGSTER_LAYER = (
    "oct_assets.assets",
    "oct_assets.checks",
    "oct_assets.sensors",
    "oct_assets.resources",
    "oct_assets.definitions",
    "oct_assets.cli.run",
    "oct_assets.cli.run_log",
)


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}
# Parsed once, at collection: CPython 3.11.7's ast.parse can raise "AST constructor recursion
# depth mismatch" when called deep into a long pytest session (fixed in later releases).
TREES = {p: ast.parse(p.read_text()) for p in MODULES.values()}


def imports(path: Path) -> set[str]:
    """Every module `path` imports, anywhere in the file (function bodies and TYPE_CHECKING
    blocks included), resolved to a module of this package where it names one."""
    found = set()
    tree = TREES.get(path) or ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
    return {n for n in found if n in MODULES or not n.startswith("oct_assets")}


def internal_graph() -> dict[str, set[str]]:
    return {m: {n for n in imports(p) if n in MODULES and n != m} for m, p in MODULES.items()}


def within(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def test_libraries_never_import_dagster_or_the_dagster_layer() -> None:
    offenders = [
        f"{m} imports {n}"
        for m, p in MODULES.items()
        if within(m, (*LIBRARIES, *DAGSTER_FREE))
        for n in imports(p)
        if n.split(".")[0] in ("dagster", "dagster_pipes") or within(n, DAGSTER_LAYER)
    ]
    # The trainer may talk to Dagster Pipes when it is there (optional, on cluster nodes too).
    # __main__ hands anything but a desk command to cli.run, inside main().
    allowed = {
        "oct_assets.ml.train imports dagster_pipes",
        "oct_assets.__main__ imports oct_assets.cli.run",
    }
    offenders = [o for o in offenders if o not in allowed]
    assert offenders == []


def test_no_import_cycle() -> None:
    assert cycles_of(internal_graph()) == []


def package(module: str) -> str:
    """`oct_assets.ml.loop` -> `oct_assets.ml`; a top-level module is a package of its own."""
    return ".".join(module.split(".")[:2])


def package_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    packages: dict[str, set[str]] = {}
    for m, targets in graph.items():
        edges = packages.setdefault(package(m), set())
        edges.update(package(n) for n in targets if package(n) != package(m))
    return packages


def cycles_of(graph: dict[str, set[str]]) -> list[list[str]]:
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for n in sorted(graph.get(m, ())):
            if state.get(n) == 1:
                cycles.append([*path[path.index(n) :], n])
            elif n not in state:
                visit(n, [*path, n])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    return cycles


def test_no_package_level_cycle() -> None:
    """`ml -> dataset -> ml` is a cycle even when no two modules import each other."""
    assert cycles_of(package_graph(internal_graph())) == []


def test_each_library_imports_only_the_floors_below_it() -> None:
    packages = package_graph(internal_graph())
    offenders = {
        p: sorted(packages.get(p, set()) - allowed)
        for p, allowed in ALLOWED_BELOW.items()
        if packages.get(p, set()) - allowed
    }
    assert offenders == {}


def test_the_package_check_sees_a_cycle_of_packages() -> None:
    graph = {"oct_assets.ml.score": {"oct_assets.dataset.inbox"}, "oct_assets.dataset.x": set()}
    graph["oct_assets.dataset.inbox"] = {"oct_assets.ml.formats"}
    graph["oct_assets.ml.formats"] = set()
    assert cycles_of(package_graph(graph)) == [
        ["oct_assets.dataset", "oct_assets.ml", "oct_assets.dataset"]
    ]


def test_the_layer_check_sees_a_cycle_and_a_dagster_import(tmp_path: Path) -> None:
    """The walker itself can fail: it finds imports inside functions."""
    code = "def f():\n    from oct_assets.assets.graph import LOCAL_GRAPH\n    import dagster\n"
    (tmp_path / "m.py").write_text(code)
    assert {"oct_assets.assets.graph", "dagster"} <= imports(tmp_path / "m.py")


def test_loading_the_definitions_imports_no_ml_or_ssh_library() -> None:
    """torch, paramiko, numpy and PIL load when a step needs them, not with the definitions."""
    code = (
        "import sys, oct_assets.definitions; "
        "print(sorted(m for m in ('torch', 'paramiko', 'numpy', 'PIL') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_desk_commands_load_no_dagster() -> None:
    code = "import sys, oct_assets.cli.desk; print('dagster' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"

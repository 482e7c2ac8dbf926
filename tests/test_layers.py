"""The package's rooms by role: no module imports from a role above its own (read from the source)."""

from __future__ import annotations

import ast
from pathlib import Path

import mcp_loco

PACKAGE = Path(mcp_loco.__file__).resolve().parent
# Higher imports lower, never the reverse; rooms of one level above the base do not import each other.
LEVELS: dict[str, int] = {
    "__main__": 5,
    "cli": 4,
    **dict.fromkeys(["batch", "doctor", "serve", "proxy", "evals"], 3),
    "explore": 2,
    **dict.fromkeys(["model", "sandbox"], 1),
    **dict.fromkeys(["__init__", "config", "deny_defaults", "interfaces", "errors", "logs", "webguard"], 0),
}


def room(module: str) -> str:
    """The top-level room of a dotted `mcp_loco...` name (the package itself is `__init__`)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def imports() -> list[tuple[str, str]]:
    """(importing module, imported module) for every mcp_loco import in the package, nested ones included."""
    found = []
    for path in PACKAGE.rglob("*.py"):
        name = ".".join(("mcp_loco", *path.relative_to(PACKAGE).with_suffix("").parts)).removesuffix(".__init__")
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("mcp_loco"):
                targets = [f"{node.module}.{a.name}" if node.module == "mcp_loco" else node.module for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names if a.name.startswith("mcp_loco")]
            else:
                continue
            found += [(name, t) for t in targets]
    return found


def violations(edges: list[tuple[str, str]]) -> list[str]:
    """Each import that runs up a level or sideways between rooms of one level."""
    bad = []
    for source, target in edges:
        src, dst = room(source), room(target)
        if dst == "__version__":
            dst = "__init__"
        if src == dst:
            continue
        if LEVELS[dst] > LEVELS[src] or (LEVELS[dst] == LEVELS[src] and LEVELS[src] > 0):
            bad.append(f"{source} imports {target}")
    return bad


def test_every_room_has_a_level() -> None:
    modules = {p.stem for p in PACKAGE.glob("*.py")}
    packages = {p.parent.name for p in PACKAGE.glob("*/__init__.py")}
    assert modules | packages == set(LEVELS)


def test_no_module_imports_from_a_role_above_its_own() -> None:
    edges = imports()
    assert len(edges) > 50  # the reader sees the imports, nested ones included
    assert violations(edges) == []


def test_the_rule_catches_an_import_running_up() -> None:
    assert violations([("mcp_loco.model.protocol", "mcp_loco.explore.report")]) == [
        "mcp_loco.model.protocol imports mcp_loco.explore.report"
    ]
    assert violations([("mcp_loco.explore.agent", "mcp_loco.serve.server")]) != []
    assert violations([("mcp_loco.sandbox.read", "mcp_loco.model.protocol")]) != []
    assert violations([("mcp_loco.batch", "mcp_loco.serve.server")]) != []
    assert violations([("mcp_loco.serve.server", "mcp_loco.explore.agent")]) == []

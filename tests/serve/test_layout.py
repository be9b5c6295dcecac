"""The serve package's layering (issue 35): protocols over one core, no module importing its importer.

Static: every import statement in foclip/serve/*.py, function-local ones included.
"""

from __future__ import annotations

import ast
from pathlib import Path

import foclip.serve

PACKAGE = Path(foclip.serve.__file__).parent


def imports() -> dict[str, set[str]]:
    """Module (short name) -> the foclip.serve modules its import statements name."""
    graph = {}
    for path in PACKAGE.glob("*.py"):
        names = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module:
                if node.module.startswith("foclip.serve."):
                    names.add(node.module.split(".")[2])
                elif node.module == "foclip.serve":
                    names.update(a.name for a in node.names)
            elif isinstance(node, ast.Import):
                names.update(a.name.split(".")[2] for a in node.names if a.name.startswith("foclip.serve."))
        graph[path.stem] = names - {path.stem}
    return graph


def test_no_import_cycle_in_the_serve_package():
    graph = imports()

    def reach(start: str) -> set[str]:
        seen, todo = set(), [start]
        while todo:
            for nxt in graph.get(todo.pop(), ()):
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return seen

    assert [m for m in graph if m in reach(m)] == []


def test_the_core_knows_no_protocol_and_the_protocols_not_each_other():
    graph = imports()
    assert graph["core"].isdisjoint({"v1", "v2", "app", "deployment", "edge"})
    assert "v2" not in graph["v1"] and "v1" not in graph["v2"]
    assert graph["v1"].isdisjoint({"app", "deployment"}) and graph["v2"].isdisjoint({"app", "deployment"})
    # The proxy's modules stay light: no protocol, no core (which loads the image runtime).
    for light in ("edge", "auth", "json_bounds"):
        assert graph[light].isdisjoint({"core", "v1", "v2", "app", "deployment"}), light

"""No import cycles among llmlab's modules, TYPE_CHECKING imports and imports inside functions included.

`lint-imports` (pyproject.toml) checks the layers and, with its `acyclic_siblings` contract, cycles
between the children of each package; it does not see a cycle through a package's own `__init__`
(`llmlab.x` -> `llmlab.x.a` -> `llmlab.x`). This test looks at the whole module graph, as grimp
(import-linter's graph builder) sees it, and names every cycle it finds.
"""

from __future__ import annotations

import grimp


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components with more than one module, each sorted.

    >>> strongly_connected({"a": {"b"}, "b": {"a"}, "c": {"a"}})
    [['a', 'b']]
    """
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:  # recursion depth is the longest import chain: a few dozen modules
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(found)


def test_strongly_connected_on_a_hand_made_graph() -> None:
    """a -> b -> c -> a is one cycle; d -> a hangs off it; e <-> f is a second one."""
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"f"}, "f": {"e"}}
    assert strongly_connected(graph) == [["a", "b", "c"], ["e", "f"]]


def test_llmlab_has_no_import_cycles() -> None:
    g = grimp.build_graph("llmlab", include_external_packages=False, exclude_type_checking_imports=False,
                          cache_dir=None)
    graph = {m: set(g.find_modules_directly_imported_by(m)) for m in g.modules}
    cycles = strongly_connected(graph)
    lines = []
    for cycle in cycles:
        members = set(cycle)
        lines.append("cycle: " + ", ".join(cycle))
        for importer in cycle:
            for imported in sorted(graph[importer] & members):
                where = g.get_import_details(importer=importer, imported=imported)
                at = ", ".join(f"l.{d['line_number']}" for d in where)
                lines.append(f"    {importer} -> {imported} ({at})")
    assert not cycles, "import cycles among llmlab modules:\n" + "\n".join(lines)

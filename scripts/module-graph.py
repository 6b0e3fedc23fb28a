#!/usr/bin/env python3
"""Which top-level modules of crates/core/src refer to which (any `crate::module` path, in
`use` lines and in code, tests left out), and the cycles among them.

  scripts/module-graph.py              prints the edges and every cycle
  scripts/module-graph.py --check A B  fails if the modules A, B, ... are on a cycle
                                       together (issue 14: broker connection transport
                                       router persist session)

A module is a file or folder directly under crates/core/src (`broker`, `connection`, ...);
references inside a module's own files do not count.
"""

import glob
import os
import re
import sys

ROOT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "crates", "core", "src")
REF = re.compile(r"\bcrate::([a-z_][a-z0-9_]*)")


def module_of(path):
    rel = os.path.relpath(path, ROOT)
    first = rel.split(os.sep)[0]
    return first[:-3] if first.endswith(".rs") else first


def edges():
    graph = {}
    for path in glob.glob(os.path.join(ROOT, "**", "*.rs"), recursive=True):
        rel = os.path.relpath(path, ROOT)
        if "/tests/" in f"/{rel}" or rel.endswith("tests.rs"):
            continue
        me = module_of(path)
        graph.setdefault(me, set())
        with open(path, encoding="utf-8") as f:
            text = f.read()
        # Unit-test modules at the end of a file are not the module's dependencies.
        text = text.split("#[cfg(test)]")[0]
        for line in text.split("\n"):
            if line.lstrip().startswith("//"):
                continue
            for target in REF.findall(line):
                is_module = os.path.exists(os.path.join(ROOT, target)) or os.path.exists(
                    os.path.join(ROOT, target + ".rs")
                )
                if target != me and is_module:
                    graph[me].add(target)
    return graph


def cycles(graph):
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def main():
    graph = edges()
    found = cycles(graph)
    if "--check" in sys.argv:
        watched = set(sys.argv[sys.argv.index("--check") + 1 :])
        bad = [c for c in found if len(watched.intersection(c)) > 1]
        for c in bad:
            print("cycle:", " ".join(c))
        sys.exit(1 if bad else 0)
    for m in sorted(graph):
        print(f"{m} -> {' '.join(sorted(graph[m]))}")
    for c in found:
        print("cycle:", " ".join(c))


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Which top-level modules of crates/core/src refer to which (any `crate::module` path, in
`use` lines and in code, tests left out), and the cycles among them.

  scripts/module-graph.py              prints the edges and every cycle
  scripts/module-graph.py --check A B  fails if the modules A, B, ... are on a cycle
                                       together (issue 14: broker connection transport
                                       router persist session)
  scripts/module-graph.py --rules      fails unless issue 14's structure holds: no cycle
                                       among those six modules, no module but the facade
                                       (lib) and the builder (broker) refers to `broker`,
                                       and no function in connection/ is over 80 lines

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


WATCHED = ["broker", "connection", "transport", "router", "persist", "session"]
MAX_FUNCTION_LINES = 80


def long_functions(folder, limit):
    """Functions (`fn` to its closing brace at the same indentation) over `limit` lines."""
    out = []
    start = re.compile(r"^(\s*)(pub(\([^)]*\))?\s+)?(async\s+)?(const\s+)?fn\s+(\w+)")
    for path in sorted(glob.glob(os.path.join(ROOT, folder, "**", "*.rs"), recursive=True)):
        with open(path, encoding="utf-8") as f:
            lines = f.read().split("\n")
        for i, line in enumerate(lines):
            m = start.match(line)
            if not m:
                continue
            indent = m.group(1)
            j = i
            while j < len(lines) and not lines[j].rstrip().endswith(("{", ";")):
                j += 1
            if j >= len(lines) or lines[j].rstrip().endswith(";"):
                continue  # a declaration without a body
            k = j + 1
            while k < len(lines) and lines[k] != indent + "}":
                k += 1
            if k - i + 1 > limit:
                out.append(f"{os.path.relpath(path, ROOT)}:{i + 1} {m.group(6)}: {k - i + 1} lines")
    return out


def rules(graph, found):
    """Issue 14's done-when, as problems found (empty: it holds)."""
    problems = [
        "cycle: " + " ".join(c) for c in found if len(set(WATCHED).intersection(c)) > 1
    ]
    problems += [
        f"{m} refers to broker (only lib and broker may)"
        for m in sorted(graph)
        if "broker" in graph[m] and m not in ("lib", "broker")
    ]
    problems += long_functions("connection", MAX_FUNCTION_LINES)
    return problems


def main():
    graph = edges()
    found = cycles(graph)
    if "--rules" in sys.argv:
        problems = rules(graph, found)
        for p in problems:
            print(p)
        sys.exit(1 if problems else 0)
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

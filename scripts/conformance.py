#!/usr/bin/env python3
"""Builds docs/conformance.md: every normative statement of MQTT 3.1.1 and 5.0, sections
1-4, with the tests that cite it, or why none does.

Inputs:
  docs/conformance/statements.tsv  version, statement id, who it binds (S server, C client,
                                   B both, or whoever sends/receives)
  docs/conformance/notes.tsv       version, statement id, why no test cites it (or what
                                   else to know)
  the tests themselves             every `MQTT-x.y.z-n` in a test (a test function, or the
                                   doc comment right above it)

Which standard a citation belongs to: MQTT 3.1.1, unless the file is about MQTT 5.0 only
(tests/v5_*.rs, tests/interop_rumqttc_v5.rs, tests/interop/paho_v5.py,
tests/interop/mqttjs/) or the citation is followed by "(v5" (MQTT 5.0) or "(both"
(the statement has that number in both standards and the test checks both levels).

  scripts/conformance.py           writes docs/conformance.md
  scripts/conformance.py --check   fails if a statement has neither a test nor a note, or
                                   docs/conformance.md is not what this script writes
"""

import glob
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# "MQTT-3.1.2-16", and the shorthand for more of the same section: "MQTT-3.10.4-4 / -5",
# "MQTT-3.3.2-16, -17", "MQTT-3.3.2-16..-20"; then an optional "(v5…)" or "(both…)".
CITE = re.compile(
    r"MQTT-(\d+\.\d+\.\d+)-(\d+)((?:\s*(?:,|/|and|\.\.)\s*-\d+\b)*)(\s*\((?:v5|both)[^)]*\))?"
)


def statements_of(section, first, more):
    """The statement ids a citation names."""
    numbers = [int(first)]
    for sep, n in re.findall(r"(\.\.|,|/|and)\s*-(\d+)", more):
        if sep == "..":
            numbers += range(numbers[-1] + 1, int(n) + 1)
        else:
            numbers.append(int(n))
    return [f"{section}-{n}" for n in numbers]
FN = re.compile(r"^\s*(?:pub(?:\([^)]*\))?\s+)?(?:async\s+)?fn\s+(\w+)|^def (\w+)|^\s*(?:const|async) (\w+) ?=|^\(async")
V5_ONLY = re.compile(r"(^|/)v5_[^/]*\.rs$|interop_rumqttc_v5\.rs$|interop/paho_v5\.py$|interop/mqttjs/")


def key(statement):
    return [int(p) for p in re.split(r"[.-]", statement)]


def test_files():
    files = glob.glob(os.path.join(ROOT, "tests", "*.rs"))
    files += [p for p in glob.glob(os.path.join(ROOT, "tests", "interop", "*")) if os.path.isfile(p)]
    files += glob.glob(os.path.join(ROOT, "tests", "interop", "mqttjs", "*.js"))
    # Unit tests: the codec's test modules and any #[cfg(test)] module of the crates.
    files += glob.glob(os.path.join(ROOT, "crates", "**", "src", "**", "*.rs"), recursive=True)
    return sorted(files)


def citations():
    """{("3.1.1"|"5.0", id): set of "file::test"}"""
    found = {}
    for path in test_files():
        rel = os.path.relpath(path, ROOT)
        in_tests = rel.startswith("tests/") or "/tests/" in rel
        v5_only = bool(V5_ONLY.search(rel))
        current, pending = None, []
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = f.read().split("\n")
        for line in lines:
            if rel.startswith("crates/") and "#[cfg(test)]" in line:
                in_tests = True
            m = FN.match(line)
            if m:
                current = next((g for g in m.groups() if g), None) or "script"
                for cite in pending:
                    found.setdefault(cite, set()).add(f"{rel}::{current}")
                pending = []
                continue
            if not in_tests:
                continue
            for section, first, more, marker in CITE.findall(line):
                if marker and "both" in marker:
                    versions = ["3.1.1", "5.0"]
                elif marker or v5_only:
                    versions = ["5.0"]
                else:
                    versions = ["3.1.1"]
                for v, statement in [(v, st) for v in versions for st in statements_of(section, first, more)]:
                    cite = (v, statement)
                    doc = line.strip().startswith(("///", "#", "//!")) and not line.strip().startswith("#[")
                    if doc or current is None:
                        pending.append(cite)
                    else:
                        found.setdefault(cite, set()).add(f"{rel}::{current}")
    return found


def table(path, columns):
    rows = []
    with open(os.path.join(ROOT, path), encoding="utf-8") as f:
        for line in f:
            if line.startswith("#") or not line.strip():
                continue
            parts = line.rstrip("\n").split("\t")
            rows.append(parts + [""] * (columns - len(parts)))
    return rows


def main():
    statements = table("docs/conformance/statements.tsv", 3)
    notes = {(v, i): n for v, i, n in table("docs/conformance/notes.tsv", 3)}
    cited = citations()
    problems = []
    out = [
        "# Conformance: every normative statement and its test",
        "",
        "Generated by `scripts/conformance.py` from `docs/conformance/statements.tsv`,",
        "`docs/conformance/notes.tsv` and the citations in the tests; do not edit by hand.",
        "Binds: S the server, C the client, B both (or whoever sends or receives).",
        "A test cites the statements it checks; a statement without one says why.",
        "",
    ]
    for version in ("3.1.1", "5.0"):
        rows = [(i, s) for v, i, s in statements if v == version]
        tested = sum(1 for i, _ in rows if (version, i) in cited)
        client = sum(1 for i, s in rows if s == "C" and (version, i) not in cited)
        out += [
            f"## MQTT {version}",
            "",
            f"{len(rows)} statements in sections 1-4: {tested} cited by tests, "
            f"{client} client obligations without a test, "
            f"{len(rows) - tested - client} others without a test (see their notes).",
            "",
            "| statement | binds | tests | note |",
            "|---|---|---|---|",
        ]
        for i, s in sorted(rows, key=lambda r: key(r[0])):
            tests = sorted(cited.get((version, i), ()))
            note = notes.get((version, i), "")
            if not tests and not note:
                if s == "C":
                    note = "Client obligation: Roost is the server; how it treats a client that breaks it is tested where a statement binds the server."
                else:
                    problems.append(f"MQTT {version} {i}: no test and no note")
            cell = "<br>".join(f"`{t}`" for t in tests) or "—"
            out.append(f"| MQTT-{i} | {s} | {cell} | {note} |")
        out.append("")
    known = {(v, i) for v, i, _ in statements}
    stray = sorted(c for c in cited if c not in known and re.match(r"[1-4]\.", c[1]))
    if stray:
        out += ["## Citations of statements not in the list", ""]
        out += [f"- MQTT {v} MQTT-{i}: " + ", ".join(f"`{t}`" for t in sorted(cited[(v, i)])) for v, i in stray]
        out.append("")
    text = "\n".join(out)
    if "--check" in sys.argv:
        with open(os.path.join(ROOT, "docs", "conformance.md"), encoding="utf-8") as f:
            if f.read() != text:
                problems.append("docs/conformance.md is out of date: run scripts/conformance.py")
        if problems:
            print("\n".join(problems))
            sys.exit(1)
        print("every statement has a test or a note, and docs/conformance.md is up to date")
        return
    with open(os.path.join(ROOT, "docs", "conformance.md"), "w", encoding="utf-8") as f:
        f.write(text)
    print(f"docs/conformance.md written; {len(problems)} statements lack a test and a note")
    for p in problems:
        print(" ", p)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Fails when two modules of a crate import each other, directly or through
a loop (ADR 0007: arrows run one way, e.g. bus -> consumer -> dlq -> client
-> config). Reads `crate::` paths (and `super::` inside a module folder),
resolving items the crate root re-exports to the module that defines them.
Test modules (`#[cfg(test)]` and below) are left out."""
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent


def code_of(path):
    text = path.read_text()
    cut = text.find("#[cfg(test)]")
    text = text if cut < 0 else text[:cut]
    text = re.sub(r"//[^\n]*", "", text)  # comments and doc comments
    return text


def referenced(text, prefix):
    """Names right after `prefix::`, including `prefix::{a, b::c}` groups."""
    names = set()
    for m in re.finditer(prefix + r"::(\{[^}]*\}|\w+)", text):
        part = m.group(1)
        if part.startswith("{"):
            names.update(re.findall(r"(?:^|[{,]\s*)(\w+)", part))
        else:
            names.add(part)
    return names


def find_cycle(graph):
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def check(src):
    lib = src / "lib.rs"
    root = code_of(lib)
    modules = set(re.findall(r"^\s*(?:pub(?:\([^)]*\))?\s+)?mod\s+(\w+)\s*;", root, re.M))
    exports = {}
    for m in re.finditer(r"pub(?:\([^)]*\))?\s+use\s+(\w+)::(\{[^}]*\}|\w+)", root):
        module, items = m.group(1), m.group(2)
        for item in re.findall(r"\w+", items):
            exports[item] = module
    problems = []
    graph = {}
    for module in modules:
        file = src / f"{module}.rs"
        folder = src / module
        files = [file] if file.exists() else sorted(folder.glob("**/*.rs"))
        deps = set()
        for f in files:
            for name in referenced(code_of(f), r"\bcrate"):
                target = name if name in modules else exports.get(name)
                if target and target != module:
                    deps.add(target)
        graph[module] = deps
        if folder.is_dir():
            sub = {p.stem for p in folder.glob("*.rs") if p.stem != "mod"}
            subgraph = {}
            for s in sub:
                subgraph[s] = {
                    n for n in referenced(code_of(folder / f"{s}.rs"), r"\bsuper") if n in sub and n != s
                }
            cycle = find_cycle(subgraph)
            if cycle:
                problems.append(f"{src.parent.name}::{module}: " + " -> ".join(cycle))
    cycle = find_cycle(graph)
    if cycle:
        problems.append(f"{src.parent.name}: " + " -> ".join(cycle))
    return problems


def main():
    crates = sorted(p.parent.parent for p in ROOT.glob("*/src/lib.rs"))
    problems = [p for c in crates for p in check(c / "src")]
    for p in problems:
        print(f"import cycle in {p}")
    if problems:
        sys.exit(1)
    print(f"no import cycles among the modules of {len(crates)} crates")


if __name__ == "__main__":
    main()

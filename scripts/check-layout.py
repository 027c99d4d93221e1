#!/usr/bin/env python3
"""Checks that each bus backend's `lib.rs` "Layout" paragraph stays true
(#26): every source file of the crate is named in it, and every file it
names exists. A new file without a line in the Layout, or a Layout naming
a file that moved, fails here with what to change.

A file is named by its path below `src/` in backticks (`bus.rs`,
`consumer/reader.rs`), or by its bare name inside the folder the
paragraph has just named (`consumer/` (... `reader.rs` ...)); a folder's
`mod.rs` is covered by naming the folder.
"""
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent


def layout_of(lib):
    """The Layout paragraph of a crate's lib.rs doc comment, as one line."""
    lines = [l[3:].strip() for l in lib.read_text().splitlines() if l.startswith("//!")]
    text, inside = [], False
    for line in lines:
        if line.startswith("Layout:"):
            inside = True
        elif inside and not line:
            break
        if inside:
            text.append(line)
    return " ".join(text)


def named(layout):
    """The paths a Layout names: `a.rs`, `dir/`, and bare names inside the
    parentheses after a folder (`dir/` (... `b.rs` ...) → dir/b.rs)."""
    paths = set()
    folder, depth = None, 0
    for token in re.finditer(r"`([^`]+)`|\(|\)", layout):
        t = token.group(0)
        if t == "(":
            depth += 1
            continue
        if t == ")":
            depth -= 1
            if depth == 0:
                folder = None
            continue
        name = token.group(1)
        if name.endswith("/"):
            paths.add(name)
            folder = name if depth == 0 else folder
        elif name.endswith(".rs"):
            paths.add(folder + name if folder and depth > 0 and "/" not in name else name)
    return paths


def main():
    failures = []
    crates = sorted(ROOT.glob("eventsource-bus-*"))
    for crate in crates:
        src = crate / "src"
        layout = layout_of(src / "lib.rs")
        if not layout:
            failures.append(f"{crate.name}: src/lib.rs has no \"Layout:\" paragraph")
            continue
        paths = named(layout)
        files = {p.relative_to(src).as_posix() for p in src.rglob("*.rs")} - {"lib.rs"}
        for f in sorted(files):
            folder = f.rsplit("/", 1)[0] + "/" if "/" in f else None
            covered = f in paths or (f.endswith("/mod.rs") and folder in paths)
            if not covered:
                failures.append(f"{crate.name}: src/{f} is not named in lib.rs's Layout")
        for p in sorted(paths):
            if not (src / p).exists():
                failures.append(f"{crate.name}: lib.rs's Layout names `{p}`, which is not in src/")
        print(f"{crate.name}: {len(files)} files, all named in its Layout" if not any(
            f.startswith(crate.name + ":") for f in failures) else f"{crate.name}: see below")
    for f in failures:
        print("error:", f, file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Checks what a user of the published crates meets and the workspace's own
build does not (#26):

1. The declared `rust-version` is at least the largest `rust-version` of
   every package in the lockfile's resolved graph (only one toolchain can
   be installed here, so an older one cannot be tried: this is the check
   that can be made).
2. Every publishable crate packages (`cargo package --no-verify`: its
   metadata, its file list; verification, which builds each package
   from its tarball, is a release step: `VERIFY=1` runs it).
3. Every library crate builds with each of its features alone, and with
   none (`cargo check --no-default-features [--features F]`, dev
   dependencies left out): a feature that needs another it does not
   enable fails here.

Prints each step; exits non-zero on the first failure.
"""
import json
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent


def version(v):
    return tuple(int(x) for x in (v.split(".") + ["0", "0"])[:3])


def metadata():
    out = subprocess.run(
        ["cargo", "metadata", "--format-version", "1", "--locked"],
        cwd=ROOT, check=True, capture_output=True, text=True,
    ).stdout
    return json.loads(out)


def check_msrv(meta):
    members = set(meta["workspace_members"])
    declared = {
        p["name"]: p.get("rust_version")
        for p in meta["packages"]
        if p["id"] in members
    }
    lowest = min(version(v) for v in declared.values() if v)
    resolved = {n["id"] for n in meta["resolve"]["nodes"]}
    needs = sorted(
        ((version(p["rust_version"]), p["name"], p["version"])
         for p in meta["packages"]
         if p["id"] in resolved and p["id"] not in members and p.get("rust_version")),
        reverse=True,
    )
    top, name, ver = needs[0]
    shown = ".".join(map(str, lowest))
    print(f"==> rust-version: declared {shown}; the lockfile needs at least "
          f"{'.'.join(map(str, top))} ({name} {ver})")
    if lowest < top:
        print(f"error: rust-version {shown} is older than {name} {ver} allows; "
              f"declare at least {'.'.join(map(str, top))} in the workspace's Cargo.toml",
              file=sys.stderr)
        sys.exit(1)


def check_features(meta):
    members = set(meta["workspace_members"])
    for p in sorted(meta["packages"], key=lambda p: p["name"]):
        if p["id"] not in members or p.get("publish") == []:
            continue
        if not any("lib" in t["kind"] or "proc-macro" in t["kind"] for t in p["targets"]):
            continue
        features = sorted(f for f in p["features"] if f != "default")
        for feature in [None] + features:
            cmd = ["cargo", "check", "--quiet", "-p", p["name"], "--lib", "--no-default-features"]
            if feature:
                cmd += ["--features", feature]
            print(f"==> {p['name']}: {'feature ' + feature if feature else 'no features'}", flush=True)
            if subprocess.run(cmd, cwd=ROOT).returncode != 0:
                print(f"error: {p['name']} does not build with "
                      f"{'only the feature ' + feature if feature else 'no features'}",
                      file=sys.stderr)
                sys.exit(1)


def publishable(meta):
    members = set(meta["workspace_members"])
    return sorted(p["name"] for p in meta["packages"]
                  if p["id"] in members and p.get("publish") != [])


def check_package(meta):
    import os
    names = publishable(meta)
    verify = os.environ.get("VERIFY") == "1"
    print(f"==> cargo package {'(verified) ' if verify else '--no-verify '}{' '.join(names)}", flush=True)
    cmd = ["cargo", "package", "--quiet", "--allow-dirty"] + (["--no-verify"] if not verify else [])
    for name in names:
        cmd += ["-p", name]
    if subprocess.run(cmd, cwd=ROOT).returncode != 0:
        print("error: a crate does not package (see above)", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    meta = metadata()
    check_msrv(meta)
    check_package(meta)
    check_features(meta)

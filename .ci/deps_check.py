#!/usr/bin/env python3
"""Dependency policy check for CI, from deny.toml, without cargo-deny.

cargo-deny cannot run in CI: its advisory database is on GitHub, which CI cannot
reach, and building it takes minutes. This script checks what needs no database,
over the crates that `cargo metadata --locked` resolves for the workspace members
on the host target (normal, build and dev-dependencies, as cargo-deny does):

  licences  every crate's SPDX expression is satisfied by [licenses] allow (plus
            the crate's [[licenses.exceptions]] entry); [[licenses.clarify]]
            replaces a crate's expression; a crate with only a licence file fails
            unless a clarify or exception entry names it.
  sources   crates.io, or a path inside this workspace.
  bans      no crate named in [bans] deny is in the graph (matched by name: a
            version or wrappers in the entry do not narrow it, so this is never
            looser than cargo-deny).
  duplicates  crates at more than one semver-major version are listed as a
            warning (with their [[bans.skip]] reason, if any); they never fail.

Usage: python3 .ci/deps_check.py [--self-test]
"""

import json
import os
import subprocess
import sys
import tomllib
from collections import defaultdict

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CRATES_IO = {
    "registry+https://github.com/rust-lang/crates.io-index",
    "sparse+https://index.crates.io/",
}


class SpdxError(ValueError):
    pass


def tokenize(expr):
    # "/" is the pre-SPDX crates.io separator (e.g. "MIT/Apache-2.0"); cargo-deny
    # reads it as OR, and so does this.
    tokens = []
    for word in expr.replace("(", " ( ").replace(")", " ) ").replace("/", " OR ").split():
        upper = word.upper()
        tokens.append(upper if upper in ("AND", "OR", "WITH") else word)
    return tokens


def parse_spdx(expr):
    """Parse an SPDX expression into a tree: ("or", [..]), ("and", [..]) or
    ("lic", "ID" or "ID WITH EXCEPTION"). WITH binds tighter than AND, AND than OR."""
    tokens = tokenize(expr)
    pos = 0

    def peek():
        return tokens[pos] if pos < len(tokens) else None

    def take():
        nonlocal pos
        if pos >= len(tokens):
            raise SpdxError(f"unexpected end of licence expression {expr!r}")
        pos += 1
        return tokens[pos - 1]

    def parse_or():
        items = [parse_and()]
        while peek() == "OR":
            take()
            items.append(parse_and())
        return items[0] if len(items) == 1 else ("or", items)

    def parse_and():
        items = [parse_term()]
        while peek() == "AND":
            take()
            items.append(parse_term())
        return items[0] if len(items) == 1 else ("and", items)

    def parse_term():
        token = take()
        if token == "(":
            inner = parse_or()
            if take() != ")":
                raise SpdxError(f"missing ')' in licence expression {expr!r}")
            return inner
        if token in ("AND", "OR", "WITH", ")"):
            raise SpdxError(f"unexpected {token!r} in licence expression {expr!r}")
        if peek() == "WITH":
            take()
            exception = take()
            if exception in ("AND", "OR", "WITH", "(", ")"):
                raise SpdxError(f"WITH needs an exception id in {expr!r}")
            return ("lic", f"{token} WITH {exception}")
        return ("lic", token)

    if not tokens:
        raise SpdxError("empty licence expression")
    tree = parse_or()
    if pos != len(tokens):
        raise SpdxError(f"unexpected {tokens[pos]!r} in licence expression {expr!r}")
    return tree


def satisfied(tree, allowed):
    """OR needs one allowed side, AND needs all. A licence with an exception must be
    allowed with that exception: cargo-deny treats "Apache-2.0 WITH LLVM-exception"
    as a licence distinct from "Apache-2.0"."""
    kind, value = tree
    if kind == "lic":
        return value in allowed
    if kind == "or":
        return any(satisfied(t, allowed) for t in value)
    return all(satisfied(t, allowed) for t in value)


def leaves(tree):
    kind, value = tree
    if kind == "lic":
        return {value}
    return set().union(*(leaves(t) for t in value))


def major_key(version):
    """The semver-compatibility class: 1.2.3 -> (1,), 0.4.3 -> (0, 4), 0.0.7 -> (0, 0, 7)."""
    core = version.split("+")[0].split("-")[0]
    parts = [int(p) for p in core.split(".")]
    if parts[0]:
        return (parts[0],)
    if parts[1]:
        return (0, parts[1])
    return (0, 0, parts[2])


def spec_name(entry):
    """A cargo-deny package spec: "name", "name@version", or a table with crate or name."""
    if isinstance(entry, str):
        return entry.split("@")[0]
    return (entry.get("crate") or entry.get("name") or "").split("@")[0]


def host_triple():
    out = subprocess.run(["rustc", "-vV"], capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        if line.startswith("host: "):
            return line[len("host: "):]
    raise SystemExit("deps_check: no host line in `rustc -vV`")


def load_metadata():
    # No --offline: one crate in the lockfile is not in the local cache, and metadata
    # needs every manifest.
    cmd = ["cargo", "metadata", "--format-version", "1", "--locked", "--filter-platform", host_triple()]
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if result.returncode != 0:
        sys.stderr.write(result.stderr)
        raise SystemExit(f"deps_check: `{' '.join(cmd)}` failed")
    return json.loads(result.stdout)


def optional_dep_active(package, enabled, dep_name):
    """Whether the manifest dependency on dep_name is on for this build. cargo metadata's
    resolve also lists optional dependencies that only a weak feature ("dep?/feature")
    mentions; those are never built, so they are not part of the graph."""
    manifest = [d for d in package["dependencies"] if d["name"] == dep_name]
    if not manifest:
        return True  # not expected; keep the crate rather than hide it
    for dep in manifest:
        if not dep["optional"]:
            return True
        key = dep.get("rename") or dep["name"]
        if key in enabled:
            return True
        for feature in enabled:
            for item in package["features"].get(feature, []):
                if item == f"dep:{key}" or item.startswith(f"{key}/"):
                    return True
    return False


def walk(meta):
    """Crates reachable from the workspace members, as {id: reached only through a
    dev-dependency}."""
    packages = {p["id"]: p for p in meta["packages"]}
    nodes = {n["id"]: n for n in meta["resolve"]["nodes"]}
    dev_only = {}
    # Visit normal/build edges first, so a crate reached both ways counts as not dev-only.
    for include_dev in (False, True):
        stack = list(meta["workspace_members"])
        seen = set()
        while stack:
            pkg_id = stack.pop()
            if pkg_id in seen:
                continue
            seen.add(pkg_id)
            dev_only.setdefault(pkg_id, include_dev)
            node = nodes[pkg_id]
            package = packages[pkg_id]
            enabled = set(node["features"])
            for dep in node["deps"]:
                kinds = {k["kind"] for k in dep["dep_kinds"]}
                if not include_dev and kinds <= {"dev"}:
                    continue
                if optional_dep_active(package, enabled, packages[dep["pkg"]]["name"]):
                    stack.append(dep["pkg"])
    return dev_only


def check(meta, config):
    packages = {p["id"]: p for p in meta["packages"]}
    members = set(meta["workspace_members"])
    graph = walk(meta)
    licenses = config.get("licenses", {})
    bans = config.get("bans", {})
    allow = set(licenses.get("allow", []))
    clarify = {spec_name(e): e for e in licenses.get("clarify", [])}
    exceptions = {spec_name(e): set(e.get("allow", [])) for e in licenses.get("exceptions", [])}
    denied = {spec_name(e): (e.get("reason", "") if isinstance(e, dict) else "") for e in bans.get("deny", [])}
    skips = {spec_name(e): (e.get("reason", "") if isinstance(e, dict) else "") for e in bans.get("skip", [])}

    errors = []
    seen_licences = set()
    by_name = defaultdict(set)
    for pkg_id in sorted(graph, key=lambda i: (packages[i]["name"], packages[i]["version"])):
        p = packages[pkg_id]
        name, version = p["name"], p["version"]
        crate = f"{name} {version}" + (" (dev-dependency)" if graph[pkg_id] else "")
        by_name[name].add(version)

        expression = clarify[name]["expression"] if name in clarify else p["license"]
        if expression:
            try:
                tree = parse_spdx(expression)
            except SpdxError as e:
                errors.append(f"licence: {crate}: {e}")
            else:
                seen_licences |= leaves(tree)
                if not satisfied(tree, allow | exceptions.get(name, set())):
                    refused = sorted(leaves(tree) - allow - exceptions.get(name, set()))
                    errors.append(
                        f"licence: {crate}: {expression!r} is not satisfied by deny.toml's allow-list"
                        f" (not allowed: {', '.join(refused)})"
                    )
        elif p["license_file"] and name in exceptions:
            pass  # reviewed: its licence file is accepted by a [[licenses.exceptions]] entry
        elif p["license_file"]:
            errors.append(
                f"licence: {crate}: no SPDX expression, only the file {p['license_file']!r};"
                " add a [[licenses.clarify]] entry to deny.toml after reading it"
            )
        else:
            errors.append(f"licence: {crate}: no licence at all")

        source = p["source"]
        if source is None:
            manifest = os.path.realpath(p["manifest_path"])
            if pkg_id not in members and not manifest.startswith(os.path.realpath(ROOT) + os.sep):
                errors.append(f"source: {crate}: path dependency outside the workspace ({manifest})")
        elif source not in CRATES_IO:
            errors.append(f"source: {crate}: {source} is not crates.io")

        if name in denied:
            reason = denied[name]
            errors.append(f"banned: {crate} is in deny.toml's [bans] deny" + (f": {reason}" if reason else ""))

    duplicates = {}
    for name, versions in sorted(by_name.items()):
        majors = defaultdict(list)
        for v in versions:
            majors[major_key(v)].append(v)
        if len(majors) > 1:
            duplicates[name] = sorted(versions, key=lambda v: (major_key(v), v))
    return graph, errors, seen_licences, duplicates, skips


def main():
    with open(os.path.join(ROOT, "deny.toml"), "rb") as f:
        config = tomllib.load(f)
    meta = load_metadata()
    graph, errors, seen_licences, duplicates, skips = check(meta, config)

    if duplicates:
        print(f"deps_check: warning: {len(duplicates)} crates at more than one major version:")
        for name, versions in duplicates.items():
            note = f" (deny.toml skip: {skips[name]})" if name in skips else " (not in deny.toml's [[bans.skip]])"
            print(f"  {name} {', '.join(versions)}{note}")
    if errors:
        for e in errors:
            print(f"deps_check: {e}", file=sys.stderr)
        print(f"deps_check: {len(errors)} problems in {len(graph)} crates", file=sys.stderr)
        return 1
    dev = sum(graph.values())
    print(
        f"deps_check: ok: {len(graph)} crates ({dev} only through dev-dependencies) on crates.io or in the"
        f" workspace, none banned; licences seen: {', '.join(sorted(seen_licences))};"
        f" duplicate majors: {len(duplicates)}" + (f" ({', '.join(duplicates)})" if duplicates else "")
    )
    return 0


def self_test():
    allow = {"MIT", "Apache-2.0", "Unicode-3.0"}
    cases = [
        ("MIT OR Apache-2.0", allow, True),
        ("Apache-2.0 OR MIT", {"MIT"}, True),
        ("(MIT OR Apache-2.0) AND Unicode-3.0", allow, True),
        ("(MIT OR Apache-2.0) AND Unicode-3.0", {"MIT"}, False),
        ("Apache-2.0 WITH LLVM-exception", allow | {"Apache-2.0 WITH LLVM-exception"}, True),
        # An exception makes a distinct licence, as in cargo-deny.
        ("Apache-2.0 WITH LLVM-exception", allow, False),
        ("Apache-2.0 WITH LLVM-exception OR Apache-2.0 OR MIT", allow, True),
        ("GPL-3.0", allow, False),
        ("MIT AND GPL-3.0", allow, False),
        ("GPL-3.0 OR MIT", allow, True),
        # AND binds tighter than OR: MIT OR (Apache-2.0 AND GPL-3.0).
        ("MIT OR Apache-2.0 AND GPL-3.0", allow, True),
        ("(MIT OR Apache-2.0) AND GPL-3.0", allow, False),
        ("MIT/Apache-2.0", {"Apache-2.0"}, True),
        ("Unlicense/MIT", {"Apache-2.0"}, False),
        ("((MIT))", allow, True),
    ]
    failures = 0
    for expr, allowed, want in cases:
        got = satisfied(parse_spdx(expr), allowed)
        if got != want:
            failures += 1
            print(f"self-test: {expr!r} with {sorted(allowed)}: got {got}, want {want}", file=sys.stderr)
    for bad in ["", "MIT OR", "(MIT", "MIT)", "AND MIT", "MIT Apache-2.0", "MIT WITH", "MIT WITH (X)"]:
        try:
            parse_spdx(bad)
        except SpdxError:
            continue
        failures += 1
        print(f"self-test: {bad!r} parsed, want an error", file=sys.stderr)
    if leaves(parse_spdx("(MIT OR Apache-2.0) AND Apache-2.0 WITH LLVM-exception")) != {
        "MIT",
        "Apache-2.0",
        "Apache-2.0 WITH LLVM-exception",
    }:
        failures += 1
        print("self-test: leaves() wrong", file=sys.stderr)
    for version, key in [("1.2.3", (1,)), ("0.4.3", (0, 4)), ("0.0.7", (0, 0, 7)), ("3.0.0-rc.1+x", (3,))]:
        if major_key(version) != key:
            failures += 1
            print(f"self-test: major_key({version!r}) = {major_key(version)}, want {key}", file=sys.stderr)
    if failures:
        print(f"deps_check self-test: {failures} failures", file=sys.stderr)
        return 1
    print(f"deps_check self-test: ok ({len(cases)} licence cases, 8 malformed expressions, 4 versions)")
    return 0


if __name__ == "__main__":
    if sys.argv[1:] == ["--self-test"]:
        sys.exit(self_test())
    if sys.argv[1:]:
        sys.exit(__doc__)
    sys.exit(main())

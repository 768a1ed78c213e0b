#!/usr/bin/env bash
# Counts handoff-core's public API by kind, from nightly rustdoc JSON, to see how
# large the surface a semver promise would cover is (and how a change moves it).
#
# Counted: items reachable from the crate root through public modules and `pub use`
# (each item once, however many paths reach it), the public fields of public structs
# and variants, and the methods, associated consts and associated types of inherent
# impls. Trait impls (derives, Display, From...) are not counted: they add no name.
# Excluded: `#[doc(hidden)]` items (rustdoc strips them; checked again here) and
# everything behind the `__testing` feature (no features are enabled, so it is not
# compiled).
#
# Usage: core/scripts/public-items.sh   (from anywhere inside the repository)
set -euo pipefail

root=$(git -C "$(dirname "$0")" rev-parse --show-toplevel)
target="${CARGO_TARGET_DIR:-$root/target}/rustdoc-json"

(cd "$root" && CARGO_TARGET_DIR="$target" cargo +nightly rustdoc -q -p handoff-core --lib \
    -- -Z unstable-options --output-format json)

python3 - "$target/doc/handoff_core.json" <<'EOF'
import json
import sys
from collections import Counter

doc = json.load(open(sys.argv[1]))
index = doc["index"]
counts = Counter()
seen = set()
paths = 0  # public paths: a re-exported item counts once per path


def item(id_):
    return index.get(str(id_)) if id_ is not None else None


def hidden(it):
    return any("hidden" in json.dumps(attr) for attr in it.get("attrs", []))


def inherent_items(impl_ids):
    for impl_id in impl_ids:
        imp = item(impl_id)
        if imp is None or hidden(imp):
            continue
        inner = imp["inner"]["impl"]
        if inner["trait"] is not None or inner["is_synthetic"] or inner["blanket_impl"] is not None:
            continue
        for member_id in inner["items"]:
            member = item(member_id)
            if member is None or member["visibility"] != "public" or hidden(member):
                continue
            kind = next(iter(member["inner"]))
            counts[{"function": "method"}.get(kind, kind)] += 1


def fields(ids):
    for field_id in ids:
        field = item(field_id)
        if field is not None and not hidden(field):
            counts["field"] += 1


def struct_fields(kind):
    if "plain" in kind:
        fields(kind["plain"]["fields"])
    elif "tuple" in kind:
        fields(f for f in kind["tuple"] if f is not None)


def visit(id_):
    """Counts the item `id_` and what it makes public, once per item."""
    global paths
    it = item(id_)
    if it is None or it["crate_id"] != 0 or hidden(it):
        return  # stripped, or another crate's item re-exported
    paths += 1
    if id_ in seen:
        if "enum" in it["inner"]:
            paths += len(it["inner"]["enum"]["variants"])  # its variants at this path too
        return
    seen.add(id_)
    kind, inner = next(iter(it["inner"].items()))
    if kind == "use":
        paths -= 1  # the target counts the path
        target = item(inner["id"])
        if target is None:
            return
        if inner["is_glob"]:
            for child in target["inner"].get("module", {}).get("items", []):
                visit(child)
        else:
            visit(inner["id"])
        return
    counts[kind] += 1
    if kind == "module":
        for child in inner["items"]:
            visit(child)
    elif kind == "struct":
        struct_fields(inner["kind"])
        inherent_items(inner["impls"])
    elif kind == "enum":
        for variant_id in inner["variants"]:
            variant = item(variant_id)
            if variant is None or hidden(variant):
                continue
            counts["variant"] += 1
            paths += 1
            vkind = variant["inner"]["variant"]["kind"]
            if isinstance(vkind, dict):
                struct_fields(vkind)
        inherent_items(inner["impls"])
    elif kind == "union":
        fields(inner["fields"])
        inherent_items(inner["impls"])
    elif kind == "trait":
        counts["trait item"] += len(inner["items"])


visit(doc["root"])
counts["module"] -= 1  # the crate root itself
paths -= 1

order = ["module", "struct", "enum", "variant", "field", "function", "method", "constant",
         "assoc_const", "assoc_type", "static", "trait", "trait item", "type_alias", "macro", "union"]
for kind in order + sorted(set(counts) - set(order)):
    if counts[kind]:
        print(f"{kind:12} {counts[kind]:5}")
print(f"{'total':12} {sum(counts.values()):5}")
print(f"{'paths':12} {paths:5}  (modules, types, variants, functions, constants, statics, traits,")
print(f"{'':12} {'':5}   aliases by path from the root; no fields, methods or trait items)")
EOF

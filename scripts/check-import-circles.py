#!/usr/bin/env python3
"""Import circles between the modules of a Rust source tree (default: src/).

Each file is a module (`src/record/xen.rs` is `record::xen`, `src/record/mod.rs` is `record`,
`src/lib.rs` is the crate root). A module depends on another when its non-test code names it:
`use crate::a::b::X`, `use super::X`, `use child::X`, or an inline `crate::a::X` path. A path is
charged to the longest module it names, so `use super::Foo` inside `record/xen.rs` depends on
`record` itself: a child that imports what its parent defines, while the parent re-exports the
child, is a circle. Code under `#[cfg(test)]` is left out (unit tests may look anywhere).

Prints the floors (modules in dependency order, lowest first) when there is no circle, and
every circle otherwise, with the lines that make it; exits 1 on a circle.

    scripts/check-import-circles.py [SRC_DIR]
    scripts/check-import-circles.py --self-test
"""
import os
import re
import sys
import tempfile


def module_name(src, path):
    rel = os.path.relpath(path, src)[: -len(".rs")].split(os.sep)
    if rel == ["lib"] or rel == ["main"]:
        return "crate"
    if rel[-1] == "mod":
        rel = rel[:-1]
    return "::".join(rel) or "crate"


def strip_comments_and_tests(text):
    # Cut unit-test modules: from a `#[cfg(test)]` line to the end of the item it gates. The
    # crate keeps `mod tests` last in each file, so cutting to the end of the file is enough for
    # `mod tests`; single gated `use` lines are dropped alone.
    lines = text.split("\n")
    out = []
    skip_rest = False
    gated = False
    for line in lines:
        stripped = line.strip()
        if skip_rest:
            out.append("")
            continue
        if stripped.startswith("#[cfg(test)]"):
            gated = True
            out.append("")
            continue
        if gated:
            gated = False
            if re.match(r"(pub(\([a-z]+\))?\s+)?mod\s+\w+\s*\{", stripped):
                skip_rest = True
                out.append("")
                continue
            if stripped.startswith("use ") or stripped.startswith("pub use "):
                out.append("")
                continue
        out.append(re.sub(r"//.*", "", line))
    return "\n".join(out)


def expand_use_tree(tree):
    """`a::{b, c::{d, e}}` -> ['a::b', 'a::c::d', 'a::c::e']."""
    tree = re.sub(r"\s+", "", tree)
    tree = re.sub(r"\bas\w+", "", tree)
    brace = tree.find("{")
    if brace < 0:
        return [tree]
    prefix = tree[:brace]
    body = tree[brace + 1 : tree.rfind("}")]
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(body):
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(body[start:i])
            start = i + 1
    parts.append(body[start:])
    result = []
    for part in parts:
        if part:
            result.extend(prefix + p for p in expand_use_tree(part))
    return result


def resolve(path, current, modules):
    """The module a path names, or None (an external crate or a prelude item)."""
    segs = [s for s in path.split("::") if s]
    if not segs:
        return None
    here = [] if current == "crate" else current.split("::")
    if segs[0] == "crate":
        base, rest = [], segs[1:]
    elif segs[0] == "self":
        base, rest = here, segs[1:]
    elif segs[0] == "super":
        base, rest = here, segs
        while rest and rest[0] == "super":
            base, rest = base[:-1], rest[1:]
    elif "::".join(here + segs[:1]) in modules:
        base, rest = here, segs  # a child module named without `self::`
    else:
        return None
    best = "::".join(base) if base else "crate"
    for i in range(1, len(rest) + 1):
        candidate = "::".join(base + rest[:i])
        if candidate in modules:
            best = candidate
    return best


def dependencies(src):
    files = {}
    for root, _, names in os.walk(src):
        for name in names:
            if name.endswith(".rs"):
                path = os.path.join(root, name)
                files[module_name(src, path)] = path
    # Modules outside the tree through `#[path = "…"] mod name;` (the crate's arch/ layer):
    # their files join the graph under the name they are declared with.
    for module, path in list(files.items()):
        with open(path, encoding="utf-8") as f:
            text = f.read()
        pattern = r'#\[path\s*=\s*"([^"]+)"\]\s*(?:#\[[^\]]*\]\s*)*(?:pub(?:\([a-z]+\))?\s+)?mod\s+(\w+)\s*;'
        for m in re.finditer(pattern, text):
            target = os.path.normpath(os.path.join(os.path.dirname(path), m.group(1)))
            prefix = m.group(2) if module == "crate" else f"{module}::{m.group(2)}"
            if os.path.basename(target) == "mod.rs":
                outer = os.path.dirname(target)
                for root, _, names in os.walk(outer):
                    for name in names:
                        if name.endswith(".rs"):
                            inner = module_name(outer, os.path.join(root, name))
                            full = prefix if inner == "crate" else f"{prefix}::{inner}"
                            files.setdefault(full, os.path.join(root, name))
            elif os.path.exists(target):
                files.setdefault(prefix, target)
    modules = set(files)
    edges = {m: {} for m in modules}
    for module, path in files.items():
        with open(path, encoding="utf-8") as f:
            text = strip_comments_and_tests(f.read())
        found = []
        for m in re.finditer(r"\b(?:pub(?:\([a-z]+\))?\s+)?use\s+([^;]+);", text):
            found.extend((p, m.start()) for p in expand_use_tree(m.group(1)))
        for m in re.finditer(r"(?<![\w:])((?:crate|super|self)(?:::\w+)+)", text):
            found.append((m.group(1), m.start()))
        for target_path, offset in found:
            target = resolve(target_path, module, modules)
            if target is None or target == module:
                continue
            # A parent naming its own child (`mod x;` then `pub use x::Y`) is a dependency
            # too, but `self::x` inside a child to its own descendants is fine either way.
            line = text.count("\n", 0, offset) + 1
            edges[module].setdefault(target, f"{os.path.relpath(path, src)}:{line}")
    return edges


def strongly_connected(edges):
    index, low, stack, on_stack, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges[v]):
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
            out.append(sorted(component))

    sys.setrecursionlimit(10000)
    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out  # reverse topological order: dependencies first


def check(src, quiet=False):
    edges = dependencies(src)
    components = strongly_connected(edges)
    circles = [c for c in components if len(c) > 1]
    if circles:
        for circle in circles:
            print(f"import circle: {' <-> '.join(circle)}")
            members = set(circle)
            for a in circle:
                for b, where in sorted(edges[a].items()):
                    if b in members:
                        print(f"    {a} -> {b}  ({where})")
        return 1
    if not quiet:
        print(f"no import circle among {len(edges)} modules of {src}; floors, lowest first:")
        for (module,) in components:
            deps = ", ".join(sorted(edges[module])) or "-"
            print(f"    {module:<24} uses {deps}")
    return 0


def self_test():
    """The check must see a circle when there is one, and only then."""
    cases = {
        "circle through a parent's items": (
            {"lib.rs": "mod a;", "a/mod.rs": "mod b;\npub use b::X;\npub struct Y;",
             "a/b.rs": "use super::Y;\npub struct X;"},
            1,
        ),
        "circle through an inline path": (
            {"lib.rs": "mod a; mod b;", "a.rs": "fn f() { crate::b::g() }",
             "b.rs": "use crate::{c, a::{f as h}};", "c.rs": ""},
            1,
        ),
        "test-only import is not a dependency": (
            {"lib.rs": "mod a; mod b;", "a.rs": "use crate::b::X;\npub struct Y;",
             "b.rs": "pub struct X;\n#[cfg(test)]\nmod tests {\n    use crate::a::Y;\n}"},
            0,
        ),
        "floors": (
            {"lib.rs": "mod a; mod b;", "a.rs": "pub struct X; // crate::b::Y",
             "b.rs": "use crate::a::X;"},
            0,
        ),
    }
    failed = 0
    for name, (tree, expected) in cases.items():
        with tempfile.TemporaryDirectory() as d:
            for rel, text in tree.items():
                os.makedirs(os.path.dirname(os.path.join(d, rel)), exist_ok=True)
                with open(os.path.join(d, rel), "w") as f:
                    f.write(text)
            got = check(d, quiet=True)
        if got != expected:
            print(f"self-test failed: {name}: expected {expected}, got {got}")
            failed += 1
    print(f"self-test: {len(cases) - failed}/{len(cases)} cases")
    return 1 if failed else 0


if __name__ == "__main__":
    if sys.argv[1:] == ["--self-test"]:
        sys.exit(self_test())
    src = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "src")
    sys.exit(check(os.path.normpath(src)))

#!/usr/bin/env python3
"""Print the import graph of the bids_qc package: one line per module, the bids_qc modules it
imports (top-level and inside functions alike), read from the source with ``ast`` (nothing is
imported, so it works on any checkout).

    python scripts/import_graph.py                      # this checkout
    python scripts/import_graph.py /path/to/bids_qc     # another tree, e.g. an older commit:
    git archive 013c14f | tar -x -C /tmp/before && python scripts/import_graph.py /tmp/before/bids_qc
    python scripts/import_graph.py --dot | dot -Tsvg > graph.svg
"""
from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path


def module_name(path: Path, package: Path) -> str:
    parts = path.relative_to(package.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, package: Path, known: set[str]) -> set[str]:
    """bids_qc modules imported by ``path`` (``from bids_qc.x import y`` counts as bids_qc.x.y
    when that is a module, else bids_qc.x)."""
    here = module_name(path, package)
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import
                anchor = here.split(".")[: len(here.split(".")) - node.level + (path.name == "__init__.py")]
                base = ".".join(anchor + ([base] if base else []))
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        out.update(n for n in names if n.split(".")[0] == package.name and n != here)
    return out


def graph(package: Path) -> dict[str, set[str]]:
    files = sorted(package.rglob("*.py"))
    known = {module_name(f, package) for f in files}
    return {module_name(f, package): imports_of(f, package, known) for f in files}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("package", nargs="?", type=Path,
                    default=Path(__file__).resolve().parent.parent / "bids_qc")
    ap.add_argument("--dot", action="store_true", help="Graphviz output")
    args = ap.parse_args(argv)
    edges = graph(args.package.resolve())
    if args.dot:
        print("digraph bids_qc {\n  rankdir=LR; node [shape=box, fontsize=10];")
        for mod, deps in edges.items():
            for dep in sorted(deps):
                print(f'  "{mod}" -> "{dep}";')
        print("}")
        return 0
    for mod, deps in edges.items():
        print(f"{mod}: {', '.join(sorted(deps)) or '-'}")
    print(f"# {len(edges)} modules, {sum(map(len, edges.values()))} edges", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

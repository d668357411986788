#!/usr/bin/env python3
"""Largest files and functions of the tree (Python by ast, Rust by brace matching).

Used to give the before/after figures of a restructuring:
    python3 .ci/codesize.py [--top N] [ROOT]
Counts physical lines. Tests and benches are listed apart from the product code.
"""

from __future__ import annotations

import argparse
import ast
import re
import subprocess
from pathlib import Path

_RUST_STR = re.compile(r'r#*"[^"]*"#*|b?"(?:[^"\\\\]|\\\\.)*"|b?\'(?:[^\'\\\\]|\\\\.{1,10})\'')
_RUST_FN = re.compile(r"^\s*(pub(\([^)]*\))?\s+)?(const\s+)?(unsafe\s+)?fn\s+(\w+)")


def tracked(root: Path) -> list[Path]:
    out = subprocess.run(["git", "-C", str(root), "ls-files"], capture_output=True, text=True, check=True).stdout
    return [root / p for p in out.split() if p.endswith((".py", ".rs"))]


def python_functions(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), str(path))
    out: list[tuple[int, str]] = []

    def walk(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                assert child.end_lineno is not None
                out.append((child.end_lineno - child.lineno + 1, f"{prefix}{child.name}"))
                walk(child, f"{prefix}{child.name}.")
            elif isinstance(child, ast.ClassDef):
                walk(child, f"{prefix}{child.name}.")

    walk(tree, "")
    return out


def rust_functions(path: Path) -> list[tuple[int, str]]:
    lines = path.read_text().splitlines()
    out: list[tuple[int, str]] = []
    i = 0
    while i < len(lines):
        m = _RUST_FN.match(lines[i])
        if not m:
            i += 1
            continue
        depth, j, opened = 0, i, False
        while j < len(lines):
            code = _RUST_STR.sub('""', lines[j]).split("//", 1)[0]
            depth += code.count("{") - code.count("}")
            opened = opened or "{" in code
            if (opened and depth <= 0) or (not opened and code.rstrip().endswith(";")):
                break
            j += 1
        if opened and not (i > 0 and lines[i - 1].strip().startswith("#[test")):  # unit tests are not product
            out.append((j - i + 1, m.group(5)))
        i += 1
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root", nargs="?", default=".")
    ap.add_argument("--top", type=int, default=12)
    args = ap.parse_args()
    root = Path(args.root).resolve()
    files, funcs = [], []
    for p in tracked(root):
        rel = p.relative_to(root)
        if not p.exists():
            continue
        product = not str(rel).startswith(("tests/", "bench/", "docker/", ".ci/")) and "/tests/" not in str(rel)
        n = len(p.read_text().splitlines())
        files.append((n, str(rel), product))
        for length, name in python_functions(p) if p.suffix == ".py" else rust_functions(p):
            funcs.append((length, f"{rel}:{name}", product))
    for title, rows in (("files", files), ("functions", funcs)):
        prod = sorted((r for r in rows if r[2]), reverse=True)
        print(f"largest product {title} (lines):")
        for n, name, _ in prod[: args.top]:
            print(f"  {n:6d}  {name}")
    over = [r for r in funcs if r[2] and r[0] > 80]
    print(f"product functions over 80 lines: {len(over)}")


if __name__ == "__main__":
    main()

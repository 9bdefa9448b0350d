"""The app packages' module tree with line counts, as Markdown: ``python -m bench tree [--root DIR]``.

A table of totals per package, then the tree (files with their line counts, directories with the sum
of everything under them). Files are the ones git knows (tracked or not ignored), so caches and
var/ never count; outside a git checkout (an extracted ``git archive``) every file but bytecode."""

from __future__ import annotations

import argparse
import subprocess
from pathlib import Path, PurePosixPath

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ["openclaw", "agentflow", "scheduler", "fleet", "dashboard", "demo", "templates", "static/js"]


def is_checkout(root: Path) -> bool:
    """Whether root is a git work tree's top (an archive extracted under var/ lies inside one but is
    ignored by it: asking that checkout's git would list nothing)."""
    try:
        top = subprocess.run(
            ["git", "rev-parse", "--show-toplevel"], cwd=root, check=True, capture_output=True, text=True
        ).stdout.strip()
    except (subprocess.CalledProcessError, FileNotFoundError):
        return False
    return Path(top).resolve() == root.resolve()


def files_under(root: Path, package: str) -> list[PurePosixPath]:
    if is_checkout(root):
        listed = subprocess.run(
            ["git", "ls-files", "--cached", "--others", "--exclude-standard", "--", package],
            cwd=root,
            check=True,
            capture_output=True,
            text=True,
        ).stdout.splitlines()
        paths = [PurePosixPath(p) for p in listed if (root / p).is_file()]
    else:
        paths = [
            PurePosixPath(p.relative_to(root).as_posix())
            for p in (root / package).rglob("*")
            if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
        ]
    return sorted(set(paths))


def count_lines(path: Path) -> int:
    data = path.read_bytes()
    return data.count(b"\n") + (1 if data and not data.endswith(b"\n") else 0)


def render(root: Path = ROOT, packages: list[str] = PACKAGES) -> str:
    summary = ["| package | files | lines |", "| --- | ---: | ---: |"]
    tree: list[str] = []
    all_files = all_lines = 0
    for package in packages:
        counts = {p: count_lines(root / p) for p in files_under(root, package)}
        total = sum(counts.values())
        all_files += len(counts)
        all_lines += total
        summary.append(f"| `{package}/` | {len(counts)} | {total:,} |")
        # Directory totals: every ancestor of a file inside the package gets its lines.
        dirs: dict[PurePosixPath, int] = {}
        for path, lines in counts.items():
            for parent in path.parents:
                if parent == PurePosixPath(package) or PurePosixPath(package) in parent.parents:
                    dirs[parent] = dirs.get(parent, 0) + lines
        entries = sorted([(p, n, True) for p, n in dirs.items()] + [(p, n, False) for p, n in counts.items()])
        base_depth = len(PurePosixPath(package).parts)
        for path, lines, is_dir in entries:
            depth = len(path.parts) - base_depth
            name = (str(path) if depth == 0 else path.name) + ("/" if is_dir else "")
            tree.append(f"{'  ' * depth}{name:<{60 - 2 * depth}} {lines:>7,}")
    summary.append(f"| **total** | **{all_files}** | **{all_lines:,}** |")
    return "\n".join(["## Module tree (lines per file)", "", *summary, "", "```text", *tree, "```", ""])


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench tree", description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=ROOT, help="the checkout to count (default: this one)")
    parser.add_argument("packages", nargs="*", default=PACKAGES, help=" ".join(PACKAGES))
    args = parser.parse_args(argv)
    print(render(args.root.resolve(), args.packages), end="")
    return 0

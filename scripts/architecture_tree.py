"""Regenerate "The tree" in docs/architecture.md from the modules' first docstring lines.

Run: ``python scripts/architecture_tree.py`` (after adding, moving or renaming a module).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "src" / "ncm_core"
DOC = ROOT / "docs" / "architecture.md"
WIDTH = 92  # characters of a docstring line


def first_line(path: Path) -> str:
    doc = ast.get_docstring(ast.parse(path.read_text())) or ""
    line = doc.strip().splitlines()[0] if doc.strip() else ""
    return line if len(line) <= WIDTH else line[: WIDTH - 3] + "..."


def entries(folder: Path, depth: int) -> list[str]:
    pad = "  " * depth
    lines = [f"{pad}{f.name:<{27 - len(pad)}}{first_line(f)}".rstrip() for f in sorted(folder.glob("*.py"))]
    for sub in sorted(p for p in folder.iterdir() if p.is_dir() and (p / "__init__.py").exists()):
        lines.append(f"{pad}{sub.name}/")
        lines += [ln for ln in entries(sub, depth + 1) if not ln.strip().startswith("__init__.py")]
    return lines


def main() -> None:
    tree = "\n".join(
        [
            "ncm_core/",
            *entries(PKG, 1),
            "napari_ncm/                  the plugin: reader, writer, sample data, dock "
            "widgets (a thin skin over ncm_core)",
        ]
    )
    text = DOC.read_text()
    new = re.sub(r"(## The tree\n\n.*?```text\n).*?(\n```)", lambda m: m.group(1) + tree + m.group(2), text, flags=re.S)
    DOC.write_text(new)
    print(f"{DOC.relative_to(ROOT)}: {'updated' if new != text else 'unchanged'}")


if __name__ == "__main__":
    main()

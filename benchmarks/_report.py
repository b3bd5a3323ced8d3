"""Writing one benchmark's section of docs/benchmarks.md without touching the others."""

from __future__ import annotations

import re
from pathlib import Path


def write_section(path: Path, name: str, text: str) -> None:
    """Replace (or append) the section between ``<!-- name -->`` and ``<!-- /name -->`` in ``path``."""
    start, end = f"<!-- {name} -->", f"<!-- /{name} -->"
    block = f"{start}\n{text.strip()}\n{end}\n"
    old = path.read_text() if path.exists() else "# Benchmarks\n\n"
    pattern = re.compile(re.escape(start) + ".*?" + re.escape(end) + r"\n?", re.S)
    new = pattern.sub(lambda m: block, old) if pattern.search(old) else old.rstrip() + "\n\n" + block
    path.write_text(new)

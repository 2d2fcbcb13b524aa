"""Build notebooks/<name>.ipynb from the text source notebooks/src/<name>.py.

The source is a py:percent-like file (the subset of jupytext's format we need):

    # %% [markdown]
    # # Title
    # Some text.

    # %% tags=["parameters"]
    seed = 0

    # %%
    import vlmlab

Lines before the first ``# %%`` are a comment about the file and are dropped. Markdown lines
lose their leading ``# ``. The notebook is written without outputs or execution counts, with
deterministic cell ids, so rebuilding an unchanged source gives an identical file.

Usage:
    python scripts/make_notebook.py                 # every notebooks/src/*.py
    python scripts/make_notebook.py notebooks/src/00_quickstart.py
    python scripts/make_notebook.py --check         # exit 1 if a notebook differs from its source
"""
from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
SRC_DIR = ROOT / "notebooks" / "src"
HEADER = re.compile(r"^# %%(?P<rest>.*)$")
TAGS = re.compile(r"tags\s*=\s*(\[[^\]]*\])")
KERNELSPEC = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}


def _cell(kind: str, lines: list[str], tags: list[str], index: int):
    while lines and not lines[0].strip():
        lines = lines[1:]
    while lines and not lines[-1].strip():
        lines = lines[:-1]
    if kind == "markdown":
        lines = [re.sub(r"^# ?", "", line) for line in lines]
    source = "\n".join(lines)
    make = nbformat.v4.new_markdown_cell if kind == "markdown" else nbformat.v4.new_code_cell
    cell = make(source, metadata={"tags": tags} if tags else {})
    cell.id = f"c{index:02d}-{hashlib.sha1(source.encode()).hexdigest()[:8]}"
    return cell


def build(spec: Path) -> nbformat.NotebookNode:
    """Parse a percent-format source into a notebook node (no outputs)."""
    cells, kind, tags, lines, started = [], "code", [], [], False
    for line in spec.read_text(encoding="utf-8").splitlines():
        match = HEADER.match(line)
        if not match:
            lines.append(line)
            continue
        if started:
            cells.append(_cell(kind, lines, tags, len(cells)))
        rest = match.group("rest")
        kind = "markdown" if "[markdown]" in rest else "code"
        tag_match = TAGS.search(rest)
        tags = json.loads(tag_match.group(1)) if tag_match else []
        lines, started = [], True
    if not started:
        raise SystemExit(f"{spec}: no '# %%' cell marker found")
    cells.append(_cell(kind, lines, tags, len(cells)))
    nb = nbformat.v4.new_notebook(cells=cells, metadata={
        "kernelspec": KERNELSPEC, "language_info": {"name": "python"}})
    nbformat.validate(nb)
    return nb


def target(spec: Path) -> Path:
    return spec.resolve().parents[1] / f"{spec.stem}.ipynb"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("specs", nargs="*", type=Path, help="sources (default: notebooks/src/*.py)")
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 on a difference")
    args = parser.parse_args(argv)
    specs = args.specs or sorted(SRC_DIR.glob("*.py"))
    stale = []
    for spec in specs:
        text = nbformat.writes(build(spec)) + "\n"
        out = target(spec)
        if args.check:
            if not out.is_file() or out.read_text(encoding="utf-8") != text:
                stale.append(out)
        else:
            out.write_text(text, encoding="utf-8")
            print(f"wrote {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")
    for out in stale:
        print(f"{out} differs from its source; run: python scripts/make_notebook.py", file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())

"""A static site of a profile's results: ``results/<profile>/site/index.html`` (``make report``).

One section per notebook folder of ``results/<profile>/``: the notebook's title (first markdown
heading of ``executed.ipynb``), the paper it reproduces, a summary figure at the top
(:data:`SUMMARY_FIGURES`, else the first), the other figures with captions (the markdown cell
just before the cell that saved them, else the figure name), the main table
(:data:`MAIN_TABLES`, else the first), the claims ledger (``tables/claims.csv``, verdicts
coloured), the run's provenance and a link to the executed notebook rendered by nbconvert
(``site/<notebook>.html``). Figures are copied into the site and linked relatively; the pages
load nothing from the network (nbconvert's CDN scripts, MathJax, require.js and mermaid, are left
out), so the folder opens from the file system and can be copied or zipped as it is.
"""
from __future__ import annotations

import ast
import datetime as _dt
import fnmatch
import html
import json
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from vlmlab.results import atomic_path
from vlmlab.runtime import REPO_ROOT, get_logger

__all__ = ["build_site", "figure_captions", "notebook_title", "SUMMARY_FIGURES", "MAIN_TABLES", "PAPERS"]

log = get_logger("vlmlab.report")

# The figure a reader should see first, per notebook (figures/<name>.png).
SUMMARY_FIGURES = {
    "00_quickstart": "scatter",
    "01_uniformity_analysis": "accuracy_vs_uniformity",
    "02_uniinfo_tta": "accuracy_per_corruption",
    "03_coop_shots": "coop_curves",
    "04_visual_prompt_fid": "gain_vs_fid",
    "05_vlm_blind_tests": "readout_vs_vlm",
}
# The main table per notebook, first present wins (paper-profile comparisons come first).
MAIN_TABLES = {
    "00_quickstart": ("summary",),
    "01_uniformity_analysis": ("published_vs_reproduced", "metrics"),
    "02_uniinfo_tta": ("tta_vs_poster", "tta_poster", "tta"),
    "03_coop_shots": ("coop_vs_published", "coop_average"),
    "04_visual_prompt_fid": ("gain_summary", "visual_prompting"),
    "05_vlm_blind_tests": ("readout_vs_vlm",),
}
PAPERS = {
    "01_uniformity_analysis": ("Adachi et al., UniInfo", "https://arxiv.org/abs/2505.12912"),
    "02_uniinfo_tta": ("Adachi et al., UniInfo", "https://arxiv.org/abs/2505.12912"),
    "03_coop_shots": ("Zhou et al., CoOp, IJCV 2022", "https://arxiv.org/abs/2109.01134"),
    "04_visual_prompt_fid": ("Bahng et al., visual prompting, 2022", "https://arxiv.org/abs/2203.17274"),
    "05_vlm_blind_tests": ("Fu et al., Hidden in plain sight", "https://arxiv.org/abs/2506.08008"),
}
MAX_ROWS = 60          # longer tables show their head and link the full CSV
MAX_CAPTION = 400      # characters of a caption taken from a markdown cell
SITE = "site"
CSS = """
body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
nav a{margin-right:1em} section{border-top:2px solid #ddd;margin-top:2.5em;padding-top:1em}
figure{margin:1em 0} figure img{max-width:100%;border:1px solid #eee} figcaption{color:#555;font-size:.9em}
figure.summary img{max-width:90%} .gallery{display:grid;grid-template-columns:repeat(auto-fill,minmax(320px,1fr));gap:1em}
table{border-collapse:collapse;font-size:.85em;margin:.5em 0} th,td{border:1px solid #ccc;padding:2px 6px;text-align:left}
th{background:#f4f4f4} table.claims td:first-child{word-break:break-all;min-width:12em} td.holds{background:#d8f0d8} td.fails{background:#f6d0d0} td.not_measured{background:#eee;color:#666}
.prov{font-size:.85em;color:#444} .warn{color:#a00} .summary-line{font-weight:bold}
"""


@dataclass
class NotebookPage:
    """What the site shows of one notebook folder."""

    name: str
    title: str
    paper: tuple[str, str | None] | None
    summary: str | None                  # figure name shown at the top
    figures: list[tuple[str, str]] = field(default_factory=list)   # (name, caption), summary first
    table: str | None = None
    provenance: dict[str, Any] | None = None
    notebook_html: str | None = None     # site-relative link to the rendered executed notebook


def _read_notebook(path: Path):
    import nbformat

    return nbformat.read(path, as_version=4) if path.is_file() else None


def notebook_title(nb, default: str) -> str:
    """The text of the first markdown heading of ``nb`` (an ``nbformat`` node), else ``default``."""
    for cell in (nb.cells if nb is not None else []):
        if cell.cell_type == "markdown":
            match = re.search(r"^\s*#+\s+(.+?)\s*#*\s*$", cell.source, re.M)
            if match:
                return match.group(1)
    return default


def _figure_patterns(source: str) -> list[str]:
    """Glob patterns of the figure names a code cell saves: ``save_figure(fig, "a")``, ``f"gain_{m}"``."""
    try:
        tree = ast.parse(source)
    except SyntaxError:                    # IPython magics: fall back to plain string literals
        return re.findall(r"save_figure\(.*[\"']([\w.-]+)[\"']\s*\)", source)
    patterns = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) == "save_figure"):
            continue
        arg = node.args[1] if len(node.args) > 1 else next((k.value for k in node.keywords if k.arg == "name"), None)
        if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
            patterns.append(arg.value)
        elif isinstance(arg, ast.JoinedStr):
            patterns.append("".join(v.value if isinstance(v, ast.Constant) else "*" for v in arg.values))
    return patterns


def _caption_text(markdown: str) -> str:
    """A markdown cell as one caption line: heading marks, emphasis and code ticks dropped."""
    text = re.sub(r"^\s*#+\s*", "", markdown, flags=re.M)
    text = " ".join(re.sub(r"[`*]", "", text).split())
    return text if len(text) <= MAX_CAPTION else text[:MAX_CAPTION - 1].rsplit(" ", 1)[0] + " …"


def figure_captions(nb, names: list[str]) -> dict[str, str]:
    """Caption per figure name: the markdown cell just before the code cell that saved it.

    Args:
        nb: the executed notebook (``nbformat`` node) or ``None``.
        names: the figure names present (``figures/<name>.png``).
    Returns:
        ``{name: caption}`` for the names whose saving cell follows a markdown cell.
    """
    captions: dict[str, str] = {}
    previous_markdown = None
    for cell in (nb.cells if nb is not None else []):
        if cell.cell_type == "markdown":
            previous_markdown = cell.source
            continue
        if cell.cell_type == "code" and previous_markdown:
            for pattern in _figure_patterns(cell.source):
                for name in fnmatch.filter(names, pattern):
                    captions.setdefault(name, _caption_text(previous_markdown))
        previous_markdown = None if cell.cell_type == "code" else previous_markdown
    return captions


def _offline_html(nb) -> str:
    """The notebook as one HTML page (nbconvert's lab template) without any script from a CDN."""
    import jinja2
    from nbconvert import HTMLExporter

    template = ("{%- extends 'lab/index.html.j2' -%}\n"
                + "".join(f"{{% block {b} %}}{{% endblock {b} %}}\n" for b in
                          ("html_head_js", "jupyter_widgets", "html_head_js_mathjax", "html_head_js_mermaidjs")))
    exporter = HTMLExporter(template_name="lab", template_file="vlmlab_offline.html.j2",
                            extra_loaders=[jinja2.DictLoader({"vlmlab_offline.html.j2": template})])
    body, _ = exporter.from_notebook_node(nb)
    return body


def _page(run_dir: Path, site: Path) -> NotebookPage:
    """Collect one notebook folder's page; copy its figures and main CSV into ``site/<notebook>/``."""
    name = run_dir.name
    nb = _read_notebook(run_dir / "executed.ipynb")
    figures = sorted(p.stem for p in (run_dir / "figures").glob("*.png"))
    captions = figure_captions(nb, figures)
    summary = SUMMARY_FIGURES.get(name) if SUMMARY_FIGURES.get(name) in figures else (figures[0] if figures else None)
    ordered = ([summary] if summary else []) + [f for f in figures if f != summary]
    tables = sorted(p.stem for p in (run_dir / "tables").glob("*.csv") if p.stem != "claims")
    table = next((t for t in MAIN_TABLES.get(name, ()) if t in tables), tables[0] if tables else None)
    for fig in ordered:
        _copy(run_dir / "figures" / f"{fig}.png", site / name / "figures" / f"{fig}.png")
    for csv in [table, "claims"]:
        if csv and (run_dir / "tables" / f"{csv}.csv").is_file():
            _copy(run_dir / "tables" / f"{csv}.csv", site / name / "tables" / f"{csv}.csv")
    prov_path = run_dir / "provenance.json"
    page = NotebookPage(name, notebook_title(nb, name), PAPERS.get(name) or _paper_from_claims(run_dir),
                        summary, [(f, captions.get(f, f.replace("_", " "))) for f in ordered], table,
                        json.loads(prov_path.read_text()) if prov_path.is_file() else None)
    if nb is not None:
        with atomic_path(site / f"{name}.html") as tmp:
            tmp.write_text(_offline_html(nb), encoding="utf-8")
        page.notebook_html = f"{name}.html"
    return page


def _copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(src, dst)


def _paper_from_claims(run_dir: Path) -> tuple[str, None] | None:
    """The ``paper`` column of the run's claims ledger, when the notebook is not in :data:`PAPERS`."""
    path = run_dir / "tables" / "claims.csv"
    if not path.is_file():
        return None
    papers = pd.read_csv(path, keep_default_na=False).get("paper", pd.Series(dtype=str))
    papers = [p for p in dict.fromkeys(papers) if p]
    return ("; ".join(papers), None) if papers else None


def _table_html(csv: Path, link: str) -> str:
    """A CSV as an HTML table (numbers to 4 significant digits), its first :data:`MAX_ROWS` rows."""
    df = pd.read_csv(csv)
    note = (f'<p>first {MAX_ROWS} of {len(df)} rows; <a href="{html.escape(link)}">full CSV</a></p>'
            if len(df) > MAX_ROWS else f'<p><a href="{html.escape(link)}">CSV</a></p>')
    return df.head(MAX_ROWS).to_html(index=False, na_rep="", float_format=lambda v: f"{v:.4g}", border=0) + note


def _claims_html(csv: Path, scorecard: Path | None = None) -> str:
    """The claims ledger with one CSS class per verdict (``holds``, ``fails``, ``not_measured``); with the
    profile's ``scorecard`` (``results/<profile>/claims.csv``) from ``make reruns``, each claim's count of
    runs it holds in beside its verdict (column ``reruns``)."""
    df = pd.read_csv(csv, keep_default_na=False)
    if scorecard is not None and scorecard.is_file():
        card = pd.read_csv(scorecard, keep_default_na=False)
        if "reruns" in card:
            card = card[card.notebook == csv.parents[1].name]                  # <notebook>/tables/claims.csv
            df["reruns"] = df.claim_id.map(dict(zip(card.claim_id, card.reruns))).fillna("")
    cols = [c for c in ("claim_id", "statement", "paper_value", "ours", "verdict", "reruns", "note", "vs_paper")
            if c in df]
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    def cell(row, c):
        cls = f' class="{html.escape(str(row[c]))}"' if c == "verdict" else ""
        return f"<td{cls}>{html.escape(str(row[c]))}</td>"

    rows = "".join("<tr>" + "".join(cell(r, c) for c in cols) + "</tr>" for _, r in df.iterrows())
    return f'<table class="claims"><tr>{head}</tr>{rows}</table>'


def _provenance_html(prov: dict[str, Any] | None) -> str:
    if prov is None:
        return '<p class="prov warn">No provenance.json: the run did not finish; its files may be stale.</p>'
    git, dev = prov.get("git") or {}, prov.get("device") or {}
    device = ", ".join(dev.get("gpus") or []) or dev.get("cpu") or "cpu"
    items = {"commit": (git.get("commit") or "?")[:12], "dirty": git.get("dirty"),
             "device": f"{dev.get('requested', '?')} ({device}, {dev.get('torch_threads', '?')} threads)",
             "wall time": f"{float(prov.get('wall_time_s', float('nan'))):.1f} s", "date": prov.get("timestamp"),
             "host": prov.get("hostname")}
    return '<p class="prov">' + " · ".join(f"{k}: {html.escape(str(v))}" for k, v in items.items()) + "</p>"


def _section_html(page: NotebookPage, run_dir: Path) -> str:
    parts = [f'<section id="{page.name}"><h2>{html.escape(page.title)}</h2>',
             f"<p><code>{page.name}</code>"]
    if page.paper:
        text, url = page.paper
        parts.append(" · paper: " + (f'<a href="{html.escape(url)}">{html.escape(text)}</a>' if url
                                     else html.escape(text)))
    if page.notebook_html:
        parts.append(f' · <a class="executed" href="{page.notebook_html}">executed notebook</a>')
    parts.append("</p>" + _provenance_html(page.provenance))
    for i, (fig, caption) in enumerate(page.figures):
        img = (f'<figure{" class=summary" if i == 0 else ""}><img src="{page.name}/figures/{fig}.png" '
               f'alt="{html.escape(fig)}"><figcaption>{html.escape(caption)}</figcaption></figure>')
        parts.append(img if i == 0 else ('<div class="gallery">' if i == 1 else "") + img)
    parts.append("</div>" if len(page.figures) > 1 else "")
    if page.table:
        parts.append(f"<h3>Main table: {html.escape(page.table)}</h3>" + _table_html(
            run_dir / "tables" / f"{page.table}.csv", f"{page.name}/tables/{page.table}.csv"))
    claims = run_dir / "tables" / "claims.csv"
    if claims.is_file():
        parts.append("<h3>Claims</h3>" + _claims_html(claims, run_dir.parent / "claims.csv"))
    return "".join(parts) + "</section>"


def _claims_summary(results: Path) -> str:
    """A link to ``claims.md`` (``make claims``) and its summary line, or nothing."""
    md = results / "claims.md"
    if not md.is_file():
        return ""
    match = re.search(r"\*\*(\d+ claims:[^*]*?)\.?\*\*", md.read_text(encoding="utf-8"))
    line = html.escape(match.group(1)) if match else "claims scorecard"
    return f'<p class="summary-line"><a href="../claims.md">{line}</a></p>'


def run_dirs(results: Path) -> list[Path]:
    """The notebook folders of ``results/<profile>/``: ``NN_name/`` with figures, tables or provenance."""
    return [d for d in sorted(results.glob("[0-9][0-9]_*")) if d.is_dir() and any(
        (d / p).exists() for p in ("figures", "tables", "provenance.json"))]


def build_site(results: Path | str) -> Path:
    """Build ``<results>/site/`` from the notebook folders of ``results`` (one profile); return index.html.

    The site is built in a temporary folder beside it and then replaces the old one, so a failed
    build leaves the previous site in place.
    """
    results = Path(results)
    dirs = run_dirs(results)
    if not dirs:
        raise FileNotFoundError(f"no notebook results in {results}; run `make reproduce PROFILE={results.name}` first")
    tmp = results / f".{SITE}.building"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    pages = [(_page(d, tmp), d) for d in dirs]
    nav = "".join(f'<a href="#{p.name}">{html.escape(p.name)}</a>' for p, _ in pages)
    now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    doc = (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>vlmlab: {results.name}</title>'
           f"<style>{CSS}</style></head><body><h1>vlmlab results: profile {html.escape(results.name)}</h1>"
           f"<p>built {now} from <code>{html.escape(_display(results))}</code></p>{_claims_summary(results)}"
           f"<nav>{nav}</nav>" + "".join(_section_html(p, d) for p, d in pages) + "</body></html>\n")
    (tmp / "index.html").write_text(doc, encoding="utf-8")
    site = results / SITE
    shutil.rmtree(site, ignore_errors=True)
    tmp.rename(site)
    log.info("site of %d notebook(s) -> %s", len(pages), site / "index.html")
    return site / "index.html"


def _display(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path)

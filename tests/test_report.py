"""``vlmlab report``: the results site, unit by unit and then opened in a real (headless) Chromium.

The browser test builds a results tree of its own: ``00_quickstart`` run by papermill with the tiny
parameters, plus a hand-made notebook folder (a PNG, a CSV, a claims ledger, provenance.json, no
executed notebook). Chromium loads ``index.html`` from the file system; an inline probe script,
injected into a copy of the page only, writes every image's natural width and every link into the
DOM, which ``--dump-dom`` returns. Console errors are read from Chromium's log on stderr.
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from urllib.parse import unquote, urlparse

import matplotlib
import pandas as pd
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from vlmlab import cli, report
from vlmlab.runtime import REPO_ROOT

CHROMIUM = next((p for p in (shutil.which("chromium"), "/usr/bin/chromium") if p and Path(p).is_file()), None)
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--enable-logging=stderr", "--v=0", "--virtual-time-budget=5000"]
PROBE = """<script>window.addEventListener("load", () => {
  const out = {images: [...document.images].map(i => [i.getAttribute("src"), i.naturalWidth]),
               links: [...document.links].map(a => [a.getAttribute("href"), a.className])};
  const pre = document.createElement("pre"); pre.id = "probe"; pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});</script>"""
HANDMADE = "07_handmade"


# ---- units ------------------------------------------------------------------------------

def test_title_is_the_first_markdown_heading():
    nb = new_notebook(cells=[new_code_cell("x = 1"), new_markdown_cell("intro\n\n## 07 · Hand made ##"),
                             new_markdown_cell("# later")])
    assert report.notebook_title(nb, "07_x") == "07 · Hand made"
    assert report.notebook_title(None, "07_x") == "07_x"
    assert report.notebook_title(new_notebook(cells=[new_markdown_cell("no heading")]), "07_x") == "07_x"


def test_caption_is_the_markdown_cell_before_the_saving_cell():
    nb = new_notebook(cells=[
        new_markdown_cell("## The `scatter`\nOne point per **dataset**."),
        new_code_cell('run.save_figure(make(fig, "x"), "scatter")'),
        new_markdown_cell("## Gains, one figure per gap metric"),
        new_code_cell('for m in metrics:\n    run.save_figure(plot(m), f"gain_vs_{m}")'),
        new_code_cell('run.save_figure(fig, name="orphan")'),          # follows a code cell: no caption
        new_markdown_cell("%%%"),
        new_code_cell('%matplotlib inline\nrun.save_figure(fig, "magic")')])
    names = ["scatter", "gain_vs_fid", "gain_vs_lpips", "orphan", "magic", "unsaved"]
    assert report.figure_captions(nb, names) == {
        "scatter": "The scatter One point per dataset.",
        "gain_vs_fid": "Gains, one figure per gap metric", "gain_vs_lpips": "Gains, one figure per gap metric",
        "magic": "%%%"}


def test_claims_table_colours_each_verdict(tmp_path):
    path = tmp_path / "claims.csv"
    pd.DataFrame({"claim_id": ["a", "b", "c"], "statement": ["<x>", "y", "z"], "ours": ["v=1", "", ""],
                  "verdict": ["holds", "fails", "not_measured"]}).to_csv(path, index=False)
    html = report._claims_html(path)
    assert [m for m in re.findall(r'<td class="(\w+)">', html)] == ["holds", "fails", "not_measured"]
    assert "&lt;x&gt;" in html and "<x>" not in html


def test_report_without_results_exits_2(tmp_path):
    assert cli.main(["report", "--profile", "none", "--results-root", str(tmp_path)]) == 2


# ---- the site in a browser ----------------------------------------------------------------

def _handmade(folder: Path) -> None:
    """A notebook folder without executed notebook: one PNG, one CSV, a claims ledger, provenance."""
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    (folder / "figures").mkdir(parents=True)
    (folder / "tables").mkdir()
    for name in ("overview", "detail"):
        fig, ax = plt.subplots(figsize=(3, 2))
        ax.plot([0, 1, 2], [1, 0, 2])
        fig.savefig(folder / "figures" / f"{name}.png", dpi=60)
        plt.close(fig)
    pd.DataFrame({"dataset": ["a", "b"], "accuracy": [71.25, 64.5]}).to_csv(folder / "tables" / "main.csv",
                                                                            index=False)
    pd.DataFrame({"claim_id": ["hand.one", "hand.two", "hand.three"], "paper": ["Hand et al."] * 3,
                  "statement": ["a holds", "b fails", "c unmeasured"], "ours": ["x=1", "x=2", ""],
                  "verdict": ["holds", "fails", "not_measured"]}).to_csv(folder / "tables" / "claims.csv", index=False)
    (folder / "provenance.json").write_text(json.dumps({
        "git": {"commit": "0123456789abcdef", "dirty": False}, "device": {"requested": "cpu", "cpu": "x86_64",
                                                                           "torch_threads": 2},
        "wall_time_s": 12.5, "timestamp": "2026-01-01T00:00:00+00:00", "hostname": "test"}))


@pytest.fixture(scope="module")
def site(tmp_path_factory, kernel_name):
    """results/tiny/ with a papermill run of 00_quickstart and a hand-made folder; the built site."""
    from test_notebooks import execute

    results = tmp_path_factory.mktemp("results") / "tiny"
    run = results / "00_quickstart"
    run.mkdir(parents=True)
    execute(REPO_ROOT / "notebooks" / "00_quickstart.ipynb", run, kernel_name)
    _handmade(results / HANDMADE)
    (results / "claims.md").write_text("# Claims scorecard: tiny\n\n**3 claims: 1 hold, 1 fail, 1 not measured.**\n")
    assert cli.main(["report", "--profile", "tiny", "--results-root", str(results.parent)]) == 0
    return results / "site"


def _chromium(args: list[str], profile: Path) -> subprocess.CompletedProcess:
    return subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args], capture_output=True,
                          text=True, timeout=120)


def _console_errors(log: str) -> list[str]:
    return [line for line in log.splitlines() if "Uncaught" in line or "ERROR:CONSOLE" in line]


@pytest.mark.timeout(900)
def test_site_content(site):
    index = (site / "index.html").read_text()
    assert "00 · Quickstart: how a vlmlab notebook is built" in index                # title from the notebook
    assert index.index("00_quickstart/figures/scatter.png") > 0
    assert "A figure: the points and the fitted line" in index                       # caption from markdown
    assert "Main table: summary" in index and "Main table: main" in index
    assert '<td class="fails">fails</td>' in index
    assert '<a href="../claims.md">3 claims: 1 hold, 1 fail, 1 not measured</a>' in index
    assert "commit: 0123456789ab" in index and "Hand et al." in index
    for page in site.glob("*.html"):                                                 # nothing from a CDN
        text = page.read_text()
        assert not re.search(r'<(script|link|img)[^>]*(src|href)="(https?:)?//', text), page.name


@pytest.mark.timeout(900)
def test_site_in_headless_chromium(site, tmp_path):
    if CHROMIUM is None:
        pytest.skip("chromium not found (apt-get install -y --no-install-recommends chromium; .ci/run does)")
    probe = site / "index.probe.html"                                   # same folder: same relative links
    probe.write_text((site / "index.html").read_text().replace("</body>", PROBE + "</body>"))
    dumped = _chromium(["--dump-dom", probe.as_uri()], tmp_path / "profile1")
    probe.unlink()
    assert dumped.returncode == 0, dumped.stderr[-2000:]
    found = json.loads(re.search(r'<pre id="probe">(.*?)</pre>', dumped.stdout, re.S).group(1)
                       .replace("&quot;", '"').replace("&amp;", "&"))
    pngs = {f"{p.parent.parent.name}/figures/{p.name}" for p in site.glob("*/figures/*.png")}
    assert {src for src, _ in found["images"]} == pngs and len(pngs) == 3
    assert [src for src, width in found["images"] if width <= 0] == [], "images that did not load"
    local = [href for href, _ in found["links"] if not href.startswith(("http", "#"))]
    executed = [href for href, cls in found["links"] if cls == "executed"]
    assert executed == ["00_quickstart.html"]                            # the hand-made folder has none
    missing = [h for h in local if not (site / unquote(urlparse(h).path)).resolve().is_file()]
    assert missing == [], f"links to missing files: {missing}"
    assert _console_errors(dumped.stderr) == []
    shot = tmp_path / "index.png"
    shown = _chromium(["--window-size=1280,2400", f"--screenshot={shot}", (site / "index.html").as_uri()],
                      tmp_path / "profile2")
    assert shot.is_file() and shot.stat().st_size > 10_000, shown.stderr[-2000:]
    assert _console_errors(shown.stderr) == []
    rendered = _chromium(["--dump-dom", (site / "00_quickstart.html").as_uri()], tmp_path / "profile3")
    assert "Quickstart" in rendered.stdout and _console_errors(rendered.stderr) == []
    print(f"screenshot: {shot}")


def test_claims_table_shows_rerun_counts_from_the_scorecard(tmp_path):
    ledger = tmp_path / "01_a" / "tables" / "claims.csv"
    ledger.parent.mkdir(parents=True)
    pd.DataFrame({"claim_id": ["a", "b"], "verdict": ["holds", "fails"]}).to_csv(ledger, index=False)
    card = tmp_path / "claims.csv"
    assert "reruns" not in report._claims_html(ledger, card)                              # no scorecard yet
    pd.DataFrame({"notebook": ["01_a", "01_a", "02_b"], "claim_id": ["a", "b", "a"], "verdict": ["holds"] * 3,
                  "reruns": ["3/3 hold", "1/3 hold", "0/3 hold"]}).to_csv(card, index=False)
    html = report._claims_html(ledger, card)
    assert "<th>reruns</th>" in html and "3/3 hold" in html and "1/3 hold" in html and "0/3 hold" not in html

"""How far a notebook's headline numbers move with the CPU's kernels: the measurement behind
``vlmlab.verify``'s ``Headlines.kernel`` tolerances.

    python scripts/kernel_spread.py                                   # 04 and 05 under every variant
    python scripts/kernel_spread.py --notebooks 04_visual_prompt_fid --variants default avx2
    python scripts/kernel_spread.py --list

Each variant reruns the notebooks (``make reproduce``, cold: a cache of its own) on this machine with
the environment that makes PyTorch take other kernel paths, the way another CPU would:

* ``default``: this CPU's own paths;
* ``aten-avx2``: PyTorch's own vectorised kernels limited to AVX2 (``ATEN_CPU_CAPABILITY``);
* ``avx2``: an AVX2-only CPU as far as one can be emulated (ATen, oneDNN and MKL limited to AVX2);
* ``aten-scalar``: PyTorch's own kernels unvectorised;
* ``1-thread``: one thread (other blocking and reduction order);
* ``no-onednn``: convolutions without oneDNN (``torch.backends.mkldnn.enabled = False`` through a
  ``sitecustomize``; 04 about 3x slower).

It then prints, for every headline number of ``params/expected/embedded/<nb>.json`` that moved, the
stored value, each variant's, their range and the number's tolerance, flags ranges wider than the
tolerance, and writes the table to ``<results>/kernels/spread.csv``; then the claims whose verdict differs
between the variants (``<results>/kernels/verdicts.csv``). Runs already finished are reused.
Costs on 2 cores: 04 about 1.2 min and 05 about 2.5 min per variant (``no-onednn``: 04 about 3 min), about half
an hour for all six.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd

from vlmlab import verify

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ("04_visual_prompt_fid", "05_vlm_blind_tests")
SITECUSTOMIZE = "import torch\ntorch.backends.mkldnn.enabled = False\n"
VARIANTS: dict[str, dict[str, str]] = {
    "default": {},
    "aten-avx2": {"ATEN_CPU_CAPABILITY": "avx2"},
    "avx2": {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_CBWR": "AVX2"},
    "aten-scalar": {"ATEN_CPU_CAPABILITY": "default"},
    "1-thread": {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"},
    "no-onednn": {"PYTHONPATH": "{sitecustomize}"},
}


def run_variant(name: str, notebooks: list[str], root: Path) -> Path:
    """``make reproduce`` of ``notebooks`` under variant ``name``; returns its profile folder."""
    results, cache = root / name, root / "cache" / name
    todo = [nb for nb in notebooks if not (results / "embedded" / nb / "provenance.json").is_file()]
    if todo:
        site = root / "sitecustomize"
        site.mkdir(parents=True, exist_ok=True)
        (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
        env = dict(os.environ, **{k: v.format(sitecustomize=site) for k, v in VARIANTS[name].items()})
        print(f"== {name}: {' '.join(todo)}", flush=True)
        subprocess.run(["make", "reproduce", f"NOTEBOOKS={' '.join(todo)}", f"RESULTS_DIR={results}",
                        f"VLMLAB_CACHE={cache}", f"PY={sys.executable}"], cwd=ROOT, env=env, check=True)
    return results / "embedded"


def spread(runs: dict[str, Path], notebook: str, expected: Path) -> pd.DataFrame:
    """One row per headline number that differs between the stored value and any variant."""
    rows = []
    for name, spec in verify.load_expected(expected / f"{notebook}.json").items():
        row = {"notebook": notebook, "number": name, "stored": spec["value"]}
        for variant, folder in runs.items():
            try:
                row[variant] = verify.lookup(folder / notebook, spec["source"])
            except verify.VerifyError:
                row[variant] = float("nan")
        values = pd.Series([row["stored"], *(row[v] for v in runs)])
        row["range"] = float(values.max() - values.min())
        row["tol"] = spec["tol"]
        rows.append(row)
    table = pd.DataFrame(rows)
    return table[table["range"] > 1e-9].assign(within=lambda t: t["range"] <= t["tol"] + 1e-9)


def verdict_flips(runs: dict[str, Path], notebook: str) -> pd.DataFrame:
    """The claims of ``notebook`` whose verdict differs between the variants: one column per variant."""
    verdicts = {}
    for variant, folder in runs.items():
        path = folder / notebook / "tables" / "claims.csv"
        if path.is_file():
            verdicts[variant] = pd.read_csv(path, keep_default_na=False).set_index("claim_id").verdict
    table = pd.DataFrame(verdicts)
    table = table[table.nunique(axis=1) > 1]
    table = table.rename_axis("claim_id").reset_index()
    table.insert(0, "notebook", notebook)
    return table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--notebooks", nargs="+", default=list(NOTEBOOKS))
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--results", type=Path, default=ROOT / "results", help="results root (default: results/)")
    ap.add_argument("--expected", type=Path, default=ROOT / "params" / "expected" / "embedded")
    ap.add_argument("--list", action="store_true", help="list the variants and exit")
    args = ap.parse_args()
    if args.list:
        for name, env in VARIANTS.items():
            print(f"{name:12s} {env or '(this CPU as it is)'}")
        return
    root = args.results / "kernels"
    runs = {v: run_variant(v, args.notebooks, root) for v in args.variants}
    table = pd.concat([spread(runs, nb, args.expected) for nb in args.notebooks], ignore_index=True)
    table.to_csv(root / "spread.csv", index=False)
    with pd.option_context("display.width", 250, "display.max_colwidth", 60, "display.max_rows", None):
        print(table.round(4).to_string(index=False))
    wide = table[~table.within]
    print(f"{len(table)} numbers moved; {len(wide)} by more than their tolerance"
          + "".join(f"\n  {r.notebook} {r.number}: range {r.range:.4g} > tol {r.tol:g}" for r in wide.itertuples()))
    flips = pd.concat([verdict_flips(runs, nb) for nb in args.notebooks], ignore_index=True)
    flips.to_csv(root / "verdicts.csv", index=False)
    print(f"{len(flips)} claim verdict(s) differ between the variants"
          + ("" if flips.empty else ":\n" + flips.to_string(index=False)))


if __name__ == "__main__":
    main()

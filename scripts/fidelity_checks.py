"""Rerun docs/fidelity.md's switch measurements: each switch's notebook run beside the default run.

    python scripts/fidelity_checks.py                   # every check; reads results/embedded/ as the default
    python scripts/fidelity_checks.py --only 02_templates 04_select_val
    python scripts/fidelity_checks.py --list            # the checks and their overrides

A check runs one notebook of the embedded profile with ``params/embedded/<nb>.yaml`` and the check's
overrides on top (papermill ``-y``, run as a sweep case runs: ``vlmlab.sweep.case``, with its
``papermill.log``) into ``results/check/<check>/``, then reads the numbers its row of docs/fidelity.md reports from that run and
from the default run (``results/embedded/<nb>/``, from `make reproduce`; the script runs it when it is
missing). A finished check (its ``provenance.json`` exists) is not rerun unless ``--force``; the
default run is reused unless ``--fresh-default``, with a warning when it ran other code than the check
(its ``provenance.json`` git commit, or an edited tree). Prints one markdown table (check, measure, default, switched, difference)
and writes it to ``results/check/fidelity_checks.md`` and ``.csv``. Costs on 2 CPU cores with warm
feature caches: 01 (``01_kept_by_thermal``) about 1.5 min, 02 about 1 min each, 04 about 1.5 min (``04_lpips_cross`` 30 s: its prompts come from
the run cache), ``03_old_epochs`` about 4 min, ``03_fp32``
(the whole notebook in fp32; its features are its own) about 9 min, ``03_stack_dataset`` (every CoOp run
trained in a group per dataset) about 5.5 min, ``02_tda_augmix`` (TDA with 64 AugMix views of every
image) about 6 min, ``03_crop_scale`` (objects, 16 shots, M16 end, 3 seeds)
under a minute.

A dict override is merged one level deep into the profile's dict (``vlmlab.params.merge_overrides``):
``uniinfo: {lora_backward: exact}`` keeps the profile's fitted UniInfo values, and ``epochs: {1: 25, ...}``
replaces the listed shot counts only.
"""
from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pandas as pd

import vlmlab.claims
from vlmlab.sweep.case import CaseJob, run_case
from vlmlab.sweep.grid import Case

ROOT = Path(__file__).resolve().parents[1]
PARAMS = ROOT / "params" / "embedded"

Measure = Callable[[Path], dict[str, float]]


def _metrics(*keys: str) -> Measure:
    def read(run: Path) -> dict[str, float]:
        m = json.loads((run / "metrics.json").read_text())
        return {k: float(m[k]) for k in keys}
    return read


def _claims(run: Path) -> dict[str, float]:
    v = pd.read_csv(run / "tables" / "claims.csv")["verdict"].value_counts()
    return {"claims hold": float(v.get("holds", 0)), "claims fail": float(v.get("fails", 0))}


def _vp_gains(run: Path) -> dict[str, float]:
    t = pd.read_csv(run / "tables" / "gain_summary.csv")
    t = t[t["group"] == "all"]
    return {f"{r.prompter} gain ({r.n_datasets} datasets)": float(r.gain) for r in t.itertuples()}


def _m16_end(run: Path) -> pd.DataFrame:
    """Notebook 03's CoOp rows of M16, class token at the end, unified context (every dataset, shot, seed)."""
    t = pd.read_csv(run / "tables" / "coop.csv")
    return t[(t.method == "coop") & (t.n_ctx == 16) & (t.position == "end") & ~t.csc.astype(bool)]


def _objects16(run: Path) -> dict[str, float]:
    t = _m16_end(run)
    acc = t[(t.dataset == "objects") & (t.shots == 16)].accuracy
    return {"M16 end, objects, 16 shots (3 seeds)": float(acc.mean())} if len(acc) else {}


def _coop_average(run: Path) -> dict[str, float]:
    means = _m16_end(run).groupby(["dataset", "shots"]).accuracy.mean().groupby("shots").mean()
    return {f"M16 end average, {k} shots": float(v) for k, v in means.items()} | _objects16(run)


def _phrase16(run: Path) -> dict[str, float]:
    """16-shot averages over the datasets of the M4 end 'a photo of a' rows, unified and CSC."""
    t = pd.read_csv(run / "tables" / "coop.csv")
    t = t[(t.method == "coop") & (t.init != "random") & (t.shots == 16)]
    means = t.groupby(["csc", "dataset"]).accuracy.mean().groupby("csc").mean()
    return {f"M4 end 'a photo of a'{' CSC' if csc else ''}, 16 shots, average": float(v) for csc, v in means.items()}


def _lp03(run: Path) -> dict[str, float]:
    t = pd.read_csv(run / "tables" / "coop.csv")
    means = t[t.method == "linear_probe"].groupby(["dataset", "shots"]).accuracy.mean().groupby("shots").mean()
    return {f"linear probe average, {k} shots": float(v) for k, v in means.items()}


def _lp04(run: Path) -> dict[str, float]:
    g = pd.read_csv(run / "tables" / "gain_summary.csv")
    g = g[g["group"] == "all"]
    v = pd.read_csv(run / "tables" / "vision_only.csv")
    v = v[v.model == "vision_only"]
    return {f"linear probe ({r.n_datasets} datasets)": float(r.linear_probe_acc) for r in g.itertuples()} | {
        "vision-only base accuracy (source probe)": float(v.base_acc.mean()),
        "vision-only padding gain": float(v.gain.mean())}


def _shift_claims(run: Path) -> dict[str, float]:
    """Notebook 01's domain-shift claims: 1 where the claim holds, 0 where it fails."""
    t = pd.read_csv(run / "tables" / "claims.csv").set_index("claim_id")
    ids = ("domain_shift_lowers_accuracy", "uniformity_separates_corruption_from_shift", "modality_gap_does_not_separate")
    return {f"{c} holds": float(t.loc[f"uniformity.{c}", "verdict"] == "holds") for c in ids}


def _both(*measures: Measure) -> Measure:
    def read(run: Path) -> dict[str, float]:
        out: dict[str, float] = {}
        for m in measures:
            out.update(m(run))
        return out
    return read


@dataclass
class Check:
    name: str
    notebook: str
    overrides: dict
    measure: Measure
    row: str                                       # where docs/fidelity.md reports it
    extra: dict = field(default_factory=dict)      # overrides that only narrow the run (not the switch)


def checks() -> list[Check]:
    tta = [f"mean_acc/{m}" for m in ("No-adapt", "Tip-Adapter (1)", "Tip-Adapter (5)", "Tip-Adapter (10)", "ZERO",
                                     "TDA", "UniInfo")]
    return [
        # every shifted set of the world in the domain-shift claims, thermal (a sensor change) included
        Check("01_kept_by_thermal", "01_uniformity_analysis", {"uniformity_kept_by": ["renditions", "thermal"]},
              _both(_shift_claims, _claims), "departures: uniformity analysis, domain shifts"),
        Check("02_old_switches", "02_uniinfo_tta",
              {"zero": {"vote_dtype": "float32"}, "tip_adapter": {"key_average": "normalized"},
               "uniinfo": {"lora_backward": "exact"}},
              _both(_metrics(*tta), _claims), "fixed #4, #6, #7"),
        Check("02_templates", "02_uniinfo_tta",
              {"tda": {"templates": "imagenet7"}, "tip_adapter": {"templates": "imagenet7"}},
              _both(_metrics(*tta), _claims), "departures: Tip-Adapter, TDA prompt"),
        Check("02_probe_float32", "02_uniinfo_tta", {"linear_probe": {"dtype": "float32"}},
              _both(_metrics(*(f"mean_acc/Linear probing ({k})" for k in (1, 5, 10))), _claims), "fixed #12"),
        Check("02_probe_normalized", "02_uniinfo_tta", {"linear_probe": {"features": "normalized"}},
              _both(_metrics(*(f"mean_acc/Linear probing ({k})" for k in (1, 5, 10))), _claims), "fixed #17"),
        Check("03_probe_normalized", "03_coop_shots", {"lp_features": "normalized"}, _both(_lp03, _claims),
              "fixed #17"),
        Check("03_probe_coop_draws", "03_coop_shots", {"lp_draws": "coop"}, _both(_lp03, _claims), "fixed #20"),
        Check("04_probe_normalized", "04_visual_prompt_fid", {"lp_features": "normalized"}, _both(_lp04, _claims),
              "fixed #17"),
        Check("02_uniinfo_online", "02_uniinfo_tta", {"uniinfo": {"readout": "online"}},
              _both(_metrics("mean_acc/UniInfo"), _claims), "departures: UniInfo readout"),
        Check("02_uniinfo_student", "02_uniinfo_tta", {"uniinfo": {"readout": "student_offline"}},
              _both(_metrics("mean_acc/UniInfo"), _claims), "departures: UniInfo readout"),
        Check("02_tip_test_search", "02_uniinfo_tta", {"tip_adapter": {"search_on": "test"}},
              _both(_metrics(*(f"mean_acc/Tip-Adapter ({k})" for k in (1, 5, 10)), "mean_acc/UniInfo"), _claims),
              "departures: Tip-Adapter"),
        Check("02_tip_served_crops", "02_uniinfo_tta", {"tip_adapter": {"support_crops": "served"}},
              _both(_metrics(*(f"mean_acc/Tip-Adapter ({k})" for k in (1, 5, 10)), "mean_acc/UniInfo"), _claims),
              "fixed #22"),
        Check("02_views_raw", "02_uniinfo_tta", {"views_from": "raw"},
              _both(_metrics("mean_acc/TPT", "mean_acc/ZERO", "mean_acc/MTA"), _claims),
              "departures: TPT, ZERO, MTA views"),
        Check("02_tda_augmix", "02_uniinfo_tta", {"tda": {"views": "augmix"}},
              _both(_metrics("mean_acc/No-adapt", "mean_acc/TDA", "mean_acc/UniInfo"), _claims),
              "departures: TDA views"),
        Check("02_zero_last_resort_tied", "02_uniinfo_tta", {"zero": {"last_resort": "tied"}},
              _both(_metrics("mean_acc/ZERO"), _claims), "fixed #25"),
        Check("02_uniinfo_train_mode", "02_uniinfo_tta", {"uniinfo": {"train_mode": True}},
              _both(_metrics("mean_acc/No-adapt", "mean_acc/UniInfo"), _claims), "departures: UniInfo train mode"),
        # train mode with the values `python benchmarks/sweep_uniinfo.py --train-mode` fits on the validation corruptions
        Check("02_uniinfo_train_mode_refit", "02_uniinfo_tta",
              {"uniinfo": {"train_mode": True, "lora_extra": "none", "info_threshold": 10.0}},
              _both(_metrics("mean_acc/No-adapt", "mean_acc/UniInfo"), _claims), "departures: UniInfo train mode"),
        # the official values (UniInfoConfig's defaults) on the world, beside the values fitted for it
        Check("02_uniinfo_paper_values", "02_uniinfo_tta",
              {"uniinfo": {"lora_extra": "none", "info_threshold": 3.0, "info_threshold_classes": None, "lr": 1e-3,
                           "ema_momentum": 1e-3}},
              _both(_metrics("mean_acc/No-adapt", "mean_acc/UniInfo"), _claims), "departures: UniInfo, embedded"),
        Check("03_probe_float32", "03_coop_shots", {"lp_dtype": "float32"}, _both(_lp03, _claims), "fixed #12"),
        Check("04_probe_float32", "04_visual_prompt_fid", {"lp_dtype": "float32"}, _both(_lp04, _claims),
              "fixed #12"),
        Check("02_nested_draws", "02_uniinfo_tta", {"fewshot_draws": "nested"},
              _both(_metrics(*(f"mean_acc/{m} ({k})" for m in ("Linear probing", "Tip-Adapter") for k in (1, 5, 10))),
                    _claims), "departures: few-shot draws"),
        Check("03_nested_draws", "03_coop_shots", {"fewshot_draws": "nested"}, _both(_coop_average, _lp03, _claims),
              "departures: few-shot draws"),
        Check("04_eval_batch_256", "04_visual_prompt_fid", {"vp": {"eval_batch_size": 256}}, _both(_vp_gains, _claims),
              "fixed #23"),
        Check("04_eval_under_bf16", "04_visual_prompt_fid", {"eval_precision": "bundle"}, _both(_vp_gains, _claims),
              "fixed #24", extra={"precision": "bf16"}),        # the paper profile's fp16 autocast, as a CPU can run it
        Check("04_select_val", "04_visual_prompt_fid", {"select": "val"}, _both(_vp_gains, _claims),
              "departures: visual prompting, last epoch"),
        Check("04_select_test", "04_visual_prompt_fid", {"select": "test"}, _both(_vp_gains, _claims),
              "departures: visual prompting, last epoch"),
        # the lpips column as the plain cross-pair mean (papers/visual_prompting.md §8), not the energy form
        Check("04_lpips_cross", "04_visual_prompt_fid", {"lpips_form": "cross"},
              _both(_metrics("lpips_pearson_r", "lpips_spearman_r"), _claims), "departures: visual prompting gap"),
        Check("04_patch_positions_all", "04_visual_prompt_fid", {"vp": {"patch_positions": "all"}},
              _both(_vp_gains, _claims), "fixed #10a"),
        Check("03_old_epochs", "03_coop_shots", {"epochs": {1: 25, 2: 50, 4: 50, 8: 50, 16: 50}},
              _both(_coop_average, _claims), "fixed #11"),
        Check("03_fp32", "03_coop_shots", {"precision": "fp32"}, _both(_coop_average, _claims),
              "departures: CoOp precision"),
        Check("03_stack_dataset", "03_coop_shots", {"stack_runs": "dataset"}, _both(_coop_average, _claims),
              "departures: CoOp precision"),
        Check("03_ctx_float16", "03_coop_shots", {"coop": {"ctx_dtype": "float16"}}, _both(_coop_average, _claims),
              "fixed #26"),
        Check("03_csc_with_phrase", "03_coop_shots", {"coop": {"csc_with_phrase": "unified"}}, _phrase16,
              "departures: CoOp CSC under a phrase init",
              extra={"shots": [16], "variants": ["M4_end_photo", "M4_end_photo_csc"], "dg_targets": [],
                     "words_variant": "M4_end_photo"}),
        Check("03_crop_scale", "03_coop_shots", {"coop": {"crop_scale": [0.08, 1.0]}}, _objects16,
              "departures: CoOp crop scale",
              extra={"datasets": ["world:objects"], "shots": [16], "variants": ["M16_end"], "dg_targets": [],
                     "words_dataset": "objects"}),
    ]


def code_of(run: Path) -> str:
    """The code a finished run ran: its provenance's git commit, with "+dirty" for an edited tree."""
    return vlmlab.claims.run_code(run) or "unknown"


def stale_default(default: Path, out: Path) -> str | None:
    """A warning when the default run and the switched run ran other code (a stale ``results/embedded``:
    the difference would mix the code change with the switch), else None."""
    a, b = code_of(default), code_of(out)
    if a == b and not a.endswith("+dirty"):
        return None
    why = "ran other code" if a != b else "ran on an edited tree"
    return (f"WARNING: {default} ({a}) and {out} ({b}) {why}: if the edit touched this notebook's code, the "
            f"difference mixes it with the switch; rerun the default (--fresh-default)")


def run_notebook(notebook: str, out: Path, overrides: dict) -> None:
    """One papermill run of ``notebook`` over its embedded profile file plus ``overrides`` into ``out``, as
    a sweep case runs (``vlmlab.sweep.case``: its command, environment, ``papermill.log`` and markers)."""
    job = CaseJob(Case(out.name, overrides, overrides), ROOT / "notebooks" / f"{notebook}.ipynb",
                  PARAMS / f"{notebook}.yaml", "", "embedded", out.resolve(), kernel="vlmlab", device="auto")
    print(f"== {out.name}: {notebook} with {overrides or 'the profile'}", flush=True)
    (out / "provenance.json").unlink(missing_ok=True)           # only this run's may say it finished
    res = run_case(job)
    if res.status != "complete":
        raise SystemExit(f"{out.name}: {res.status}: {res.error} (log: {res.log})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", nargs="+", help="check names (default: all)")
    ap.add_argument("--results", type=Path, default=ROOT / "results", help="results root (default: results/)")
    ap.add_argument("--force", action="store_true", help="rerun checks that already finished")
    ap.add_argument("--fresh-default", action="store_true", help="rerun the default runs too (never reused)")
    ap.add_argument("--list", action="store_true", help="list the checks and exit")
    args = ap.parse_args()
    todo = checks()
    if args.list:
        for c in todo:
            print(f"{c.name:24s} {c.notebook:22s} {c.overrides} {c.extra or ''}  -> docs/fidelity.md {c.row}")
        return
    if args.only:
        unknown = sorted(set(args.only) - {c.name for c in todo})
        if unknown:
            raise SystemExit(f"unknown check(s) {unknown}; known: {[c.name for c in todo]}")
        todo = [c for c in todo if c.name in args.only]
    rows, fresh = [], set()
    for c in todo:
        default = args.results / "embedded" / c.notebook
        if c.extra:                                  # a narrowed run: its own default beside it
            default = args.results / "check" / f"{c.name}_default"
        if args.fresh_default and default.name not in fresh:
            (default / "provenance.json").unlink(missing_ok=True)
        if not (default / "provenance.json").is_file():
            run_notebook(c.notebook, default, c.extra)
            fresh.add(default.name)
        out = args.results / "check" / c.name
        if args.force or not (out / "provenance.json").is_file():
            run_notebook(c.notebook, out, {**c.extra, **c.overrides})
        if (warning := stale_default(default, out)) is not None:
            print(warning, flush=True)
        before, after = c.measure(default), c.measure(out)
        for key in before:
            rows.append({"check": c.name, "row": c.row, "measure": key, "default": round(before[key], 2),
                         "switched": round(after[key], 2), "difference": round(after[key] - before[key], 2)})
    table = pd.DataFrame(rows)
    folder = args.results / "check"
    folder.mkdir(parents=True, exist_ok=True)
    table.to_csv(folder / "fidelity_checks.csv", index=False)
    (folder / "fidelity_checks.md").write_text(table.to_markdown(index=False) + "\n")
    print(table.to_markdown(index=False))
    print(f"-> {folder / 'fidelity_checks.md'}")


if __name__ == "__main__":
    main()

# Source of notebooks/00_quickstart.ipynb; rebuild with `python scripts/make_notebook.py`.
# Placeholder: to be replaced by a quickstart with the embedded CLIP.

# %% [markdown]
# # 00 · Quickstart: how a vlmlab notebook is built
#
# Every notebook follows this pattern:
#
# 1. a cell tagged `parameters` holding literals only (papermill injects overrides right after it);
# 2. `vlmlab.params.resolve` validates what was injected (an unknown key or a wrong type stops the run);
# 3. a `vlmlab.results.Run` collects figures, tables and metrics, and `run.finish()` writes `provenance.json`.
#
# This placeholder fits a line to seeded random points. Rerun it with other parameters:
# `papermill notebooks/00_quickstart.ipynb out.ipynb -p n_points 500 -p seed 1`.

# %% tags=["parameters"]
profile = "embedded"  # embedded | paper | tiny: which params/<profile>/00_quickstart.yaml applies
device = "auto"  # auto | cpu | cuda
out_dir = ""  # empty: results/<profile>/00_quickstart/
seed = 0  # type: int; seed of the random points
n_points = 200  # type: int; range 1..; number of points

# %%
import numpy as np
import pandas as pd
import seaborn as sns

import vlmlab

P = vlmlab.params.resolve("00_quickstart", globals())
run = vlmlab.results.Run("00_quickstart", P)
P

# %% [markdown]
# ## A table: seeded points, summarised per group

# %%
rng = np.random.default_rng(P.seed)
x = rng.normal(size=P.n_points)
points = pd.DataFrame({"x": x, "y": 2.0 * x + rng.normal(scale=0.5, size=P.n_points),
                       "group": rng.choice(["a", "b", "c"], size=P.n_points)})
summary = points.groupby("group").agg(n=("x", "size"), mean_x=("x", "mean"), mean_y=("y", "mean")).reset_index()
slope = float(np.polyfit(points.x, points.y, 1)[0])
run.save_table(summary, "summary")
run.log_metric(n_points=P.n_points, slope=slope)
summary

# %% [markdown]
# ## A figure: the points and the fitted line

# %%
fig, ax = vlmlab.plots.new_figure()
sns.scatterplot(points, x="x", y="y", hue="group", s=14, ax=ax)
ax.axline((0.0, 0.0), slope=slope, color="0.2", lw=1, label=f"fit, slope {slope:.2f}")
ax.set(title=f"{P.n_points} seeded points", xlabel="x", ylabel="y = 2x + noise")
ax.legend()
run.save_figure(fig, "scatter")

# %% [markdown]
# ## Check and finish
# The last cell asserts the phenomenon, so a wrong result fails the run (and `make`).

# %%
assert 1.5 < slope < 2.5, f"fitted slope {slope:.2f} should be near the true 2.0"
run.finish()

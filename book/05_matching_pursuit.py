# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 5. Matching-pursuit SAEs
#
# Chapter 4 ended with a diagnosis. The ReLU and TopK encoders read every concept from the input *at
# once*: latent $i$ looks at $w_i^\top x$, whatever else is in $x$. On a tree of concepts with conditional
# orthogonality that is the wrong question to ask. A child's direction sits next to its siblings'
# (phantoms appear), and an L1 penalty pays the SAE to let one latent stand for parent and child together
# (absorption).
#
# **Matching pursuit** (MP) {cite}`mallat1993matching` asks the questions one at a time. Find the atom
# that best explains the input; remove what it explains; look again at *what is left*. Each new
# question is asked about a residual that is orthogonal to the atom just used, so the encoder's view
# is conditioned on what it has already explained: the same structure as the data. Costa et al.
# {cite}`costa2025flat` turn MP into an SAE, the **MP-SAE**, by unrolling $k$ steps of it as the encoder
# and learning the dictionary through them.
#
# This chapter:
# * builds MP from scratch, checks its guarantees numerically, and matches it against the library class;
# * trains MP-SAEs next to ReLU SAEs on the tree at sibling correlations 0, 0.3, 0.6 and 0.9;
# * measures absorption for the paper's four families (ReLU, BatchTopK, Matryoshka, MP) and per-sample
#   TopK over a grid of child magnitudes, in the shape of the paper's Table 1;
# * shows MP's **adaptive sparsity**: more steps at inference keep helping, unlike TopK, and with the
#   authors' stopping rule the number of steps, hence L0, comes out of the data.

# %% tags=["remove-cell"]
# Colab only (does nothing elsewhere): install the book's library at the version this
# notebook was written for. Stamped by scripts/stamp_colab.py: edit it there.
import subprocess, sys  # noqa: E401

if "google.colab" in sys.modules:
    REPO, TAG = "https://github.com/sae-book/sae-book", "v0.1.0"
    pip = [sys.executable, "-m", "pip", "install", "-q"]
    subprocess.run([*pip, f"sae-lib @ git+{REPO}@{TAG}"], check=True)

# %%
import math
import time

import matplotlib.pyplot as plt
import pandas as pd
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from sae_lib import (
    MPSAE,
    aligned_atoms,
    cosine_matrix,
    current_profile,
    describe,
    error_vs_k,
    hierarchical_data,
    median_and_range,
    paper_tree,
    random_dictionary,
    run_in_noisy_world,
    run_on_tree,
    runs_table,
    tune_l1,
)
from sae_lib.full_profile import full_profile_setting, load_full_profile
from sae_lib.plots import FAMILY_COLORS, plot_cosine_panels, plot_grid_heatmaps
from sae_lib.report import ReplicationReport
from sae_lib.tree_experiments import (
    ADAPTIVE_CORRELATION,
    ADAPTIVE_VARIANTS,
    CH5_TUNE_CORRELATION,
    GRID_CORRELATION,
    GRID_VARIANTS,
    INFERENCE_KS,
    MP_K2,
    NOISY_FAMILIES,
    SWEEP_CORRELATIONS,
    SWEEP_VARIANTS,
    busy_tree,
    tree_scale,
    with_l1,
)

torch.set_num_threads(
    1
)  # the SAEs here are tiny (20 × 20): one thread is much faster than several
report = ReplicationReport("05_matching_pursuit")
# This chapter's experiments are defined in sae_lib.tree_experiments, which the script
# that ran them at the papers' scale reads too: the paper trains 15k steps on 10 seeds.
SCALE = tree_scale()  # steps and seeds of the active profile
STEPS, SEEDS = SCALE.sweep_steps, SCALE.sweep_seeds  # MP at ρ = 0 needs ~2k steps
CORRELATIONS = SWEEP_CORRELATIONS
GRID_STEPS, GRID_SEEDS = SCALE.grid_steps, SCALE.grid_seeds  # ci: one seed per cell
CHILD_MEANS = SCALE.child_means  # half, (equal,) double the parent's 1.5
CHILD_SPREADS = SCALE.child_spreads  # ci: two cells, full: the 3 × 3 grid
TUNE_STEPS = SCALE.tune_steps  # each probe of the ReLU's L1 bisection
describe(
    steps=STEPS,
    seeds=len(SEEDS),
    correlations=CORRELATIONS,
    grid=f"{len(CHILD_MEANS)} × {len(CHILD_SPREADS)}",
    grid_steps=GRID_STEPS,
    grid_seeds=len(GRID_SEEDS),
    tune_steps=TUNE_STEPS,
)
training_seconds = 0.0

# %% [markdown]
# ## Matching pursuit from scratch
#
# Given unit-norm atoms $d_1, \dots, d_n$ (the rows of $D$, as in every chapter: $\hat x = z\,D$) and an
# input $x$ (a row vector), start with the residual $r_0 = x$ and the code $z = 0$. At each step $t$:
#
# $$c = r_t\, D^\top, \qquad j = \arg\max_i \operatorname{ReLU}(c_i), \qquad z_j \mathrel{+}= c_j, \qquad
#   r_{t+1} = r_t - c_j\, d_j .$$
#
# After $k$ steps the reconstruction is $\hat x = z\,D = x - r_k$. The ReLU keeps codes non-negative, as
# in every SAE of this book: an atom is only used if it correlates *positively* with what is left; if
# none does, the step adds nothing. That is the whole encoder, in a few lines:


# %%
def matching_pursuit(
    x: torch.Tensor, atoms: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    (
        """k greedy steps of matching pursuit over unit-norm ``atoms`` (n, d); """
        """returns codes (batch, n) and residuals."""
    )
    residual = x.clone()
    z = torch.zeros(x.shape[0], atoms.shape[0])
    rows = torch.arange(x.shape[0])
    for _ in range(k):
        c = residual @ atoms.T  # how much each atom explains of what is left
        best, j = c.clamp_min(0).max(dim=1)  # the best positively correlated atom
        z[rows, j] += best  # add it to the code (an atom may be chosen twice)
        residual = residual - best[:, None] * atoms[j]  # and remove what it explains
    return z, residual


# %% [markdown]
# Watch it on one sample of the tree (correlation $\rho = 0.3$), a parent with its child, using the *true*
# dictionary. Each panel shows how strongly what is left correlates with every concept, $r_t D^\top$:
# first the input itself (the one-shot read-out $x D^\top$ that a ReLU or TopK encoder sees), then the
# residual after each step. Dark bars are the sample's true concepts.

# %%
tree = paper_tree()
names = tree.labels
example = hierarchical_data(2_000, tree=tree, correlation=0.3, seed=0)
i = int(torch.nonzero((example.codes[:, 0] > 0) & (example.codes[:, 1] > 0))[0])
x = example.x[i : i + 1]
print(
    "true code:",
    {names[j]: round(v, 3) for j, v in enumerate(example.codes[i].tolist()) if v > 0},
)
residual, panels, steps_taken = x.clone(), [], []
for step in range(4):
    panels.append((residual @ example.dictionary.T)[0])
    if step < 3:
        z_step, residual = matching_pursuit(residual, example.dictionary, 1)
        steps_taken.append(
            (names[int(z_step.argmax())], z_step.max().item(), residual.norm().item())
        )
is_true = example.codes[i] > 0
fig = make_subplots(
    rows=1,
    cols=4,
    shared_yaxes=True,
    subplot_titles=["x (before any step)"]
    + [
        f"after step {t + 1}: took {name} ({c:.2g})"
        for t, (name, c, _) in enumerate(steps_taken)
    ],
)
for col, corr in enumerate(panels, start=1):
    fig.add_trace(
        go.Bar(
            x=list(names),
            y=corr.tolist(),
            showlegend=False,
            marker_color=["#2ca02c" if t else "#c7c7c7" for t in is_true.tolist()],
        ),
        row=1,
        col=col,
    )
fig.update_yaxes(title_text="correlation with the residual", row=1, col=1)
fig.update_layout(
    height=360,
    width=1100,
    title="Matching pursuit on one sample: phantoms vanish with the concept "
    "that cast them",
)
fig.show()
phantom_before = panels[0][~is_true].max().item()
phantom_after = panels[2][~is_true].abs().max().item()
print(
    " | ".join(
        f"step {t + 1}: {name}, coefficient {c:.2e}, |residual| {r:.2e}"
        for t, (name, c, r) in enumerate(steps_taken)
    )
)
print(
    f"largest phantom (a concept not in the sample): {phantom_before:.3f} in x, "
    f"{phantom_after:.1e} after two steps"
)
report.check(
    "On the tree sample, phantoms are large in x and vanish after two MP steps",
    ours=f"largest phantom {phantom_before:.3f} → {phantom_after:.1e}",
    passed=phantom_before > 0.2 and phantom_after < 1e-4,
    kind="mechanics",
)

# %% [markdown]
# The one-shot read-out sees the parent and the child, but also phantoms: the child's siblings at $\rho$
# times the child's size, and the other top-level concepts at $\rho$ times the parent's. MP takes the
# strongest concept first. Removing it leaves a residual orthogonal to it *and to everything that was a
# phantom because of it*, so the second step finds the other concept exactly. After that the residual is
# zero up to rounding, and a third step adds only a rounding-size coefficient (the library's `MPSAE` stops
# a row there: it treats a coefficient below $\sqrt{\varepsilon} \approx 3.5\cdot10^{-4}$ of the input's
# norm in float32 as rounding noise, not signal). Let us check that MP
# recovers the exact code for every sample, with the true dictionary, at every correlation.

# %%
exact_errors = {}
for rho in CORRELATIONS:
    sample = hierarchical_data(5_000, tree=tree, correlation=rho, seed=1)
    z, _ = matching_pursuit(sample.x, sample.dictionary, k=3)
    exact_errors[rho] = (z - sample.codes).abs().max().item()
print({rho: f"{err:.1e}" for rho, err in exact_errors.items()})
report.check(
    "With the true dictionary, MP recovers every sample's exact code "
    "at every correlation",
    ours=f"largest code error {max(exact_errors.values()):.1e}",
    passed=max(exact_errors.values()) < 1e-4,
    kind="mechanics",
)

# %% [markdown]
# ## Its guarantees, checked numerically
#
# Three facts make MP trustworthy, and all follow from one line of algebra. With unit-norm $d_j$ and
# $c_j = d_j^\top r_t$:
# 1. **The residual is orthogonal to the atom just used**: $d_j^\top r_{t+1} = c_j - c_j\, d_j^\top d_j = 0$.
# 2. **Energy is removed, never added**: $\|r_{t+1}\|^2 = \|r_t\|^2 - c_j^2$ (Pythagoras, using 1), so the
#    reconstruction error can only go down as $k$ grows.
# 3. **Nothing is lost**: $x = z\,D + r_k$ exactly, at every $k$.
#
# They hold for *any* dictionary, learned or not, so we check them on random atoms and inputs in
# higher dimension, running the library's `MPSAE.trace`, which keeps every residual. First, the library
# class must agree with our loop: we give it the same atoms (and no pre-bias).

# %%
atoms = random_dictionary(256, 64, seed=0)
inputs = torch.randn(512, 64, generator=torch.Generator().manual_seed(1))
library_mp = MPSAE(64, 256, k=12)
with torch.no_grad():
    library_mp.W_dec.copy_(atoms)
z_ours, r_ours = matching_pursuit(inputs, atoms, k=12)
x_hat, z_lib = library_mp(inputs)
agreement = max(
    (z_ours - z_lib).abs().max().item(), (inputs - r_ours - x_hat).abs().max().item()
)
report.check(
    "Our 10-line MP and the library's MPSAE give the same codes and reconstructions",
    ours=f"largest difference {agreement:.1e}",
    passed=agreement < 1e-4,
    kind="mechanics",
)

# %%
trace = library_mp.trace(inputs, k=64)
res, used = (
    trace.residuals,
    library_mp.atoms()[trace.indices],
)  # (k+1, batch, d) and (batch, k, d)
after = res[1:].transpose(0, 1)  # (batch, k, d): the residual after each step
took_step = (
    trace.coefficients > 0
)  # a step that found no positively correlated atom changes nothing
orthogonality = (after * used).sum(-1)[took_step].abs().max().item()
energy = res.pow(2).sum(-1)  # (k+1, batch)
pythagoras = (energy[:-1] - energy[1:] - trace.coefficients.T.pow(2)).abs().max().item()
never_up = (energy[1:] - energy[:-1]).max().item()
codes = torch.zeros(512, 256).scatter_add(1, trace.indices, trace.coefficients)
lossless = (inputs - codes @ library_mp.atoms() - res[-1]).abs().max().item()
print(
    f"|<r_t+1, d_j>| ≤ {orthogonality:.1e};  Pythagoras error ≤ {pythagoras:.1e};  "
    f"largest energy increase {never_up:.1e};  |x - zD - r| ≤ {lossless:.1e}"
)

fig, ax = plt.subplots(figsize=(6, 3.6))
ax.semilogy(
    energy[:, :40].numpy() / energy[0, :40].numpy(), color="tab:green", alpha=0.3
)
ax.set(
    xlabel="MP step",
    ylabel="residual energy / input energy",
    title="40 inputs: the residual only shrinks",
)
plt.tight_layout()
plt.show()

# %%
report.check(
    "MP guarantees: residual ⟂ chosen atom, energy drops by c², never rises, "
    "x = zD + r",
    paper="by construction (Mallat & Zhang 1993)",
    ours=f"max deviations {orthogonality:.0e}, {pythagoras:.0e}, "
    f"{max(never_up, 0):.0e}, {lossless:.0e}",
    passed=orthogonality < 1e-4
    and pythagoras < 1e-4
    and never_up < 1e-5
    and lossless < 1e-4,
    kind="mechanics",
)

# %% [markdown]
# ## Learning the dictionary: the MP-SAE
#
# An MP-SAE is this encoder with a learned dictionary: the atoms are the rows of `W_dec` (kept unit
# norm), the decoder is $z\,D$, and the loss is the reconstruction error alone. Sparsity comes from
# the number of steps $k$, not from a penalty, so nothing pays the model to merge concepts. Gradients flow
# through all $k$ unrolled steps (through every coefficient $c_j = d_j^\top r_t$ and every subtraction),
# while the *choices* $j$ are treated as constants, like TopK's choice of latents. The library's `MPSAE`
# does exactly this. It chooses the atoms without building a graph, then backpropagates through the
# unrolled steps with a hand-written backward pass that walks the steps in reverse and rebuilds each
# step's residual from the last one, so training memory does not grow with $k$ (its unit tests check the
# gradients against autograd through the plain loop).
#
# We train with the same recipe and the same data as the ReLU and TopK SAEs of chapter 4 (`run_on_tree`,
# the pre-bias fixed at zero, 20 atoms for 20 concepts), with $k = 3$ steps, one more than any sample
# needs. Because a step only adds an atom that correlates positively with the residual, a spare step
# costs nothing once the residual is zero. With exactly $k = 2$ steps, training can stall in a poor local
# optimum: two atoms that each mix a parent with its child, which two steps cannot untangle. (The authors'
# code can also stop each sample's pursuit early, once the residual is small or the chosen support stops
# changing, with $k$ as a cap; their CLIP experiment, chapter 8, uses $k = 5$. We try that stopping rule
# at the end of this chapter.) We check the $k = 2$ stall after the sweep below.
#
# %% [markdown]
# ## Recovery across sibling correlations
#
# Now the paper's main synthetic experiment: ReLU and MP SAEs on the tree at sibling correlation 0, 0.3,
# 0.6 and 0.9, each on several seeds (a seed fixes the dictionary, the data, the initialisation and the
# batch order; the two families share the first two). The other families of chapter 4 join in the
# absorption grid below. As in chapter 4, the ReLU's L1 weight is bisected so that its L0 lands on the
# tree's 1.36. To be plain about it: the weight is tuned once, at $\rho = 0$ (`tune_l1`, short runs on
# seed 0), and reused at every correlation and everywhere below; it is not re-tuned per $\rho$. The
# table's L0 column shows whether the ReLU's sparsity still matches across $\rho$. It need not: the
# same weight buys a different L0 once siblings correlate. Whether it stays within 0.25 of 1.36 at
# every $\rho$ is recorded (not asserted) below, at this run's scale and at the full profile's; read
# the ReLU's recovery and absorption at a $\rho$ where its L0 drifted with that in mind.

# %%
start = time.perf_counter()
tuning = tune_l1(
    tree, tree.expected_l0(), steps=TUNE_STEPS, correlation=CH5_TUNE_CORRELATION
)
print(
    "L1 bisection (weight, held-out L0):",
    ", ".join(f"({w:.2e}, {l0:.2f})" for w, l0 in tuning.probes),
    f"→ {tuning.l1_coeff:.2e}",
)
FAMILIES = with_l1(SWEEP_VARIANTS, tuning.l1_coeff)
sweep = {
    rho: run_on_tree(tree, FAMILIES, steps=STEPS, seeds=SEEDS, correlation=rho)
    for rho in CORRELATIONS
}
training_seconds += time.perf_counter() - start
results = runs_table([r for runs in sweep.values() for r in runs])
medians = (
    results.groupby(["correlation", "SAE"], sort=False).median().drop(columns="seed")
)
medians[
    ["l0", "mean_cos", "min_cos", "absorption", "flat", "hierarchical", "fvu", "dead"]
].round(3).unstack("SAE")

# %% [markdown]
# Medians over seeds of: L0 on held-out samples, the mean and worst matched cosine with the true
# concepts, absorption, the flat (within-level) and hierarchical (across-level) Gram errors defined in
# chapter 4, FVU and dead latents. MP's L0 is set by its $k = 3$ steps, not by a tuned weight.

# %%
fig = make_subplots(
    rows=1,
    cols=3,
    subplot_titles=[
        "mean matched cosine (↑)",
        "worst matched cosine (↑)",
        "absorption (↓)",
    ],
)
for col, metric in enumerate(["mean_cos", "min_cos", "absorption"], start=1):
    for family in FAMILIES:
        fig.add_trace(
            go.Scatter(
                x=CORRELATIONS,
                y=[medians.loc[(rho, family), metric] for rho in CORRELATIONS],
                mode="lines+markers",
                name=family,
                legendgroup=family,
                showlegend=col == 1,
                line_color=FAMILY_COLORS[family],
            ),
            row=1,
            col=col,
        )
    fig.update_xaxes(title_text="sibling correlation ρ", row=1, col=col)
fig.update_layout(height=380, title="ReLU and MP SAEs on the tree (medians over seeds)")
fig.show()

# %% [markdown]
# And the MP-SAE's learned atoms against the true concepts, one run per correlation:

# %%
panels = []
for rho in CORRELATIONS:
    run = next(r for r in sweep[rho] if r.name == "mp")
    panels.append(
        (
            f"ρ = {rho}: mean cos {run.scores['mean_cos']:.2f}",
            aligned_atoms(run.sae.W_dec, run.test.dictionary),
            run.test.dictionary,
        )
    )
plot_cosine_panels(
    panels,
    labels=names,
    title="MP-SAE: learned atoms (rows, matched) vs true concepts (columns)",
).show()

# %% [markdown]
# At $\rho = 0$ the MP-SAE finds the dictionary exactly, and at $\rho = 0.3$ it is nearly exact; from $0.6$
# on it mixes siblings, and at $0.9$ little is left, as in the paper. ReLU SAEs absorb at every
# correlation up to 0.6, and at 0.9 fail more broadly: their worst and mean matched cosines drop below
# their values at every lower correlation (checked below). MP's absorption and hierarchical error stay near
# zero wherever it recovers the tree. We state recovery as:
# **every true concept's matched atom has cosine ≥ 0.9** (≥ 0.99 at $\rho = 0$), and mean matched cosine
# ≥ 0.97 (medians over seeds).


# %% [markdown]
# We write these claims once, as a function of a table of runs, because we check them twice: here on
# this run, and at the end of the chapter on the full-profile run at the papers' scale.


# %%
def med(table, rho, family, metric):
    """Median over seeds of one score at one correlation."""
    rows = (table.correlation == rho) & (table.SAE == family)
    return table.loc[rows, metric].median()


def spread(table, rho, family, metric):
    """Median [min – max] over seeds of one score."""
    rows = (table.correlation == rho) & (table.SAE == family)
    return median_and_range(table.loc[rows, metric], digits=3)


def check_sweep(table: pd.DataFrame, scale: str) -> None:
    """Assert the chapter's claims about the correlation sweep on ``table``."""
    seeds = f"{table.seed.nunique()} seeds, {scale}"
    for rho, need in [(0.0, 0.99), (0.3, 0.9)]:
        worst = table[(table.correlation == rho) & (table.SAE == "mp")].min_cos.min()
        report.check(
            f"MP-SAE recovers the true dictionary at ρ = {rho}: "
            f"every matched cosine ≥ {need}, mean ≥ 0.97 ({seeds})",
            paper="exact recovery",
            kind="replication" if scale == "this run" else "replication (shipped run)",
            ours=f"worst {med(table, rho, 'mp', 'min_cos'):.3f}, "
            f"mean {med(table, rho, 'mp', 'mean_cos'):.3f} (medians; "
            f"worst over seeds {worst:.3f})",
            passed=med(table, rho, "mp", "min_cos") >= need
            and med(table, rho, "mp", "mean_cos") >= 0.97,
        )
    mean_cos = [med(table, rho, "mp", "mean_cos") for rho in CORRELATIONS]
    report.check(
        "MP-SAE recovery degrades as siblings correlate more: partial at 0.6, "
        f"poor at 0.9 ({seeds})",
        paper="partial at 0.6, degraded at 0.9",
        kind="replication" if scale == "this run" else "replication (shipped run)",
        ours=" → ".join(f"{v:.2f}" for v in mean_cos) + " (mean matched cos)",
        passed=mean_cos[1] > mean_cos[2] > mean_cos[3]
        and med(table, 0.6, "mp", "min_cos") < 0.9
        and mean_cos[3] < 0.8,
    )
    for rho in (0.0, 0.3):
        report.check(
            f"MP-SAE absorbs far less than ReLU at ρ = {rho} "
            f"(median ≤ 0.07 and ≤ ¼ of ReLU's; {seeds})",
            paper="MP ≈ 0.001–0.07 vs ReLU 0.45–0.70",
            kind="replication" if scale == "this run" else "replication (shipped run)",
            ours=f"MP {spread(table, rho, 'mp', 'absorption')}; "
            f"ReLU {spread(table, rho, 'relu', 'absorption')} "
            "(median [min – max] over seeds)",
            passed=med(table, rho, "mp", "absorption")
            <= min(0.07, med(table, rho, "relu", "absorption") / 4),
        )
    report.check(
        "MP-SAE keeps parent ⟂ child (hierarchical error) where ReLU does not, "
        f"at ρ ≤ 0.3 ({seeds})",
        ours=", ".join(
            f"ρ={rho}: MP {med(table, rho, 'mp', 'hierarchical'):.3f} "
            f"vs ReLU {med(table, rho, 'relu', 'hierarchical'):.2f}"
            for rho in (0.0, 0.3)
        ),
        passed=all(
            med(table, rho, "mp", "hierarchical") < 0.05
            and med(table, rho, "relu", "hierarchical") > 0.3
            for rho in (0.0, 0.3)
        ),
    )
    report.check(
        "ReLU SAEs absorb at ρ = 0, 0.3 and 0.6 (median absorption in the paper's "
        f"range; {seeds})",
        paper="0.45 – 0.70",
        kind="replication" if scale == "this run" else "replication (shipped run)",
        ours=", ".join(
            f"ρ={rho}: {spread(table, rho, 'relu', 'absorption')}"
            for rho in (0.0, 0.3, 0.6)
        ),
        passed=all(
            0.45 <= med(table, rho, "relu", "absorption") <= 0.70
            for rho in (0.0, 0.3, 0.6)
        ),
    )
    relu_l0 = [med(table, rho, "relu", "l0") for rho in CORRELATIONS]
    matched = all(abs(v - 1.36) <= 0.25 for v in relu_l0)
    report.record(
        "Does the L1 weight tuned at ρ = 0 keep the ReLU's L0 within 0.25 of the "
        f"tree's 1.36 at every ρ? (matched sparsity; {seeds})",
        ours="ReLU L0 "
        + ", ".join(f"ρ={rho}: {v:.2f}" for rho, v in zip(CORRELATIONS, relu_l0)),
        status="matches" if matched else "differs",
    )
    lower = [rho for rho in CORRELATIONS if rho < 0.9]
    report.check(
        "At ρ = 0.9 ReLU SAEs fail more broadly: worst and mean matched cosine below "
        f"their values at every lower ρ ({seeds})",
        ours=", ".join(
            f"ρ={rho}: worst {med(table, rho, 'relu', 'min_cos'):.2f}, "
            f"mean {med(table, rho, 'relu', 'mean_cos'):.2f}"
            for rho in CORRELATIONS
        ),
        passed=all(
            med(table, 0.9, "relu", m) < min(med(table, r, "relu", m) for r in lower)
            for m in ("min_cos", "mean_cos")
        ),
    )
    mp_dead = int(table.loc[table.SAE == "mp", "dead"].max())
    report.check(
        "No MP-SAE atom died in any run, so we use neither atom dropout nor a "
        f"revive term ({seeds})",
        paper="dropout and revive help against dead atoms",
        kind="finding",
        ours=f"most dead atoms in one run: {mp_dead}",
        passed=mp_dead == 0,
    )


check_sweep(results, "this run")

# %% [markdown]
# ### Why $k = 3$
#
# The sweep's first seed at $\rho = 0$ (every seed in the `full` profile), trained with exactly $k = 2$
# steps, next to the sweep's $k = 3$ runs:

# %%
start = time.perf_counter()
k2_runs = run_on_tree(
    tree, {"mp k=2": MP_K2}, steps=STEPS, seeds=SCALE.k2_seeds, correlation=0.0
)
training_seconds += time.perf_counter() - start
k3_runs = [r for r in sweep[0.0] if r.name == "mp"]
k_table = (
    runs_table(k2_runs + k3_runs)
    .replace({"SAE": {"mp": "mp k=3"}})
    .set_index(["SAE", "seed"])
)
k_table[["mean_cos", "min_cos", "absorption", "fvu"]].round(3)

# %%
worst_k2, worst_k3 = (
    k_table.loc[name, "min_cos"].median() for name in ["mp k=2", "mp k=3"]
)
report.check(
    "MP-SAE with one spare step (k = 3) recovers the tree where k = 2 can stall "
    "(ρ = 0)",
    ours=f"worst matched cosine, median: k = 2 {worst_k2:.2f}, k = 3 {worst_k3:.2f}",
    passed=worst_k3 > 0.99 and worst_k2 < worst_k3 - 0.05,
)

# %% [markdown]
# ### A closer look at $\rho = 0.3$
#
# The paper calls recovery at $\rho = 0.3$ exact. Ours is nearly so, and the exceptions are instructive.
# In our runs, one atom often comes out at a cosine of about
# $0.954$ with its concept. That number is no accident. It is
# $\sqrt{1-\rho^2}$: the atom has learned the part of its concept that is orthogonal to one sibling. MP can
# still reconstruct perfectly with it, one step later, by adding that sibling's atom with coefficient
# $\rho$ times the concept's size, and since the loss is the reconstruction error alone and a spare step is
# free, nothing pushes the atom the rest of the way. Other runs have simply not finished converging (a
# worst cosine a little below 0.954 with a sibling cosine near 0.3). Here is the worst atom of each run
# at $\rho = 0.3$:

# %%
target = math.sqrt(1 - 0.3**2)
rows = []
for run in (r for r in sweep[0.3] if r.name == "mp"):
    learned = aligned_atoms(run.sae.W_dec, run.test.dictionary)
    cos = cosine_matrix(learned, run.test.dictionary)
    worst = int(cos.diagonal().argmin())
    siblings = next(g for g in tree.sibling_groups if worst in g)
    rows.append(
        {
            "seed": run.seed,
            "worst concept": names[worst],
            "cos with it": cos[worst, worst].item(),
            "lowest cos with a sibling (true: 0.3)": min(
                cos[worst, s].item() for s in siblings if s != worst
            ),
        }
    )
worst_atoms = pd.DataFrame(rows).set_index("seed")
print(f"sqrt(1 - 0.3²) = {target:.4f}")
worst_atoms.round(4)

# %%
explained = worst_atoms[(worst_atoms["cos with it"] - target).abs() < 0.01]
report.record(
    "MP at ρ = 0.3: runs whose worst atom is the sibling-orthogonalised one "
    f"(cos ≈ {target:.3f})",
    paper="exact recovery",
    ours=f"{len(explained)} of {len(worst_atoms)} runs",
    status="differs" if len(explained) else "matches",
)

# %% [markdown]
# ## Absorption in the shape of the paper's Table 1
#
# The paper's Table 1 reports absorption over a grid of child magnitudes: the mean and the spread of the
# children's activations (parents and leaves keep $\mathcal{N}(1.5, 0.25^2)$), for the four families of its
# code. Across its cells MP scores about 0.001–0.07, vanilla ReLU SAEs 0.45–0.70 and BatchTopK 0.42–0.54
# (our sources give no range for Matryoshka). The grid values themselves are not in our sources, so we
# choose children at half, equal and double the parent's mean magnitude, with spreads of 0.1, 0.25 and
# 0.5 (the `ci` profile runs two cells, half and double the parent's mean at spread 0.25, with fewer steps
# and one seed; the full profile three seeds per cell), at sibling correlation 0 so that only the hierarchy is at play. Every family of
# chapter 4 takes part: ReLU (the bisected L1 weight), BatchTopK and Matryoshka (an average of 1.36
# active latents), MP ($k = 3$), and per-sample TopK ($k = 2$) as a fifth row. Why the child's magnitude
# matters: an absorbed child atom points along $(\mu_{\text{parent}}\, p + \mu_{\text{child}}\, u)$, so
# its cosine with the parent is $1.5/\sqrt{1.5^2 + \mu_{\text{child}}^2}$, which is $0.89$, $0.71$ and $0.45$
# on our grid; and a wide spread makes a fixed mixture a worse fit.

# %%
GRID_FAMILIES = with_l1(GRID_VARIANTS, tuning.l1_coeff)
start = time.perf_counter()
grid_runs = []
for mean in CHILD_MEANS:
    for spread_ in CHILD_SPREADS:
        grid_runs += run_on_tree(
            tree,
            GRID_FAMILIES,
            steps=GRID_STEPS,
            seeds=GRID_SEEDS,
            correlation=GRID_CORRELATION,
            child_magnitude=(mean, spread_),
            progress=False,
        )
training_seconds += time.perf_counter() - start
grid = runs_table(grid_runs)  # columns: child mean, child spread, SAE, seed, scores


def cell_medians(grid: pd.DataFrame) -> pd.DataFrame:
    """Median absorption over seeds: rows (family, child mean), a column per spread."""
    return (
        grid.groupby(["SAE", "child mean", "child spread"], sort=False)["absorption"]
        .median()
        .unstack("child spread")
    )


table1 = cell_medians(grid)
plot_grid_heatmaps(
    {family: table1.loc[family].values for family in GRID_FAMILIES},
    x=CHILD_SPREADS,
    y=CHILD_MEANS,
    x_label="child spread",
    y_label="child mean",
    zmin=0,
    zmax=0.8,
    title=f"Absorption per cell (median over {len(GRID_SEEDS)} seeds), "
    "one panel per family",
).show()

# %%
cells = table1.stack().unstack("SAE")  # one row per cell, one column per family
paper_ranges = {
    "relu": (0.45, 0.70),
    "batchtopk": (0.42, 0.54),
    "matryoshka": None,
    "mp": (1e-3, 7e-2),
    "topk": None,
}
beside = pd.DataFrame(
    {
        family: {
            "paper: range over its cells": f"{r[0]:g} – {r[1]:g}"
            if r
            else (
                "not in our sources"
                if family == "matryoshka"
                else "not in the paper (per-sample TopK)"
            ),
            "ours: range over cells (cell medians)": f"{cells[family].min():.3f} – "
            f"{cells[family].max():.3f}",
            "ours: all runs, median [min – max]": median_and_range(
                grid.loc[grid.SAE == family, "absorption"], 3
            ),
            "dead latents (max)": int(grid.loc[grid.SAE == family, "dead"].max()),
            "L0 (median)": round(grid.loc[grid.SAE == family, "l0"].median(), 2),
        }
        for family, r in paper_ranges.items()
    }
).T
beside

# %% [markdown]
# Both our columns give the same score as the paper's; the paper's range is over its cells (whose values
# we do not have), ours over our cells, and then over every run (cells × seeds), so the spread from seed
# to seed shows. ReLU's absorption follows the geometry: it is highest when children are weak and falls
# as they grow. MP's absorption is below ReLU's in every cell and near zero wherever children are at
# least as strong as their parent (both checked below); with children half as strong as their parent it
# can absorb too (its largest cell is printed below). Whether its median over those runs stays inside
# the paper's range is recorded below, at this run's scale and at the full profile's, not asserted:
# the answer moves with the scale. For BatchTopK and TopK, read the dead-latent column beside their
# scores: as in chapter 4, a dead latent matched to a child pulls the score down without recovering
# anything. Why MP can absorb weak children: an atom that leans toward the parent costs MP little
# reconstruction error when the child is small beside its parent, and a run can settle there.

# %%
print(
    "MP's largest absorption: {:.3f} at child mean {}, spread {}".format(
        cells["mp"].max(), *cells["mp"].idxmax()
    )
)


def check_grid(grid: pd.DataFrame, scale: str) -> None:
    """Assert (or record) the chapter's claims about the absorption grid on ``grid``."""
    table1 = cell_medians(grid)
    cells = table1.stack().unstack("SAE")
    seeds = f"{grid.seed.nunique()} seed(s) per cell, {scale}"
    relu_by_mean = table1.loc["relu"].sort_index()  # child means in increasing order
    report.check(
        f"ReLU absorption falls as children get stronger (every spread; {seeds})",
        paper="0.45 – 0.70 over the table",
        kind="replication" if scale == "this run" else "replication (shipped run)",
        ours="; ".join(
            f"spread {s}: " + " → ".join(f"{v:.2f}" for v in relu_by_mean[s])
            for s in relu_by_mean.columns
        ),
        passed=all(relu_by_mean[s].is_monotonic_decreasing for s in relu_by_mean),
    )
    report.check(
        f"MP-SAE absorbs less than ReLU in every cell ({seeds})",
        paper="MP 0.001 – 0.07; ReLU 0.45 – 0.70",
        kind="replication" if scale == "this run" else "replication (shipped run)",
        ours="; ".join(
            f"child mean {m}, spread {s}: MP {cells.loc[(m, s), 'mp']:.3f} vs ReLU "
            f"{cells.loc[(m, s), 'relu']:.2f}"
            for m, s in cells.index
        ),
        passed=bool((cells["mp"] < cells["relu"]).all()),
    )
    one_shot = ["relu", "batchtopk", "topk"]
    # children at least as strong as their parent (1.5)
    strong = grid[grid["child mean"] >= 1.5].groupby("SAE")["absorption"].median()
    report.check(
        "Where children are at least as strong as their parent, "
        "MP absorbs ≤ 0.07 and ≤ ¼ of ReLU, "
        f"BatchTopK and TopK (medians over those cells and seeds; {seeds})",
        paper="MP 0.001 – 0.07; ReLU 0.45 – 0.70; BatchTopK 0.42 – 0.54",
        kind="replication" if scale == "this run" else "replication (shipped run)",
        ours=f"MP {strong['mp']:.3f}, "
        + ", ".join(f"{f} {strong[f]:.2f}" for f in one_shot),
        passed=strong["mp"] <= min(0.07, *(strong[f] / 4 for f in one_shot)),
    )
    weak_mp = grid[(grid["child mean"] < 1.5) & (grid.SAE == "mp")]["absorption"]
    report.record(
        "MP-SAE absorption where children are half as strong as their parent "
        f"(our cells; {seeds})",
        paper="0.001 – 0.07 over the paper's grid",
        kind="replication" if scale == "this run" else "replication (shipped run)",
        ours=median_and_range(weak_mp, 3),
        status="matches" if weak_mp.median() <= 0.07 else "differs",
    )
    for family, r in paper_ranges.items():
        if r is None:
            continue
        lo, hi = r
        # For MP the paper's range is "at most 0.07"; being lower than its 0.001
        # is no disagreement.
        within = bool(
            (cells[family] <= hi).all()
            and (family == "mp" or (cells[family] >= lo).all())
        )
        report.record(
            f"Absorption range over the grid, {family} (cell medians; {seeds})",
            paper=f"{lo:g} – {hi:g}",
            kind="replication" if scale == "this run" else "replication (shipped run)",
            ours=f"{cells[family].min():.3f} – {cells[family].max():.3f} "
            f"over {len(cells)} cells "
            f"(our grid, not the paper's)",
            status="matches" if within else "differs",
        )


check_grid(grid, "this run")

# %% [markdown]
# ## Adaptive sparsity
#
# An MP-SAE trained with $k$ steps can run any number of steps at inference, and by guarantee 2 above its
# error can only go down. TopK has no such guarantee: its encoder was trained to make exactly $k$ latents
# fire, and letting more through adds latents whose sizes were never calibrated
# {cite}`gao2024scaling`. A ReLU SAE has no $k$ at all. To draw it on the same axes we keep only its $k$
# largest codes, so its curve is flat once $k$ covers every latent it fires; that flatness is true by
# construction and tests nothing, so we report where the plateau lies rather than assert it.
#
# The paper's tree is too easy for this test: no sample has more than two concepts, so a well-trained
# SAE has nothing left to find after two steps. So we build a busier world with the same concepts:
# top-level concepts now fire *independently* (parents with probability 0.3, leaves 0.15), so a sample
# holds 2.6 concepts on average and sometimes many more. TopK and MP get a budget of $k = 2$ (ReLU keeps
# the bisected L1 weight), and we sweep the inference $k$ from 1 to 20. This busier tree is the book's
# own, not the paper's, so what follows are our findings set beside the paper's claim, not a
# replication of it (the scorecard files them so).

# %%
busy = busy_tree(tree)  # parents fire with probability 0.3, leaves 0.15, independently
ADAPTIVE_STEPS = SCALE.adaptive_steps
start = time.perf_counter()
adaptive = run_on_tree(
    busy,
    with_l1(ADAPTIVE_VARIANTS, tuning.l1_coeff),
    steps=ADAPTIVE_STEPS,
    seeds=SEEDS[:1],
    correlation=ADAPTIVE_CORRELATION,
)
training_seconds += time.perf_counter() - start
ks = INFERENCE_KS
curves = {r.name: error_vs_k(r.sae, r.test.x, ks) for r in adaptive}
print(
    f"busy tree: expected L0 {busy.expected_l0():.2f}; "
    "samples with more than 2 concepts: "
    f"{(adaptive[0].test.codes > 0).sum(1).gt(2).float().mean():.0%}"
)

fig = go.Figure()
for family, errors in curves.items():
    fig.add_trace(
        go.Scatter(
            x=ks,
            y=errors,
            mode="lines+markers",
            name=family,
            line_color=FAMILY_COLORS[family],
        )
    )
fig.add_vline(x=2, line_dash="dash", annotation_text="training k = 2")
fig.update_layout(
    title="Error as the inference budget k grows",
    xaxis_title="k at inference",
    yaxis_title="FVU",
    yaxis_type="log",
    height=400,
)
fig.show()

# %% [markdown]
# MP's error keeps falling for several steps past its training $k$ and never rises; it levels off once no
# atom correlates positively with what is left (MP only adds non-negative codes). TopK's error hardly
# moves for one extra latent and then climbs far above its value at the training $k$: the extra latents
# it lets through were never trained to fire together. ReLU's curve falls until $k$ reaches the number
# of latents it fires and is flat from there, by construction. What the flat part hides is where it
# sits: a ReLU SAE's L0 is not fixed, it grows with what the input contains, so on this busier tree its
# full code is compared with MP's best below (recorded, not asserted: the plateau itself is not a test).

# %%
relu_run = next(r for r in adaptive if r.name == "relu")
relu_max_active = int((relu_run.sae.encode(relu_run.test.x) > 0).sum(-1).max())


def check_adaptive(curves: dict, scale: str, relu_max_active: int | None = None):
    """Assert the adaptive-sparsity claims on FVU curves over k = 1..20, by family."""
    mp_curve, topk_curve, relu_curve = (
        torch.tensor(curves[f]) for f in ["mp", "topk", "relu"]
    )
    report.check(
        "Adaptive sparsity: MP's error never rises with k "
        f"and keeps falling past its training k (our busier tree, not the paper's; "
        f"{scale})",
        paper="the paper's claim, on its own tree: falls monotonically past the "
        "training k",
        kind="finding",
        ours=f"FVU {mp_curve[1]:.3f} at k = 2 → {mp_curve[-1]:.3f} at k = 20",
        passed=bool((mp_curve[1:] <= mp_curve[:-1] + 1e-6).all())
        and mp_curve[-1] < 0.75 * mp_curve[1],
    )
    report.check(
        "TopK's error ends far above its training-k value (k = 20 vs k = 2; our busier "
        f"tree, not the paper's; {scale})",
        paper="the paper's claim, on its own tree: gets worse past the training k",
        kind="finding",
        ours=f"FVU {topk_curve[1]:.3f} at k = 2 → {topk_curve[-1]:.3f} at k = 20",
        passed=bool(topk_curve[-1] > 1.3 * topk_curve[1]),
    )
    codes = f" (up to {relu_max_active} per input)" if relu_max_active else ""
    report.record(
        f"ReLU's error plateaus with the inference budget (our busier tree; {scale})",
        paper="the paper's claim, on its own tree: plateaus",
        kind="finding",
        ours="flat past its own L0 by construction "
        "(we truncate its codes to the top k); with all its codes"
        f"{codes} FVU {relu_curve[-1]:.4f}, vs MP at k = 20 "
        f"{mp_curve[-1]:.4f}: its L1-tuned L0 already adapts per input",
        status="matches" if relu_curve[-1] > mp_curve[-1] else "differs",
    )


check_adaptive(curves, "this run", relu_max_active)

# %% [markdown]
# ### The authors' stopping rule: L0 out of the data
#
# The same property lets MP choose its own $k$ per input, as the authors' code does: run until the
# residual is small, or until the chosen support stops changing, with $k$ only as a cap. `MPSAE` has both
# rules as options: `threshold` stops a row once $\|r\| < \text{threshold}\cdot\|x\|$ (relative to the row's
# own norm, so that it does not depend on the data's scale; the authors' notebook uses an absolute 0.05,
# and the tree's inputs have norms between about 1 and 2.5), and `stop_on_repeat` stops a row when its next
# atom is one it already used. Back on the paper's tree at $\rho = 0$, we give a trained MP-SAE a cap of
# $k = 20$ and either rule, and compare the number of atoms each sample uses with its number of concepts.

# %%
run = next(r for r in sweep[0.0] if r.name == "mp")
true_l0 = (run.test.codes > 0).sum(1)
stopping_rules = {
    "fixed k = 20": {},
    "threshold 0.05": {"threshold": 0.05},
    "support unchanged": {"stop_on_repeat": True},
}
used = {}
for rule, options in stopping_rules.items():
    stopper = MPSAE(20, 20, k=20, **options)
    stopper.load_state_dict(run.sae.state_dict())
    used[rule] = (stopper.encode(run.test.x) > 0).sum(1)
l0_table = pd.DataFrame(
    {
        rule: {
            "mean L0": n.float().mean().item(),
            "L0 = number of concepts": (n == true_l0).float().mean().item(),
        }
        for rule, n in used.items()
    }
).T
print(f"true L0: mean {true_l0.float().mean():.3f}")
pd.crosstab(
    true_l0.numpy(),
    used["threshold 0.05"].numpy(),
    rownames=["concepts in the sample"],
    colnames=["atoms used, threshold 0.05"],
)

# %%
l0_table.round(3)

# %%
exact = l0_table.loc["threshold 0.05", "L0 = number of concepts"]
report.check(
    "With the threshold rule (0.05 of |x|), MP's L0 comes out of the data: "
    "as many atoms as concepts",
    paper="L0 = 1.36 (the tree's)",
    ours=f"mean L0 {l0_table.loc['threshold 0.05', 'mean L0']:.3f} "
    f"vs true {true_l0.float().mean():.3f}; "
    f"exact on {exact:.1%} of samples",
    passed=bool(exact > 0.99),
)
report.check(
    "With a fixed k = 20, MP's L0 exceeds the number of concepts "
    "(the stopping rule is what "
    "makes L0 data-driven)",
    ours=f"mean L0 {l0_table.loc['fixed k = 20', 'mean L0']:.2f}",
    passed=bool(
        l0_table.loc["fixed k = 20", "mean L0"]
        > l0_table.loc["threshold 0.05", "mean L0"]
    ),
)

# %% [markdown]
# The threshold rule gives each sample exactly as many atoms as it has concepts. A fixed $k = 20$ keeps
# adding atoms for what the learned dictionary leaves unexplained (its small errors), each above the
# library's noise floor. The support rule's numbers are in the table: it stops only when pursuit turns
# back to an atom it already used.

# %% [markdown]
# ## A counterpoint: superposition noise
#
# The tree is a world MP is built for: as many concepts as dimensions, no noise, so everything left after
# the right steps is zero. SynthSAEBench {cite}`chanin2026synthsaebench`, a later benchmark of synthetic
# activations, reports the other side: on data with *superposition noise* (more true features than
# dimensions, so every input carries interference from the features it does not contain, plus noise),
# MP-SAEs reconstruct better than other SAEs **without** learning the ground-truth features: the extra
# steps spend atoms on fitting the noise. We test that claim in a small world of our own: 64 true
# features in 32 dimensions (each active with probability 0.05, so 3.2 per input on average, magnitudes
# around 1), plus Gaussian noise of standard deviation 0.1 per dimension. TopK ($k = 3$), BatchTopK (an
# average of 3.2) and MP ($k = 3$) SAEs with 64 latents each are trained the same way (Adam, learning rate
# $3\cdot10^{-3}$, batches of 200 fresh samples). We score reconstruction by FVU and recovery by the mean
# matched cosine between learned atoms and true features (one-to-one matching, chapter 1), and the share
# of features found at cosine ≥ 0.9.

# %%
SYNTH_STEPS, SYNTH_SEEDS = SCALE.noisy_steps, SCALE.noisy_seeds
start = time.perf_counter()
synth_rows = [
    {
        "SAE": name,
        "seed": seed,
        **run_in_noisy_world(name, steps=SYNTH_STEPS, seed=seed),
    }
    for seed in SYNTH_SEEDS
    for name in NOISY_FAMILIES
]
training_seconds += time.perf_counter() - start


def noisy_world_medians(rows: pd.DataFrame) -> pd.DataFrame:
    """Each family's scores, median over seeds."""
    return (
        rows.groupby("SAE", sort=False).median(numeric_only=True).drop(columns="seed")
    )


synth = noisy_world_medians(pd.DataFrame(synth_rows))
synth.round(3)


# %%
def check_noisy_world(rows: pd.DataFrame, scale: str) -> float:
    """Assert our finding and record the SynthSAEBench comparison (medians over seeds);
    return the recovery gap, TopK's matched cosine minus MP's."""
    synth = noisy_world_medians(rows)
    mp, topk = synth.loc["mp"], synth.loc["topk"]
    summary = (
        "FVU "
        + ", ".join(f"{n} {synth.loc[n, 'fvu']:.3f}" for n in synth.index)
        + "; matched cos "
        + ", ".join(f"{n} {synth.loc[n, 'mean_cos']:.3f}" for n in synth.index)
        + f" ({rows.seed.nunique()} seed(s), {scale})"
    )
    report.check(
        "Superposition plus noise (64 features in 32 dims): at the same L0 (exactly 3 "
        f"latents), MP reconstructs better than TopK ({scale})",
        ours=summary,
        passed=bool(mp["fvu"] < topk["fvu"]),
    )
    gap = topk["mean_cos"] - mp["mean_cos"]
    report.record(
        "SynthSAEBench: MP's better reconstruction comes with worse recovery "
        f"of the true features (against TopK at the same L0; {scale})",
        paper="MP-SAE: lower error, worse ground-truth recovery "
        "(Chanin & Garriga-Alonso 2026)",
        kind="finding",
        ours=summary + "; our simple generator, not theirs",
        status="matches" if mp["fvu"] < topk["fvu"] and gap > 0.01 else "differs",
    )
    return gap


synth_gap = check_noisy_world(pd.DataFrame(synth_rows), "this run")

# %% [markdown]
# MP reconstructs better than TopK at the same L0, as SynthSAEBench finds. Whether it pays for that
# in recovery is the row "SynthSAEBench" of the table at the end: in this short run, compare the two
# matched-cosine columns above. BatchTopK is not at quite the same budget (its $k$ is an average over
# the batch, so its L0 column sits a little above 3), and it is the family with the most dead
# latents when training is short. The full-profile run at the end of the chapter trains 15 times
# longer, and there the answer changes.
#
# Our world is much simpler than SynthSAEBench's: features fire independently and uniformly, with no
# firing-rate spread, no correlations and no hierarchy, and only 2 features per dimension. So
# whatever we find here neither confirms nor refutes their result at their scale; it says what
# superposition and noise alone do, at this scale.

# %% [markdown]
# ## At the papers' scale
#
# Everything above ran at the `ci` profile's scale. The `full` profile trains as the paper does (15k
# steps of 200 samples) on 10 seeds for the sweep and the $k = 2$ comparison, 3 seeds per grid cell,
# and 15k steps for the adaptive and noisy-world runs: a few hundred SAEs, hours on a laptop CPU. We
# ran it once with `python scripts/full_profile_ch45.py` (resumable, one SAE at a time) and ship its
# results with the library. Every claim of this chapter is checked again on them below; where one
# does not hold at full scale, the check is recorded as "differs" with the reason, not dropped.

# %%
full_sweep = load_full_profile("ch5/sweep/")
full_grid = load_full_profile("ch5/grid/")
full_k2 = load_full_profile("ch5/mp_k2/")
full_noisy = load_full_profile("ch5/noisy/")
full_adaptive = {
    f: full_profile_setting(f"ch5/adaptive/{f}/seed0")["error_vs_k"]
    for f in ["mp", "topk", "relu"]
}
full_runs = [full_sweep, full_grid, full_k2, full_noisy]
print(
    f"full profile: {sum(map(len, full_runs)) + len(full_adaptive)} SAEs, "
    f"{sum(p.seconds.sum() for p in full_runs) / 3600:.1f} h of training "
    "(one thread per SAE, two at a time on a 2-core CPU); ReLU L1 weight "
    f"{full_profile_setting('ch5/tune_l1')['l1_coeff']:.2e} (this run: "
    f"{tuning.l1_coeff:.2e})"
)
full_table1 = cell_medians(full_grid)
plot_grid_heatmaps(
    {family: full_table1.loc[family].sort_index().values for family in GRID_FAMILIES},
    x=list(full_table1.columns),
    y=sorted(full_grid["child mean"].unique()),
    x_label="child spread",
    y_label="child mean",
    zmin=0,
    zmax=0.8,
    title="Full profile: absorption per cell (median over "
    f"{full_grid.seed.nunique()} seeds)",
).show()
check_sweep(full_sweep, "full profile")
check_grid(full_grid, "full profile")
check_adaptive(full_adaptive, "full profile")
full_gap = check_noisy_world(full_noisy, "full profile")
report.check(
    "Noisy world: trained longer, TopK's atoms sharpen past MP's, so the recovery gap "
    "SynthSAEBench reports appears with training",
    paper="MP-SAE: worse ground-truth recovery (Chanin & Garriga-Alonso 2026)",
    kind="finding",
    ours=f"TopK − MP matched cos: this run {synth_gap:+.3f}, "
    f"full profile {full_gap:+.3f}",
    # (run at the full profile, "this run" is the same run)
    passed=bool(full_gap > 0.01 and (SYNTH_STEPS >= 15_000 or full_gap > synth_gap)),
)

# %% [markdown]
# Everything asserted in this chapter also holds at the papers' scale. Two results move with the
# scale, and both are recorded in the table at the end. In the noisy world (medians over the three
# full-profile seeds below), MP still reconstructs better than TopK at the same L0, but 15k steps let
# TopK's atoms sharpen onto the true features while MP's stay a little off: the trade SynthSAEBench
# reports, in our small world. (BatchTopK's budget is a little larger on average: read its FVU with
# its L0 column.) And on the tree, the $k = 2$ and $\rho = 0.3$ runs show the seed spread, next.

# %%
noisy_world_medians(full_noisy).drop(columns=["steps", "seconds"]).round(3)

# %% [markdown]
# **The spread over seeds.** With 10 seeds per setting, the full run shows how much one MP-SAE
# varies from the next. At $\rho = 0.3$, how many runs have their worst atom stuck at the
# sibling-orthogonalised cosine $\sqrt{1 - \rho^2}$ found above, and what that does to absorption;
# and at $\rho = 0$, $k = 2$ against $k = 3$ on every seed:

# %%
mp_03 = full_sweep[(full_sweep.correlation == 0.3) & (full_sweep.SAE == "mp")]
stuck = (mp_03.min_cos - target).abs() < 0.01
k3 = full_sweep[(full_sweep.correlation == 0.0) & (full_sweep.SAE == "mp")]
seed_spread = pd.DataFrame(
    {
        "MP at ρ = 0.3, worst atom at √(1-ρ²)": {
            "runs": f"{stuck.sum()} of {len(mp_03)}",
            "absorption": median_and_range(mp_03.absorption[stuck], 3)
            if stuck.any()
            else "—",
        },
        "MP at ρ = 0.3, the other runs": {
            "runs": f"{(~stuck).sum()} of {len(mp_03)}",
            "absorption": median_and_range(mp_03.absorption[~stuck], 3)
            if (~stuck).any()
            else "—",
        },
        "MP at ρ = 0, k = 3: worst matched cosine": {
            "runs": f"{(k3.min_cos > 0.99).sum()} of {len(k3)} above 0.99",
            "absorption": median_and_range(k3.absorption, 3),
        },
        "MP at ρ = 0, k = 2: worst matched cosine": {
            "runs": f"{(full_k2.min_cos > 0.99).sum()} of {len(full_k2)} above 0.99",
            "absorption": median_and_range(full_k2.absorption, 3),
        },
    }
).T
seed_spread

# %%
worst_k2_full, worst_k3_full = full_k2.min_cos.median(), k3.min_cos.median()
report.check(
    "MP-SAE with one spare step (k = 3) recovers the tree on every seed, where k = 2 "
    f"stalls on most (ρ = 0; {len(full_k2)} seeds, full profile)",
    ours=f"worst matched cosine, median: k = 2 {worst_k2_full:.2f}, "
    f"k = 3 {worst_k3_full:.2f} (lowest {k3.min_cos.min():.3f})",
    passed=bool((k3.min_cos > 0.99).all()) and worst_k2_full < 0.99,
)
report.record(
    "MP at ρ = 0.3: runs whose worst atom is the sibling-orthogonalised one "
    f"(cos ≈ {target:.3f}; full profile)",
    paper="exact recovery",
    kind="replication (shipped run)",
    ours=f"{stuck.sum()} of {len(mp_03)} runs",
    status="differs" if stuck.any() else "matches",
)
report.check(
    "At full scale the sibling-orthogonalised atom is the rule at ρ = 0.3 (most "
    "seeds), and it costs cosine, not absorption (every run ≤ 0.07)",
    paper="MP absorption 0.001 – 0.07",
    kind="replication (shipped run)",
    ours=f"{stuck.sum()} of {len(mp_03)} runs; absorption "
    f"{median_and_range(mp_03.absorption, 4)}",
    passed=bool(2 * stuck.sum() > len(mp_03) and mp_03.absorption.max() <= 0.07),
)

# %% [markdown]
# Two things about our MP-SAE's spread from seed to seed, then. First, at $\rho = 0.3$ the atom
# stuck at $\sqrt{1-\rho^2}$ is not a sign of short training: at 15k steps most seeds end there
# (the count above), because the spare step reconstructs exactly with it and nothing in the loss
# pushes it further. It lowers the worst matched cosine but not absorption, which stays inside the
# paper's range on every seed. The $k = 3$ runs at $\rho = 0$ recover the tree exactly on every
# seed, while $k = 2$ stalls on most of them: the budget, not the seed, is what matters there.
# Second, on the grid ($\rho = 0$) MP absorbs only where children are half as strong as their
# parent (over the other cells its median stays ≤ 0.07, checked on both scales); the heatmap
# above shows which weak-child cells, as medians of three seeds each. No MP atom died in any sweep
# run of either scale (checked), so dead atoms are not the cause.

# %% [markdown]
# ## Closing note: our numbers beside the paper's
#
# One column per sibling correlation: the paper's verdict on MP-SAE recovery, then, for each family,
# the median [min – max] over our seeds of the mean matched cosine and of absorption, in this run and
# in the full-profile run. The paper's absorption
# ranges (0.001–0.07 for MP, 0.45–0.70 for ReLU, 0.42–0.54 for BatchTopK) are over its grid of child
# magnitudes, not over correlations: the grid above is where we compare with them.

# %%
paper_verdict = {0.0: "exact", 0.3: "exact", 0.6: "partial", 0.9: "degraded"}
closing = pd.DataFrame(
    {
        ("paper", "MP recovery", ""): paper_verdict,
        **{
            (family, metric, scale): {
                rho: spread(table, rho, family, column) for rho in CORRELATIONS
            }
            for family in FAMILIES
            for metric, column in [
                ("mean cos", "mean_cos"),
                ("absorption", "absorption"),
            ]
            for scale, table in [("this run", results), ("full profile", full_sweep)]
        },
    }
).T.rename_axis(columns="ρ")
closing

# %% [markdown]
# ## Exercises
#
# Two exercises: a number that says when greedy pursuit can be trusted, then the authors'
# stopping rule. Each has a stub to fill in, a cell that checks your function against the
# library (`sae_lib.metrics.babel`, `MPSAE`) on random inputs, and a solution behind a toggle
# ({ref}`how to work the exercises <working-the-exercises>`).

# %%
import plotly.graph_objects as go
import torch.nn.functional as F

from sae_lib import TopKSAE, error_vs_k, exercises, fvu, superposition_data

# %% [markdown]
# :::{exercise} The Babel function
# :label: ex-5-babel
#
# The guarantees above hold for any dictionary, but they do not say that MP picks the *right*
# atoms. Tropp {cite}`tropp2004greed` measures how much a few atoms can gang up on another one
# with the **Babel function**
#
# $$\mu_1(p) = \max_i \; \max_{|S| = p,\ i \notin S} \; \sum_{j \in S} |\cos(d_i, d_j)|,$$
#
# the largest total |cosine| between one atom and $p$ others ($\mu_1(1)$ is the coherence, the
# most similar pair). He shows that if $\mu_1(s - 1) + \mu_1(s) < 1$, a greedy pursuit that
# picks the atom of largest |correlation| (the classic rule; ours ranks by
# $\operatorname{ReLU}(c)$) only ever picks atoms of an input's support, for every input built
# from $s$ atoms. Write `babel(atoms, p)` for atoms $(n, d)$ of any length and $1 \le p < n$;
# return a number or a one-element tensor.
# :::


# %%
def babel(atoms, p):
    """Tropp's mu_1(p): the largest sum of one atom's p largest |cosines|."""
    raise NotImplementedError("your turn: |cosines|, zero the diagonal, topk, sum, max")


# %%
babel_passed = exercises.check_babel(babel)

# %% [markdown]
# ::::{solution-start} ex-5-babel
# :class: dropdown
# ::::


# %%
def babel_solution(atoms, p):
    unit = F.normalize(atoms, dim=1)
    cos = (unit @ unit.T).abs().fill_diagonal_(0.0)  # not an atom with itself
    return cos.topk(p, dim=1).values.sum(1).max()  # p worst others, worst atom


exercises.check_babel(babel_solution, solution=True)

# %% [markdown]
# ::::{solution-end}
# ::::
#
# **Predict, then run.** For the 256 random atoms in 64 dimensions used above, up to which
# sparsity $s$ does Tropp's condition hold? And for the tree's 20 true concepts at $\rho = 0$?

# %%
use_babel = exercises.prefer(babel, babel_solution, babel_passed)


def guaranteed_sparsity(atoms):
    """The largest s < n with mu_1(s - 1) + mu_1(s) < 1 (mu_1(0) = 0)."""
    s, before = 0, 0.0
    while s + 1 < len(atoms):
        now = float(use_babel(atoms, s + 1))
        if before + now >= 1:
            break
        s, before = s + 1, now
    return s


for name, dictionary in [
    ("256 random atoms in 64 dimensions", random_dictionary(256, 64, seed=0)),
    ("the tree's 20 true concepts (ρ = 0)", run.test.dictionary),
]:
    s_max = guaranteed_sparsity(dictionary)
    first = ", ".join(f"{float(use_babel(dictionary, p)):.2f}" for p in (1, 2, 3))
    holds = "every s" if s_max == len(dictionary) - 1 else f"s ≤ {s_max}"
    print(f"{name}: μ₁(1), μ₁(2), μ₁(3) = {first}; the condition holds for {holds}")

# %% [markdown]
# :::{exercise} The authors' stopping rule
# :label: ex-5-threshold
#
# Write `pursuit_with_threshold(x, atoms, k, threshold)`: matching pursuit over unit atoms
# $(n, d)$ in which each row of `x` $(b, d)$ stops on its own once its residual is small,
# $\|r\| < \text{threshold}\cdot\|x\|$ (checked before every step), and after at most $k$
# steps in any case. Return the codes $z$ $(b, n)$. The chapter's `matching_pursuit(r, atoms, 1)`
# does one step for every row and returns `(codes of that step, new residual)`; the new part is
# letting each row stop at its own time. The checker's inputs have norms from 0.1 to 25.
# :::


# %%
def pursuit_with_threshold(x, atoms, k, threshold):
    """Codes (b, n) of MP stopping each row once |r| < threshold |x| (<= k steps)."""
    raise NotImplementedError("your turn")


# %%
threshold_passed = exercises.check_mp_threshold(pursuit_with_threshold)

# %% [markdown]
# ::::{solution-start} ex-5-threshold
# :class: dropdown
# ::::


# %%
def pursuit_with_threshold_solution(x, atoms, k, threshold):
    z, residual = torch.zeros(len(x), len(atoms)), x
    limit = threshold * x.norm(dim=1, keepdim=True)  # relative to each row's own norm
    for _ in range(k):
        going = residual.norm(dim=1, keepdim=True) >= limit  # (b, 1): still running
        step_codes, new_residual = matching_pursuit(residual, atoms, 1)
        z = z + going * step_codes  # a stopped row adds nothing
        residual = torch.where(going, new_residual, residual)
    return z


exercises.check_mp_threshold(pursuit_with_threshold_solution, solution=True)

# %% [markdown]
# ::::{solution-end}
# ::::
#
# **Predict, then run.** Take one dictionary of 64 unit atoms in 32 dimensions and inputs that are
# sparse sums of them. Encode with the chapter's `matching_pursuit`, and with a TopK encoder that
# reads the same atoms (its encoder is the dictionary's transpose), for $k = 1, 2, \dots, 24$.
# Neither was trained for any particular $k$. Before running: how does each one's error change as
# $k$ grows past the three or so features an input really has? Can MP's error ever go up?

# %%
toy = superposition_data(1_000, n_features=64, d=32, p_active=0.05, seed=3)
tied = TopKSAE(32, 64, k=1)
with torch.no_grad():
    tied.W_dec.copy_(toy.dictionary)
    tied.W_enc.copy_(toy.dictionary.T)
ks = list(range(1, 25))
mp_error = [
    fvu(toy.x, toy.x - matching_pursuit(toy.x, toy.dictionary, k)[1]) for k in ks
]
topk_error = error_vs_k(tied, toy.x, ks)
fig = go.Figure(
    [
        go.Scatter(x=ks, y=mp_error, name="matching pursuit"),
        go.Scatter(x=ks, y=topk_error, name="TopK, same atoms"),
    ]
)
fig.update_layout(
    title="Error as k grows (the same 64 atoms, no training)",
    xaxis_title="k",
    yaxis_title="FVU",
    yaxis_type="log",
    height=360,
)
fig.show()
best = min(range(len(ks)), key=topk_error.__getitem__)
print(
    f"TopK: lowest FVU {topk_error[best]:.3f} at k = {ks[best]}, "
    f"{topk_error[-1]:.3f} at k = 24; "
    f"MP: {mp_error[0]:.3f} at k = 1, {mp_error[-1]:.2e} at k = 24"
)

# %%
mp_rises = max(b - a for a, b in zip(mp_error, mp_error[1:]))
report.check(
    "Matching pursuit's error never grows with k (steps remove c² from ‖r‖²)",
    ours=f"largest step-to-step change in FVU {mp_rises:+.1e}",
    passed=mp_rises <= 1e-6,
    kind="mechanics",
)
report.check(
    "A TopK encoder reading the same atoms gets worse past its best k",
    ours=f"FVU {topk_error[best]:.3f} at k = {ks[best]} → "
    f"{topk_error[-1]:.3f} at k = 24",
    passed=topk_error[-1] > 1.5 * topk_error[best],
)

# %% [markdown]
# Each MP step removes the chosen atom's share from the residual, so $\|r\|^2$ drops by $c_j^2$
# and can never rise. TopK reads all its codes from $x$ at once: past the few features an input
# has, every extra latent adds a correlation that only interference put there, and the error
# climbs. (Chapter 3 found the same for trained TopK SAEs used past a training $k$ near or below
# the data's sparsity.)

# %% [markdown]
# ## Replication check
#
# The table gathers every check of this chapter; "differs" marks results we report without asserting,
# explained above. Training took this long in this run (the rest of the chapter takes seconds):

# %%
print(
    f"profile: {current_profile()}; "
    f"SAE training time in this run: {training_seconds:.0f} s "
    f"({len(CORRELATIONS) * len(FAMILIES) * len(SEEDS)} sweep runs × {STEPS} steps, "
    f"{len(k2_runs)} k = 2 run(s) × {STEPS}, "
    f"{len(CHILD_MEANS) * len(CHILD_SPREADS) * len(GRID_FAMILIES) * len(GRID_SEEDS)} "
    f"grid runs × {GRID_STEPS}, "
    f"3 adaptive runs × {ADAPTIVE_STEPS}, "
    f"{len(tuning.probes)} L1 probes × {TUNE_STEPS})"
)
report.save()
report.show()

# %% [markdown]
# **Summary of Part II.** Concepts organised in a hierarchy come with a geometry, conditional
# orthogonality, that one-shot SAE encoders misread: they absorb children into parents. An encoder that
# explains the input one concept at a time, conditioning each step on what is left, recovers the
# hierarchy as long as siblings are not nearly parallel, and gives an error that keeps improving with
# more steps at inference.

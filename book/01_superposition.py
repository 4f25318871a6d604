# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 1. Superposition
#
# GPT-2's residual stream has 768 dimensions. Yet the model seems to keep track of far more than 768
# things at once: which language it is reading, whether it is inside a quotation, the subject of the
# sentence, that the next token should be a closing bracket. The **superposition hypothesis**
# {cite}`elhage2022superposition` says how: a network represents more *features* than it has
# dimensions, each as a direction in activation space, and gets away with it because on any one input
# only a few features are active.
#
# If that is true, the activation vector we observe is a sparse sum of feature directions, and no
# single neuron (coordinate) means one thing. A **sparse autoencoder** (SAE) tries to undo the packing:
# from activations alone, it learns a dictionary of directions and a sparse code saying which ones are
# on. Whether it finds the *right* directions is hard to know on a real model, where nobody knows the
# true features. So Parts I and II of this book work on synthetic data whose features we choose, and
# score every SAE against the truth.
#
# This chapter builds that data and the scoring rule. You will:
# * see features as directions, and what sparsity buys;
# * measure how many nearly orthogonal directions fit in $d$ dimensions;
# * state the dictionary-learning problem, and see why PCA cannot solve it;
# * learn the two recovery scores used throughout the book.

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

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import plotly.graph_objects as go
import torch

import sae_lib.plots  # noqa: F401  (shows plotly figures in Jupyter and in the book)
from sae_lib import (
    TopKSAE,
    by_profile,
    cosine_matrix,
    describe,
    match_atoms,
    mean_max_cosine,
    random_dictionary,
    superposition_data,
    train_sae,
)
from sae_lib.report import ReplicationReport

report = ReplicationReport("01_superposition")
N_SAMPLES = by_profile(ci=20_000, full=100_000)
describe(samples=N_SAMPLES)

# %% [markdown]
# ## Features as directions
#
# Take five features in a plane, their directions $d_1, \dots, d_5$ spread evenly around the circle.
# An activation is $x = \sum_i s_i\, d_i$, where $s_i \ge 0$ is how strongly feature $i$ is present.
# Five directions in two dimensions cannot be orthogonal, so when two features are on together their
# contributions interfere. But if each feature is rarely on, most activations contain at most one
# feature, and they lie on one of five rays: the features can still be read off.
#
# The library's generator samples exactly this: each feature is active with probability `p_active`,
# with a magnitude around 1.

# %%
angles = torch.arange(5) * 2 * math.pi / 5
pentagon = torch.stack([angles.cos(), angles.sin()], dim=1)  # 5 unit directions in R^2

fig, axes = plt.subplots(1, 2, figsize=(9, 4.3), sharex=True, sharey=True)
for ax, p in zip(axes, [0.04, 0.4]):
    toy = superposition_data(
        3000, n_features=5, d=2, p_active=p, dictionary=pentagon, seed=1
    )
    n_on = (toy.codes > 0).sum(1)
    for count, color in [(1, "tab:blue"), (2, "tab:orange"), (3, "tab:red")]:
        pts = toy.x[n_on == count] if count < 3 else toy.x[n_on >= 3]
        ax.scatter(
            pts[:, 0],
            pts[:, 1],
            s=4,
            alpha=0.5,
            color=color,
            label=f"{count}{'+' if count == 3 else ''} feature(s) on",
        )
    for direction in pentagon:
        ax.annotate(
            "",
            xy=1.6 * direction,
            xytext=(0, 0),
            arrowprops=dict(arrowstyle="->", lw=1.5),
        )
    ax.set_title(
        f"p_active = {p}: {(n_on == 1).float().mean():.0%} of inputs have exactly one "
        f"feature"
    )
    ax.set_aspect("equal")
axes[0].legend(loc="lower left", fontsize=8)
fig.suptitle("Five features in two dimensions (arrows: the true directions)")
plt.tight_layout()
plt.show()

# %% [markdown]
# On the left, features are sparse and the data is five clean rays: a method that looks for directions
# the data *concentrates on* can find all five, even though there are more of them than dimensions.
# On the right, features are dense, sums of several features fill the plane, and the rays drown.
# Sparsity is what makes superposition recoverable.
#
# ## How many nearly orthogonal directions fit in $d$ dimensions?
#
# In two dimensions, five directions interfere a lot. In high dimensions, random directions are
# *almost* orthogonal: the cosine between two random unit vectors in $\mathbb{R}^d$ has mean 0 and
# standard deviation $1/\sqrt{d}$, and its absolute value averages
#
# $$\mathbb{E}\,|\cos\theta| = \frac{\Gamma(d/2)}{\sqrt{\pi}\,\Gamma\!\big((d+1)/2\big)} \approx \sqrt{\frac{2}{\pi d}}.$$
#
# So a 768-dimensional stream has room for many thousands of directions that barely interfere.
# Let us check the formula by sampling.


# %%
def expected_abs_cos(d: int) -> float:
    (
        "Exact mean |cosine| between two independent uniform random unit vectors in "
        "R^d."
    )
    return math.exp(math.lgamma(d / 2) - math.lgamma((d + 1) / 2)) / math.sqrt(math.pi)


n_dirs = 1500
upper = torch.triu(torch.ones(n_dirs, n_dirs, dtype=torch.bool), diagonal=1)
fig = go.Figure()
measured = {}
for d in [2, 32, 512]:
    cos = cosine_matrix(
        random_dictionary(n_dirs, d, seed=d), random_dictionary(n_dirs, d, seed=d)
    )[upper]
    measured[d] = cos.abs().mean().item()
    density, edges = np.histogram(cos.numpy(), bins=120, range=(-1, 1), density=True)
    fig.add_trace(
        go.Bar(x=(edges[:-1] + edges[1:]) / 2, y=density, name=f"d = {d}", opacity=0.6)
    )
    print(
        f"d = {d:>3}: mean |cos| measured {measured[d]:.4f}, formula "
        f"{expected_abs_cos(d):.4f}"
    )
fig.update_layout(
    barmode="overlay",
    bargap=0,
    title=f"Cosine between pairs of {n_dirs} random unit vectors",
    xaxis_title="cosine",
    yaxis_title="density",
    height=380,
)
fig.show()

# %%
worst = max(abs(measured[d] / expected_abs_cos(d) - 1) for d in measured)
report.check(
    "Random directions are nearly orthogonal: mean |cos| matches the formula (d = 2, "
    "32, 512)",
    paper="exact formula",
    ours=f"largest relative gap {worst:.1%}",
    passed=worst < 0.03,
    kind="mechanics",
)

# %% [markdown]
# ## The dictionary-learning problem
#
# From now on the toy world is bigger: $n = 64$ features in $d = 32$ dimensions (twice as many
# features as dimensions), each active with probability 0.05, so about 3 are on per input.
# Write the true directions as the rows of a dictionary $D \in \mathbb{R}^{n \times d}$ and the codes
# as $s \in \mathbb{R}^n_{\ge 0}$, mostly zero. Each activation is
#
# $$x = s\,D = \sum_{i=1}^{n} s_i\, D_i .$$
#
# **Dictionary learning** asks: given many samples of $x$ and nothing else, find $D$ (up to the order
# of its rows) and the sparse $s$ of each sample. That is the job of every SAE in this book.

# %%
N_FEATURES, D_MODEL = 64, 32
data = superposition_data(
    N_SAMPLES, n_features=N_FEATURES, d=D_MODEL, p_active=0.05, seed=0
)
print(
    f"x: {tuple(data.x.shape)}, true codes: {tuple(data.codes.shape)}, dictionary: "
    f"{tuple(data.dictionary.shape)}"
)
print(
    f"features active per input: {(data.codes > 0).sum(1).float().mean():.2f} on "
    f"average"
)

# %% [markdown]
# ### Why not PCA?
#
# The classic way to find "the important directions" of data is PCA. But PCA returns at most $d$
# directions, and they are orthogonal: it cannot return 64 directions in 32 dimensions, and the ones it
# returns are whatever axes of variance the sum of all features happens to have. Let us see how close
# the principal directions come to the true features. (A principal direction has no sign, so we let
# each one count in both orientations.)

# %%
centered = data.x - data.x.mean(0)
principal = torch.linalg.svd(
    centered, full_matrices=False
).Vh  # (32, 32): the principal directions
best_cos_pca = (
    cosine_matrix(data.dictionary, torch.cat([principal, -principal])).max(dim=1).values
)
print(
    f"best cosine between a true feature and any principal direction: "
    f"median {best_cos_pca.median():.2f}, max {best_cos_pca.max():.2f}"
)

# %%
report.check(
    "PCA cannot recover an overcomplete dictionary: no true feature has a principal "
    "direction within cos 0.9",
    ours=f"max cos {best_cos_pca.max():.2f}",
    passed=bool(best_cos_pca.max() < 0.9),
)

# %% [markdown]
# ## Scoring recovery
#
# A learned dictionary $\hat D$ (the rows of an SAE's `W_dec`) comes in some arbitrary order, and may
# have more rows than there are true features. Two scores compare it with the truth:
#
# * **Mean max cosine similarity (MMCS)**: for each true feature, the best cosine any learned atom
#   reaches, averaged over features: $\frac{1}{n}\sum_i \max_j \cos(D_i, \hat D_j)$.
# * **One-to-one matching**: pair each true feature with a *distinct* learned atom so that the summed
#   cosine is as large as possible (the Hungarian algorithm, `scipy.optimize.linear_sum_assignment`),
#   then look at the matched cosines: their mean, and the share above a threshold such as 0.9.
#
# Signs matter in both: SAE codes are non-negative, so an atom pointing the opposite way is a different
# feature. The two scores differ in one important way: MMCS lets one learned atom stand in for several
# true features, one-to-one matching does not. Here are both, on four dictionaries we construct by
# hand. The last one is the kind of failure MMCS forgives: 32 of its atoms each **merge** two true
# features (feature $i$ and feature $i + 32$), and its other 32 atoms learned nothing (random
# directions, as a dead latent's untrained atom would be).

# %%
truth = data.dictionary
shuffled = truth[torch.randperm(N_FEATURES, generator=torch.Generator().manual_seed(0))]
noisy = torch.nn.functional.normalize(
    truth + 0.1 * torch.randn(truth.shape, generator=torch.Generator().manual_seed(99)),
    dim=1,
)
random_guess = random_dictionary(N_FEATURES, D_MODEL, seed=123)
# 32 atoms that each merge feature i with feature i + 32, and 32 random atoms.
merged = torch.nn.functional.normalize(truth[:32] + truth[32:], dim=1)
merged_and_dead = torch.cat([merged, random_dictionary(32, D_MODEL, seed=7)])
PARTLY = 0.6  # "partly found": a merged atom has cosine about 0.71 with each part

rows = []
for name, learned in [
    ("true, shuffled", shuffled),
    ("true + noise", noisy),
    ("random", random_guess),
    ("32 merged + 32 dead", merged_and_dead),
]:
    match = match_atoms(learned, truth)
    best = cosine_matrix(truth, learned).max(dim=1).values  # MMCS's per-feature score
    rows.append(
        {
            "dictionary": name,
            "MMCS": mean_max_cosine(learned, truth),
            "matched mean cos": match.mean,
            f"best ≥ {PARTLY}": (best >= PARTLY).float().mean().item(),
            f"matched ≥ {PARTLY}": match.fraction_above(PARTLY),
            "matched ≥ 0.9": match.fraction_above(0.9),
        }
    )
scores = pd.DataFrame(rows).set_index("dictionary")
scores.round(3)

# %% [markdown]
# Shuffling changes nothing, noise lowers both scores a little, and a random dictionary still scores
# well above zero on both (checked below): that is the floor a useless SAE would reach, because with
# 64 random guesses some land near each feature by chance. The last row is the subtle one. A merged
# atom has cosine about $1/\sqrt{2} \approx 0.71$ with each of its two parts, and MMCS lets it count
# for both, so nearly every feature looks partly found (a pair whose two features point apart merges
# into an atom with a lower cosine) and MMCS is well above the random floor. One-to-one matching gives
# each merged atom to one feature only; the other feature of the pair is left with a random atom, so
# only about half the features are partly found, and the matched mean cosine falls towards the random
# dictionary's. (No atom of this dictionary is a true feature, so its share matched at cos ≥ 0.9 is
# zero; the lower bar of 0.6 is what tells the two rules apart here.) We report the one-to-one score
# wherever a claim is about recovering *all* features. This failure, an atom that merges features,
# returns in Part II as **feature absorption**.

# %%
report.check(
    "Matching is invariant to the order of learned atoms",
    ours=f"{scores.loc['true, shuffled', 'matched mean cos']:.3f}",
    passed=abs(scores.loc["true, shuffled", "matched mean cos"] - 1) < 1e-6,
    kind="mechanics",
)
print(
    f"random dictionary: MMCS {scores.loc['random', 'MMCS']:.2f}, "
    f"matched mean cos {scores.loc['random', 'matched mean cos']:.2f}"
)
report.check(
    "A random dictionary scores well above zero on both (> 0.2): the floor a useless "
    "SAE would reach",
    ours=f"MMCS {scores.loc['random', 'MMCS']:.2f}, matched "
    f"{scores.loc['random', 'matched mean cos']:.2f}",
    passed=scores.loc["random", "MMCS"] > 0.2
    and scores.loc["random", "matched mean cos"] > 0.2,
    kind="mechanics",
)
report.check(
    "A random dictionary scores far below recovery (matched mean cos < 0.6)",
    ours=f"{scores.loc['random', 'matched mean cos']:.2f}",
    passed=scores.loc["random", "matched mean cos"] < 0.6,
    kind="mechanics",
)
lazy = scores.loc["32 merged + 32 dead"]
report.check(
    f"MMCS forgives merged features (≥ 90% of features have an atom at cos ≥ "
    f"{PARTLY}); one-to-one matching gives each merged atom to one feature (≤ 55% "
    f"matched at cos ≥ {PARTLY})",
    ours=f"best ≥ {PARTLY}: {lazy[f'best ≥ {PARTLY}']:.0%}, matched ≥ {PARTLY}: "
    f"{lazy[f'matched ≥ {PARTLY}']:.0%}",
    passed=lazy[f"best ≥ {PARTLY}"] >= 0.9
    and lazy[f"matched ≥ {PARTLY}"] <= 0.55
    and lazy["matched ≥ 0.9"] == 0,
    kind="mechanics",
)
report.check(
    "On the merged dictionary, MMCS sits well above the one-to-one matched mean "
    "cosine (by > 0.1)",
    ours=f"MMCS {lazy['MMCS']:.2f} vs matched {lazy['matched mean cos']:.2f} "
    f"(random: {scores.loc['random', 'matched mean cos']:.2f})",
    passed=lazy["MMCS"] > lazy["matched mean cos"] + 0.1,
    kind="mechanics",
)

# %% [markdown]
# ## A preview: an SAE solves what PCA cannot
#
# Chapters 2 and 3 build SAEs step by step. As a preview of where we are going, here is the library's
# TopK SAE (chapter 3) with 128 latents trained on `data.x` alone for a few seconds. It never sees the
# true dictionary; we only use the truth to score it.

# %%
sae = TopKSAE(D_MODEL, 128, k=4, seed=0)
history = train_sae(
    sae, data.x, steps=by_profile(ci=1500, full=5000), batch_size=512, lr=3e-3, seed=0
)
preview = match_atoms(sae.W_dec, truth)
print(
    f"matched mean cosine {preview.mean:.3f}; features recovered at cos ≥ 0.9: "
    f"{preview.fraction_above(0.9):.0%}"
)

# %%
fig = go.Figure()
fig.add_trace(
    go.Histogram(
        x=best_cos_pca.numpy(),
        name="PCA (best principal direction)",
        nbinsx=40,
        opacity=0.7,
    )
)
fig.add_trace(
    go.Histogram(
        x=preview.cosine.numpy(), name="TopK SAE (matched atom)", nbinsx=40, opacity=0.7
    )
)
fig.update_layout(
    barmode="overlay",
    title="How well each of the 64 true features is recovered",
    xaxis_title="cosine with the true feature",
    yaxis_title="features",
    height=380,
)
fig.show()

# %%
report.check(
    "A TopK SAE recovers the overcomplete dictionary (≥ 95% of features matched at cos "
    "≥ 0.9)",
    ours=f"{preview.fraction_above(0.9):.0%}",
    passed=preview.fraction_above(0.9) >= 0.95,
)

# %% [markdown]
# ## Exercises
#
# Two exercises on this chapter's central code. Each has a stub to fill in, a cell that checks
# your function against the library on a few random inputs, and a solution hidden behind a toggle
# (the intro says {ref}`how to work them <working-the-exercises>`). Your own function keeps its
# name: the solution is called `..._solution`.

# %%
import torch.nn.functional as F

from sae_lib import exercises

# %% [markdown]
# :::{exercise} Interference between packed features
# :label: ex-1-interference
#
# When feature $i$ is on alone with strength 1 and we read feature $j$ by projecting $x$ on $j$'s
# unit direction, we read $\cos(D_i, D_j)$ instead of 0: that is the **interference** of $i$ on $j$.
# Write `interference(dictionary)`: given $n$ feature directions as the rows of an $(n, d)$ tensor
# (of any length), return the $(n, n)$ matrix of cosines between them, with zeros on the diagonal
# (a feature does not interfere with itself).
# :::


# %%
def interference(dictionary):
    """(n, d) feature directions -> (n, n) cosines between them, 0 on the diagonal."""
    raise NotImplementedError("your turn: normalise, dot products, zero the diagonal")


# %%
interference_passed = exercises.check_interference(interference)

# %% [markdown]
# ::::{solution-start} ex-1-interference
# :class: dropdown
# ::::


# %%
def interference_solution(dictionary):
    unit = F.normalize(dictionary, dim=1)  # unit rows: dot products become cosines
    return (unit @ unit.T).fill_diagonal_(0.0)


exercises.check_interference(interference_solution, solution=True)

# %% [markdown]
# ::::{solution-end}
# ::::
#
# **Predict, then run.** Pack 256 random features into $d = 8$, $64$ and $512$ dimensions. Before
# running the next cell, guess the mean |interference| in each case, and the worst single pair.
# (The cell uses your `interference` once it passes its check, the solution's otherwise.)

# %%
use_interference = exercises.prefer(
    interference, interference_solution, interference_passed
)
worst_over_mean = {}
for d in [8, 64, 512]:
    cos = use_interference(random_dictionary(256, d, seed=d)).abs()
    mean = (cos.sum() / (256 * 255)).item()  # the diagonal's zeros left out
    worst_over_mean[d] = cos.max().item() / mean
    print(
        f"d = {d:>3}: mean |interference| {mean:.3f} "
        f"(formula {expected_abs_cos(d):.3f}), "
        f"worst pair {cos.max():.2f}, {worst_over_mean[d]:.1f} × the mean"
    )

# %%
report.check(
    "Of 256 random features, the worst pair interferes ≥ 3× the mean pair",
    ours=", ".join(f"d = {d}: {r:.1f}×" for d, r in worst_over_mean.items()),
    passed=min(worst_over_mean.values()) >= 3,
)

# %% [markdown]
# The mean falls like $1/\sqrt d$, as the formula above says, but the *worst* pair stays several
# times worse: with tens of thousands of pairs, some are always unlucky. Those pairs are where an
# encoder that reads each feature on its own makes its errors.
#
# :::{exercise} One-to-one matching
# :label: ex-1-matching
#
# The table above called `match_atoms` for its one-to-one scores. Write its core,
# `matched_cosine(learned, true)`: pair each true feature (a row of `true`) with a *distinct*
# learned atom (a row of `learned`, which may have more rows) so that the summed cosine is as
# large as possible, and return the matched cosines as a tensor of shape `(n_true,)`, in the true
# features' order. Rows may have any length, and signs count. Hint:
# `scipy.optimize.linear_sum_assignment(matrix, maximize=True)` solves the assignment problem
# for a NumPy matrix and returns the chosen `(rows, columns)`. The checker includes a case where
# giving each feature in turn its best free atom is not the best pairing.
# :::


# %%
def matched_cosine(learned, true):
    """(n_true,) cosines of the best one-to-one pairing, in `true`'s row order."""
    raise NotImplementedError("your turn: a cosine matrix, then linear_sum_assignment")


# %%
matched_passed = exercises.check_matched_cosine(matched_cosine)

# %% [markdown]
# ::::{solution-start} ex-1-matching
# :class: dropdown
# ::::


# %%
from scipy.optimize import linear_sum_assignment


def matched_cosine_solution(learned, true):
    cos = F.normalize(true, dim=1) @ F.normalize(learned, dim=1).T  # (true, learned)
    rows, cols = linear_sum_assignment(cos.numpy(), maximize=True)
    return cos[rows, cols]  # rows come back sorted: one per true feature, in order


exercises.check_matched_cosine(matched_cosine_solution, solution=True)

# %% [markdown]
# ::::{solution-end}
# ::::

# %% [markdown]
# ## Replication check
#
# Every claim above was computed and asserted where it was made; this table gathers them. This chapter
# reproduces textbook facts rather than a paper's numbers, so most "paper" cells are empty.

# %%
report.save()
report.show()

# %% [markdown]
# **Next:** chapter 2 builds the standard SAE from scratch and looks at the price of its L1 penalty.

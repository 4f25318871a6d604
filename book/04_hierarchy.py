# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 4. Hierarchical concepts
#
# Part I assumed the friendliest possible world: features switch on independently of each other, and
# their directions are random, hence nearly orthogonal. Real concepts are not like that. They come in
# **hierarchies**: "dog" and "cat" are kinds of "animal"; a token that is "inside a Python string" is
# also "inside Python code". A child concept is only ever present together with its parent, and
# siblings ("dog", "cat") exclude each other. Language models seem to store such concepts with a
# matching geometry {cite}`park2024geometry`: the direction that separates a child from its parent is
# orthogonal to the parent's direction, while related siblings point in similar directions.
#
# Costa et al. {cite}`costa2025flat` call this geometry **conditional orthogonality**, build synthetic
# data with it, and show that the SAEs of chapters 2 and 3 do not recover it: they **absorb** children
# into parents {cite}`chanin2024absorption`. This chapter rebuilds their data set and reproduces the
# failure. You will:
# * build the paper's tree of 20 concepts and check which concepts can fire together;
# * construct conditionally orthogonal directions and *see* what the geometry does to the data;
# * work out why an L1 penalty pays an SAE to absorb a child into its parent;
# * train the four SAE families the paper compares (ReLU, BatchTopK, Matryoshka; matching pursuit in
#   chapter 5) and per-sample TopK on the tree, and measure absorption next to the paper's numbers.
#
# Chapter 5 then builds the SAE that the paper proposes for this world: matching pursuit.

# %% tags=["remove-cell"]
# Colab only (does nothing elsewhere): install the book's library at the version this
# notebook was written for. Stamped by scripts/stamp_colab.py: edit it there.
import subprocess, sys  # noqa: E401

if "google.colab" in sys.modules:
    REPO, TAG = "https://github.com/sae-book/sae-book", "v0.1.0"
    pip = [sys.executable, "-m", "pip", "install", "-q"]
    subprocess.run([*pip, f"sae-lib @ git+{REPO}@{TAG}"], check=True)

# %%
import matplotlib.pyplot as plt
import pandas as pd
import torch
import torch.nn.functional as F

from sae_lib import (
    absorption_score,
    aligned_atoms,
    conditionally_orthogonal_dictionary,
    cosine_matrix,
    describe,
    fvu,
    hierarchical_data,
    match_atoms,
    median_and_range,
    paper_tree,
    run_on_tree,
    runs_table,
    tune_l1,
)
from sae_lib.full_profile import full_profile_setting, load_full_profile
from sae_lib.plots import plot_cosine_panels, plot_cosines
from sae_lib.report import ReplicationReport
from sae_lib.tree_experiments import CH4_CORRELATION, CH4_VARIANTS, tree_scale, with_l1

torch.set_num_threads(
    1
)  # the SAEs here are tiny (20 × 20): one thread is much faster than several
report = ReplicationReport("04_hierarchy")
# This chapter's experiments are defined in sae_lib.tree_experiments, which the script
# that ran them at the papers' scale reads too. The full profile trains 15k steps of 200
# samples, as the paper does.
SCALE = tree_scale()  # steps and seeds of the active profile
STEPS, SEEDS = SCALE.ch4_steps, SCALE.ch4_seeds
TUNE_STEPS = SCALE.tune_steps  # each probe of the L1 bisection (ReLU only)
CORRELATION = CH4_CORRELATION  # cosine between sibling directions for the SAEs below
describe(
    steps=STEPS,
    tune_steps=TUNE_STEPS,
    batch=200,
    seeds=len(SEEDS),
    sibling_correlation=CORRELATION,
)

# %% [markdown]
# ## A tree of concepts
#
# The paper's tree has 20 concepts. Exactly one **top-level** concept is active in every sample: one of
# 3 **parents** (probability 0.2 each) or one of 8 childless **leaves** (0.05 each). An active parent
# then picks one of its 3 **children** (0.2 each) or none (0.4). Children of the same parent are
# mutually exclusive, and a child never appears without its parent. Each active concept gets a
# magnitude drawn from $\mathcal{N}(1.5, 0.25^2)$.
#
# `paper_tree()` builds this tree out of `Concept` nodes (each with a probability, children, and
# whether its children exclude each other), and numbers the concepts depth first: parent 0 with
# children 1-3, parent 4 with 5-7, parent 8 with 9-11, then the leaves 12-19, as in the paper. Its
# `labels` name them P1, P1.a, ..., L8.

# %%
tree = paper_tree()
names = tree.labels
print(
    pd.DataFrame(
        {
            "concept": names,
            "parent": [names[p] if p >= 0 else "—" for p in tree.parent],
            "depth": tree.depth,
        }
    ).T.to_string(header=False)
)
print(f"expected number of active concepts per sample (L0): {tree.expected_l0():.2f}")

# %% [markdown]
# Let us sample and look at which concepts fire together: entry $(i, j)$ of the heatmap is the
# probability that concept $j$ is active given that concept $i$ is.

# %%
active = tree.sample_active(200_000, torch.Generator().manual_seed(0))
counts = active.float().T @ active.float()
conditional = (counts / counts.diag().unsqueeze(1)).numpy()

fig, ax = plt.subplots(figsize=(6.4, 5.4))
im = ax.imshow(conditional, cmap="Blues", vmin=0, vmax=1)
ax.set_xticks(range(20), names, rotation=90, fontsize=8)
ax.set_yticks(range(20), names, fontsize=8)
ax.set_xlabel("concept j")
ax.set_ylabel("given concept i")
fig.colorbar(im, label="P(j active | i active)")
ax.set_title("Which concepts fire together")
plt.tight_layout()
plt.show()

# %% [markdown]
# Read a row: given a child (say P1.a), its parent P1 is active with probability 1 (the dark cell in
# column P1), its siblings never are. Given a parent, each child shows up 20% of the time. The
# top-level concepts exclude each other. These are the facts the tree promises; let us assert them.

# %%
top = [i for i, p in enumerate(tree.parent) if p < 0]
sample_l0 = active.sum(1).float().mean().item()
child_implies_parent = all(
    bool((active[:, tree.parent[c]] | ~active[:, c]).all()) for c in tree.child_indices
)
siblings_exclusive = all(
    bool((active[:, list(g)].sum(1) <= 1).all()) for g in tree.sibling_groups
)
report.check(
    "The paper's tree: exactly one top-level concept per sample, expected L0 = 1.36",
    paper="L0 = 1.36",
    ours=f"L0 = {tree.expected_l0():.2f} (sampled {sample_l0:.3f})",
    passed=bool((active[:, top].sum(1) == 1).all()) and abs(sample_l0 - 1.36) < 0.01,
    kind="mechanics",
)
report.check(
    "A child only fires with its parent; siblings never fire together",
    ours=(
        f"child ⇒ parent: {child_implies_parent}; siblings exclusive: "
        f"{siblings_exclusive}"
    ),
    passed=child_implies_parent and siblings_exclusive,
    kind="mechanics",
)

# %% [markdown]
# ## Conditional orthogonality
#
# Now the directions. Costa et al. let only **siblings** correlate, by a within-level cosine $\rho$, and make
# every concept orthogonal to every concept outside its sibling group: its parent, its children, and
# all other branches. Siblings never fire together, so nothing forces them apart, and similar concepts
# ("dog", "cat") plausibly share much of their representation; a parent and its child always fire
# together, and stay perfectly distinguishable.
#
# The construction: start from 20 orthonormal directions $q_1, \dots, q_{20}$ (the QR decomposition of a
# Gaussian matrix), then replace each sibling group's directions by mixtures *within that group only*,
#
# $$v_i = a\, q_i + b \sum_{j \in \text{group}} q_j, \qquad a = \sqrt{1-\rho},\quad
#   b = \frac{\sqrt{1 - \rho + m\rho} - \sqrt{1-\rho}}{m},$$
#
# where $m$ is the group's size. These $a, b$ make every $v_i$ unit length and every sibling pair's cosine
# exactly $\rho$ (they give the symmetric square root of the target Gram matrix
# $(1-\rho)I + \rho\,\mathbf{1}\mathbf{1}^\top$).
# Groups use disjoint sets of $q$'s, so a parent, which lives in the top-level group, stays exactly
# orthogonal to its children, which live in their own group. The paper mixes with a coefficient
# $\varepsilon$ instead; it is the same family of vectors, and its $\varepsilon = 0.0895$ for 3 siblings is
# our $\rho = 0.1$ (the library's tests check this). The 11 top-level concepts form one sibling group too, so parents
# and leaves correlate with each other.
#
# Here are the Gram matrices (all pairwise cosines) at the four correlations the paper studies.

# %%
true_dictionaries = {
    rho: conditionally_orthogonal_dictionary(tree, 20, rho, seed=0)
    for rho in [0.0, 0.3, 0.6, 0.9]
}
plot_cosine_panels(
    [(f"ρ = {rho}", d, d) for rho, d in true_dictionaries.items()],
    labels=names,
    title=(
        "True dictionaries: siblings correlate (red blocks), parent and child are "
        "orthogonal"
    ),
).show()

# %%
gram = cosine_matrix(true_dictionaries[CORRELATION], true_dictionaries[CORRELATION])
sibling_cos = torch.tensor(
    [gram[i, j] for g in tree.sibling_groups for i in g for j in g if i != j]
)
ancestor_cos = torch.tensor([gram[p, c] for p, c in tree.ancestor_pairs()])
report.check(
    f"Conditional orthogonality is exact: siblings at cos ρ = {CORRELATION}, parent ⟂ "
    f"child",
    ours=f"siblings {sibling_cos.min():.6f}..{sibling_cos.max():.6f}; "
    f"max |cos(parent, child)| {ancestor_cos.abs().max():.1e}",
    passed=bool(
        (sibling_cos - CORRELATION).abs().max() < 1e-5
        and ancestor_cos.abs().max() < 1e-5
    ),
    kind="mechanics",
)

# %% [markdown]
# ### What the geometry does to the data
#
# Take the samples where parent P1 fires with its child P1.a, so $x = s_{P1}\, v_{P1} + s_{P1.a}\, v_{P1.a}$. Read
# each concept off by projecting $x$ on its direction, the simplest encoder there is:
#
# * projecting on $v_{P1}$ returns exactly $s_{P1}$: the child adds nothing, because it is orthogonal;
# * projecting on the *sibling* $v_{P1.b}$, which is absent, returns $\rho\, s_{P1.a}$: a phantom.
#
# So the parent can be read cleanly even though it always comes with a child, while siblings, which never
# come together, blur into each other. An encoder that reads every concept at once from $x$ must fight
# the phantoms with thresholds; an encoder that first explains the strongest concept and then looks at
# what is left over does not see them (chapter 5).

# %%
data = hierarchical_data(20_000, tree=tree, correlation=CORRELATION, seed=0)
p1, p1a, p1b = 0, 1, 2
both = (data.codes[:, p1] > 0) & (data.codes[:, p1a] > 0)
readout = data.x[both] @ data.dictionary.T

fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
axes[0].scatter(data.codes[both, p1], readout[:, p1], s=4, alpha=0.4)
axes[0].set(
    xlabel="true magnitude of P1",
    ylabel="projection of x",
    title="read P1 from x = P1 + P1.a",
)
axes[1].scatter(data.codes[both, p1a], readout[:, p1b], s=4, alpha=0.4, color="tab:red")
axes[1].set(
    xlabel="true magnitude of P1.a",
    title="read the absent sibling P1.b from the same x",
)
for ax in axes:
    ax.plot([0.5, 2.5], [0.5, 2.5], "k--", lw=1, label="y = x")
axes[1].plot(
    [0.5, 2.5], [0.5 * CORRELATION, 2.5 * CORRELATION], "k:", lw=1, label="y = ρ x"
)
for ax in axes:
    ax.legend(loc="upper left")
plt.tight_layout()
plt.show()

parent_leak = (readout[:, p1] - data.codes[both, p1]).abs().max().item()
phantom_slope = (readout[:, p1b] / data.codes[both, p1a]).mean().item()
report.check(
    "The parent reads out exactly despite its child; an absent sibling reads out as ρ "
    "× the child",
    ours=(
        f"parent error ≤ {parent_leak:.1e}; phantom slope {phantom_slope:.3f} (ρ = "
        f"{CORRELATION})"
    ),
    passed=parent_leak < 1e-4 and abs(phantom_slope - CORRELATION) < 1e-4,
    kind="mechanics",
)

# %% [markdown]
# ## Why sparse SAEs absorb
#
# Suppose an SAE has one latent per concept. On a sample with parent and child, $x = a\,p + c\,u$ with
# $p \perp u$ (here $p$ and $u$ are the parent's and the child's directions). The faithful code uses two
# latents, with an L1 cost of $a + c$. But an SAE could instead give the child's latent the direction
# $(a\,p + c\,u)/\sqrt{a^2+c^2}$: then one latent of size $\sqrt{a^2+c^2}$ reconstructs the whole sample. With
# $a = c = 1.5$ that costs $2.12$ instead of $3$. The child latent has **absorbed** its parent: it now
# also means "parent", and the parent's own latent falls silent whenever a child is present. Nothing is
# lost for reconstruction as long as the child always comes with its parent, which is exactly what a
# hierarchy guarantees. Only the variation of the magnitudes around their mean costs a little error.
#
# We can price this exactly on our data: build the fully absorbed dictionary (each child direction
# replaced by the normalised sum of child and parent), find each sample's code in it (the dictionary is
# still a basis, so the code is unique), clip the rare negative entries that a ReLU could not produce,
# and compare L1 and reconstruction with the true dictionary's.

# %%
absorbed = data.dictionary.clone()
for child in tree.child_indices:
    absorbed[child] = F.normalize(
        data.dictionary[child] + data.dictionary[tree.parent[child]], dim=0
    )
absorbed_codes = (data.x @ torch.linalg.inv(absorbed)).clamp_min(0)
l1_true, l1_absorbed = (
    data.codes.abs().sum(1).mean().item(),
    absorbed_codes.sum(1).mean().item(),
)
absorbed_fvu = fvu(data.x, absorbed_codes @ absorbed)
print(
    f"mean L1 of the code: true dictionary {l1_true:.3f}, absorbed dictionary "
    f"{l1_absorbed:.3f} "
    f"({1 - l1_absorbed / l1_true:.0%} less), at a reconstruction FVU of "
    f"{absorbed_fvu:.4f}"
)
print(
    f"absorption score of the absorbed dictionary: "
    f"{absorption_score(absorbed, data.dictionary, tree.parent):.3f}"
)

# %%
report.check(
    "Absorbing every child into its parent lowers the code's L1 by > 10% for < 2% of "
    "the variance",
    ours=f"L1 −{1 - l1_absorbed / l1_true:.0%}, FVU {absorbed_fvu:.4f}",
    passed=l1_absorbed < 0.9 * l1_true and absorbed_fvu < 0.02,
)

# %% [markdown]
# An L1-penalised SAE is therefore *paid* to absorb. A TopK SAE pays no L1, but with $k = 1$ it has no
# choice (one latent per sample must cover parent and child). With $k = 2$, enough for every sample of
# this tree, its loss does prefer the faithful dictionary, but only by the small error just measured:
# a partly absorbed dictionary costs little more, so training can settle in one and has little reason
# to leave it.
#
# ### Measuring absorption
#
# The paper's **absorption score** of a learned dictionary is the mean, over the 9 children, of the
# cosine between the learned atom matched to the child (one-to-one matching, chapter 1) and the
# child's *true parent*. We average the cosine's absolute value instead:
#
# $$\text{absorption} = \frac{1}{|\text{children}|}\sum_{c}
#   \big|\cos\big(\hat d_{\,\mathrm{match}(c)},\, d_{\mathrm{parent}(c)}\big)\big|.$$
#
# With signed cosines, a child leaning towards its parent and a sibling leaning just as far away
# would average to a "perfect" 0. Where every child leans towards its parent, as absorption does,
# the two definitions agree. A faithful dictionary scores 0 (children are orthogonal to their
# parents); the fully absorbed one above scores $1/\sqrt 2 \approx 0.71$. Lower is better.
#
# Two more numbers summarise how a learned dictionary's Gram matrix $\hat G$ (atoms matched to the true
# concepts, in the true order) differs from the true one, $G$. The paper names a flat and a hierarchical
# error without printing formulas; these are ours, both mean absolute differences $|\hat G_{ij} - G_{ij}|$:
# * **flat error**: over pairs of siblings, i.e. *within* a level (does the SAE keep the correlation $\rho$?);
# * **hierarchical error**: over (ancestor, descendant) pairs, *across* levels (does it keep them orthogonal?).
#
# Absorption shows up in the hierarchical error; the flat error is blind to it.

# %% [markdown]
# ## Four SAE families on the tree
#
# We train with the paper's recipe (`train_on_tree`: Adam with learning rate $3\cdot10^{-2}$ and betas
# (0.5, 0.9375), batches of 200 fresh samples, warm-up, stable, then decay, gradient clipping at 1),
# 20 latents for 20 concepts, and sibling correlation $\rho = 0.3$. The MP-SAE paper's code compares
# four families; three of them are one-shot encoders and belong here (the fourth, matching pursuit, is
# chapter 5's):
# * **ReLU** with its L1 weight tuned so that its L0 lands on the tree's 1.36 (the paper's target);
# * **BatchTopK** {cite}`bussmann2024batchtopk` (introduced in chapter 3): an *average* of $k = 1.36$
#   active latents per sample, chosen over the whole batch (the $1.36 \cdot 200$ largest activations of a
#   batch of 200), and at inference chapter 3's JumpReLU with the threshold learned during training, so a
#   sample with one concept can use one latent and a sample with two can use two;
# * **Matryoshka** {cite}`bussmann2025matryoshka`: BatchTopK at the same $k$, plus a loss that asks the first
#   5 latents alone, and the first 10 alone, to reconstruct as well as they can (prefixes of 5, 10 and 20
#   latents, summed with equal weights: our choice, the library's default of $n/4$, $n/2$, $n$);
# * and, as a fifth row, the **per-sample TopK** of chapter 3 with $k = 2$, the most concepts any sample has.
#
# `train_on_tree` also fixes every SAE's pre-bias at zero (it zeroes and freezes `b_dec` before
# training): the tree's data has no offset, and a trainable pre-bias would soak up the direction that
# all top-level concepts share when they correlate (one of them is always on), changing the
# dictionary the SAE has to find. `run_on_tree(tree, ...)` draws every seed's data from the `tree`
# built above, so editing that tree changes what trains.
#
# First the L1 weight. L0 falls as the weight grows, so `tune_l1` bisects in log scale: each probe trains
# a ReLU SAE for a short run on seed 0's data, measures its L0 on held-out samples, and keeps the half of
# the interval that contains 1.36.

# %%
tuning = tune_l1(tree, tree.expected_l0(), steps=TUNE_STEPS, correlation=CORRELATION)
print(
    pd.DataFrame(tuning.probes, columns=["L1 weight", "L0 (held out)"])
    .round(4)
    .to_string(index=False)
)
print(f"chosen L1 weight: {tuning.l1_coeff:.2e}")

# %%
FAMILY_SETTINGS = with_l1(CH4_VARIANTS, tuning.l1_coeff)
print(FAMILY_SETTINGS)
runs = run_on_tree(
    tree, FAMILY_SETTINGS, steps=STEPS, seeds=SEEDS, correlation=CORRELATION
)
scores = runs_table(runs)  # one row per trained SAE: name, seed, data settings, scores
medians = (
    scores.groupby("SAE", sort=False).median().drop(columns=["seed", "correlation"])
)
medians.round(3)

# %% [markdown]
# The table gives medians over seeds: the matched cosines (mean and worst), absorption, the two Gram
# errors, and FVU, L0 and dead latents on held-out samples. Let us look inside one ReLU SAE: each row
# of the heatmap is a learned atom, matched to and ordered like the true concepts, and each column a
# true concept.

# %%
relu_run = next(r for r in runs if r.name == "relu")
relu_atoms = aligned_atoms(relu_run.sae.W_dec, relu_run.test.dictionary)
fig = plot_cosines(
    relu_atoms,
    relu_run.test.dictionary,
    title="ReLU SAE: learned atoms vs true concepts",
    a_label="learned atom (matched)",
    b_label="true concept",
)
fig.update_layout(
    xaxis=dict(tickmode="array", tickvals=list(range(20)), ticktext=names),
    yaxis=dict(tickmode="array", tickvals=list(range(20)), ticktext=names),
)
fig.show()

# %% [markdown]
# Parents and leaves are found almost exactly (the diagonal), but every child's atom also points a good
# way toward its parent: the column of the parent lights up in the child rows. That is absorption, and
# it is partial: the atoms sit between the child's direction and the fully absorbed one.
#
# The Gram matrices tell the same story. Left, the truth; middle and right, the learned atoms of one
# ReLU and one TopK ($k = 2$) SAE, matched to the true order.

# %%
topk_run = next(r for r in runs if r.name == "topk")
topk_atoms = aligned_atoms(topk_run.sae.W_dec, topk_run.test.dictionary)
plot_cosine_panels(
    [
        ("true dictionary", relu_run.test.dictionary, relu_run.test.dictionary),
        ("ReLU SAE", relu_atoms, relu_atoms),
        ("TopK SAE (k = 2)", topk_atoms, topk_atoms),
    ],
    labels=names,
    title="Gram matrices: parent–child cells should be white (orthogonal)",
).show()

# %% [markdown]
# Absorption changes what the latents *do*, too. Take the ReLU SAE's latent matched to each parent:
# when the parent is active alone, it fires at about the parent's magnitude; when a child is present,
# it fires far more weakly, because the child's latent already carries part of the parent.


# %%
def latent_of(run) -> dict[int, int]:
    """Which learned latent the one-to-one matching assigns to each true concept."""
    match = match_atoms(run.sae.W_dec, run.test.dictionary)
    return dict(zip(match.true_index.tolist(), match.learned_index.tolist()))


test = relu_run.test
codes = relu_run.sae.encode(test.x).detach()
rows = []
for parent in (0, 4, 8):
    kids = list(tree.children[parent])
    alone = (test.codes[:, parent] > 0) & ~(test.codes[:, kids] > 0).any(1)
    with_child = (test.codes[:, parent] > 0) & (test.codes[:, kids] > 0).any(1)
    latent = codes[:, latent_of(relu_run)[parent]]
    rows.append(
        {
            "parent": names[parent],
            "true magnitude": test.codes[with_child, parent].mean().item(),
            "latent, parent alone": latent[alone].mean().item(),
            "latent, parent + child": latent[with_child].mean().item(),
        }
    )
behaviour = pd.DataFrame(rows).set_index("parent")
behaviour.round(2)

# %%
silenced = (
    behaviour["latent, parent + child"] / behaviour["latent, parent alone"]
).max()
report.check(
    "ReLU SAE: a parent's latent fires at under half its strength when a child is "
    "present",
    ours=f"largest ratio {silenced:.2f}",
    passed=bool(silenced < 0.5),
)

# %% [markdown]
# Now the chapter's claims about the four families. We write them once, as a function of a table of
# runs, because we check them twice: here on this run, and below on the full-profile run at the
# papers' scale.


# %%
def absorption_by_family(scores: pd.DataFrame) -> dict[str, pd.Series]:
    """The absorption score of every run, family by family."""
    return {n: scores.loc[scores.SAE == n, "absorption"] for n in FAMILY_SETTINGS}


def check_families(scores: pd.DataFrame, scale: str) -> None:
    """Assert the chapter's claims on ``scores`` (one row per trained SAE)."""
    medians = scores.groupby("SAE", sort=False).median(numeric_only=True)
    absorption = absorption_by_family(scores)
    seeds = f"{scores.seed.nunique()} seeds, {scale}"
    report.check(
        f"The bisected L1 weight puts the ReLU SAE's L0 near the tree's 1.36 ({seeds})",
        paper="L1 tuned to L0 = 1.36",
        kind="replication" if scale == "this run" else "replication (shipped run)",
        ours=f"L0 {median_and_range(scores[scores.SAE == 'relu'].l0)}",
        passed=abs(medians.loc["relu", "l0"] - 1.36) < 0.25,
    )
    report.check(
        "ReLU SAEs absorb children into parents (absorption score in the paper's "
        f"range; {seeds})",
        paper="0.45 – 0.70 (vanilla ReLU)",
        kind="replication" if scale == "this run" else "replication (shipped run)",
        ours=f"{median_and_range(absorption['relu'])} (median [range])",
        passed=0.45 <= absorption["relu"].median() <= 0.70,
    )
    report.check(
        f"Absorption breaks the across-level geometry, not the within-level one "
        f"(ReLU; {seeds})",
        ours=f"hierarchical error {medians.loc['relu', 'hierarchical']:.2f} "
        f"vs flat {medians.loc['relu', 'flat']:.2f}",
        passed=bool(
            medians.loc["relu", "hierarchical"] > 5 * medians.loc["relu", "flat"]
        ),
    )
    report.check(
        "BatchTopK and per-sample TopK SAEs absorb too (median absorption > 0.15; "
        f"{seeds})",
        paper="BatchTopK absorbs (our bar 0.15 is not the paper's range; "
        "0.42 – 0.54 is compared in a record below)",
        kind="replication" if scale == "this run" else "replication (shipped run)",
        ours=(
            f"BatchTopK {median_and_range(absorption['batchtopk'])}; TopK "
            f"{median_and_range(absorption['topk'])}"
        ),
        passed=absorption["batchtopk"].median() > 0.15
        and absorption["topk"].median() > 0.15,
    )
    report.check(
        f"Matryoshka absorbs less than ReLU (median over seeds; {seeds})",
        paper="Matryoshka reduces absorption (Bussmann et al. 2025)",
        kind="replication" if scale == "this run" else "replication (shipped run)",
        ours=(
            f"Matryoshka {median_and_range(absorption['matryoshka'])} vs ReLU "
            f"{absorption['relu'].median():.2f}"
        ),
        passed=absorption["matryoshka"].median() < absorption["relu"].median(),
    )


check_families(scores, "this run")
abs_of = absorption_by_family(scores)

# %% [markdown]
# ### Beside the paper
#
# The paper's Table 1 gives absorption ranges for three of these families, taken over a grid of child
# magnitudes (chapter 5 runs a grid in the same shape, but with cell values of its own: the paper's are
# not in our sources); here we have one cell (children as strong as their parent, $\rho = 0.3$), so
# each of our rows gives the median and the range over seeds of the same score, not over cells:

# %%
PAPER_RANGES = {
    "relu": "0.45 – 0.70",
    "batchtopk": "0.42 – 0.54",
    "matryoshka": "not in our sources",
    "topk": "not in the paper (per-sample TopK)",
}
beside = pd.DataFrame(
    {
        "paper (range over its grid)": PAPER_RANGES,
        f"ours: median [min – max] over {len(SEEDS)} seeds": {
            name: median_and_range(abs_of[name]) for name in FAMILY_SETTINGS
        },
        "dead latents (median)": medians["dead"].to_dict(),
        "L0 (median)": medians["l0"].round(2).to_dict(),
    }
).rename_axis("SAE")
beside

# %% [markdown]
# Our ReLU SAEs land inside the paper's range for vanilla SAEs. BatchTopK and TopK absorb as well; in
# the short `ci` run they score below the paper's BatchTopK (the full-profile run at the end of this
# section lands inside its range). The table shows why the number needs care: several of their
# latents are dead. A child whose matched latent never fires contributes whatever cosine that
# untrained atom happens to have with the parent, near zero, which pulls the average down although
# nothing was recovered. Splitting the children of every BatchTopK and TopK run by whether their matched
# latent is alive makes this visible. Each entry is the absorption score's own term, the |cosine|
# between the child's matched atom and its true parent, averaged over the children in that group:

# %%
rows = []
for run in (r for r in runs if r.name in ("batchtopk", "topk")):
    fired = (run.sae.encode(run.test.x) > 0).any(0)
    atoms = F.normalize(run.sae.W_dec.detach(), dim=1)
    for child in tree.child_indices:
        latent = latent_of(run)[child]
        rows.append(
            {
                "SAE": run.name,
                "matched latent": "alive" if fired[latent] else "dead",
                "|cos(atom, true parent)|": (
                    atoms[latent] @ run.test.dictionary[tree.parent[child]]
                )
                .abs()
                .item(),
            }
        )
split = (
    pd.DataFrame(rows)
    .groupby(["SAE", "matched latent"])["|cos(atom, true parent)|"]
    .agg(["mean", "count"])
)
split.round(2)

# %% [markdown]
# Where a latent did learn a child, its atom leans clearly toward the parent; where the latent died,
# there is no child atom at all, a different failure that the absorption score averages in. The
# live-only means are our own diagnostic, not the paper's score (which averages over every child), so
# we do not set them against the paper's range; the check below asks only that they clear a bar of
# our choosing, 0.3. Our BatchTopK also carries AuxK (chapter 3), which the paper's does not have, and
# which here does not save all latents; and our `ci` runs are shorter than the paper's 15k steps.
# Matryoshka's prefix losses do what they are for: its child atoms lean toward their parent less than
# ReLU's (checked above).

# %%
alive_absorption = split.xs("alive", level="matched latent")["mean"].min()
report.check(
    "BatchTopK and TopK children learned by a live latent lean toward their parent "
    "(mean |cos| > 0.3, our diagnostic)",
    paper="none: live latents only, not the paper's score",
    ours=f"lowest mean of the two: {alive_absorption:.2f}",
    passed=bool(alive_absorption > 0.3),
    kind="finding",
)
for name in ("batchtopk", "topk"):
    median = abs_of[name].median()
    report.record(
        f"Absorption score of {name} vs the paper's BatchTopK range",
        paper="0.42 – 0.54",
        ours=(
            f"{median_and_range(abs_of[name])}, with {medians.loc[name, 'dead']:.0f} "
            f"dead latents "
            "(median); ours is one cell at ρ = 0.3, the paper's a range over cells"
        ),
        status="matches" if 0.42 <= median <= 0.54 else "differs",
    )

# %% [markdown]
# ### At the papers' scale
#
# Everything above ran at the `ci` profile's scale, so that the page builds in seconds. The `full`
# profile trains as the paper does (15k steps of 200 samples) on 10 seeds, which takes hours on a
# laptop CPU. We ran it once with `python scripts/full_profile_ch45.py` (resumable: it trains one SAE
# at a time and keeps what is done) and ship its results with the library; `load_full_profile` reads
# them. Here are both scales side by side, and the chapter's claims checked again on the full run.

# %%
full = load_full_profile("ch4/")
print(
    f"full profile: {full.seed.nunique()} seeds × {full.steps.iloc[0]:,} steps of 200 "
    f"samples, ReLU L1 weight {full_profile_setting('ch4/tune_l1')['l1_coeff']:.2e} "
    f"(this run: {tuning.l1_coeff:.2e}); "
    f"{full.seconds.sum() / 60:.0f} min of training, "
    "one thread per SAE on a 2-core CPU"
)
full_abs = absorption_by_family(full)
scales = pd.DataFrame(
    {
        "paper (range over its grid)": PAPER_RANGES,
        f"this run ({len(SEEDS)} seeds, {STEPS:,} steps)": {
            name: median_and_range(abs_of[name]) for name in FAMILY_SETTINGS
        },
        "full profile (10 seeds, 15,000 steps)": {
            name: median_and_range(full_abs[name]) for name in FAMILY_SETTINGS
        },
        "full: dead latents (median)": full.groupby("SAE")["dead"].median(),
    }
).reindex(list(FAMILY_SETTINGS))
scales.rename_axis("SAE: absorption, median [min – max]")

# %% [markdown]
# Ten times the training changes one thing that matters for the comparison with the paper: the
# one-shot sparse families absorb *more* once trained longer, and BatchTopK's median moves into the
# paper's BatchTopK range. The short `ci` runs had not yet finished merging children into parents;
# absorption is where training goes, not a transient. ReLU barely moves; Matryoshka rises too, but
# stays well below ReLU (checked).

# %%
check_families(full, "full profile")
full_batchtopk = full_abs["batchtopk"].median()
report.check(
    "At the papers' scale (15k steps), BatchTopK absorbs more than in the short run, "
    "inside the paper's range",
    paper="0.42 – 0.54 (BatchTopK)",
    kind="replication (shipped run)",
    ours=f"full profile {full_batchtopk:.2f} vs this run "
    f"{abs_of['batchtopk'].median():.2f}",
    passed=0.42 <= full_batchtopk <= 0.54
    # (run at the full profile, "this run" is the same run)
    and (STEPS >= 15_000 or full_batchtopk > abs_of["batchtopk"].median()),
)

# %% [markdown]
# ## Exercises
#
# Two exercises on this chapter's scores. Each has a stub to fill in, a cell that checks your
# function against `sae_lib.metrics` on dictionaries built on the paper's tree, and a solution
# behind a toggle ({ref}`how to work the exercises <working-the-exercises>`). For the matching,
# use the library's `aligned_atoms(learned, true)`: row $i$ is the learned atom matched to true
# feature $i$, unit length.

# %%
import torch.nn.functional as F

from sae_lib import (
    aligned_atoms,
    conditionally_orthogonal_dictionary,
    exercises,
    paper_tree,
)

# %% [markdown]
# :::{exercise} The absorption score
# :label: ex-4-absorption
#
# Write `absorption(learned, true, parent)`, the absorption score defined above: `parent[i]` is
# feature $i$'s parent, or $-1$ for a top-level feature. Match the learned atoms to the true
# features, then average, over the children, the absolute cosine between each child's matched
# atom and its parent's true direction. Return a number.
# :::


# %%
def absorption(learned, true, parent):
    """Mean over children of |cos| between the child's matched atom and its parent."""
    raise NotImplementedError("your turn")


# %%
absorption_passed = exercises.check_absorption(absorption)

# %% [markdown]
# ::::{solution-start} ex-4-absorption
# :class: dropdown
# ::::


# %%
def absorption_solution(learned, true, parent):
    matched = aligned_atoms(learned, true)  # row c: the learned atom for feature c
    true = F.normalize(true, dim=1)
    children = [(c, p) for c, p in enumerate(parent) if p >= 0]
    cosines = torch.stack([matched[c] @ true[p] for c, p in children])
    return cosines.abs().mean().item()  # leaning away from the parent counts too


exercises.check_absorption(absorption_solution, solution=True)

# %% [markdown]
# ::::{solution-end}
# ::::
#
# **Predict, then run.** Three dictionaries for the same tree: the true one; the fully absorbed
# one (each child atom turned towards its parent, $(u + p)/\sqrt 2$); and one whose child atoms
# are turned *away* from their parent, $(u - p)/\sqrt 2$, just as far from the true child. Guess
# the three scores before you run the cell. What would the signed cosine (the paper's average)
# say about the last one?

# %%
use_absorption = exercises.prefer(absorption, absorption_solution, absorption_passed)
paper = paper_tree()
truth = conditionally_orthogonal_dictionary(paper, 20, 0.3, seed=0)
turned = {
    name: truth.clone()
    for name in ["true", "towards the parent", "away from the parent"]
}
for child in paper.child_indices:
    u, p = truth[child], truth[paper.parent[child]]
    turned["towards the parent"][child] = F.normalize(u + p, dim=0)
    turned["away from the parent"][child] = F.normalize(u - p, dim=0)
children = [(c, p) for c, p in enumerate(paper.parent) if p >= 0]
scores, signed = {}, {}
for name, dictionary in turned.items():
    matched = aligned_atoms(dictionary, truth)
    scores[name] = use_absorption(dictionary, truth, paper.parent)
    cosines = torch.stack([matched[c] @ truth[p] for c, p in children])
    signed[name] = cosines.mean().item()
    print(
        f"child atoms {name:>20}: absorption {scores[name]:.3f}, "
        f"signed average {signed[name]:+.3f}"
    )

# %%
away, towards = scores["away from the parent"], scores["towards the parent"]
report.check(
    "Absorption scores a child turned away from its parent as one turned to it",
    ours=f"{away:.3f} vs {towards:.3f}; "
    f"signed average {signed['away from the parent']:+.3f}",
    passed=abs(away - towards) < 1e-4
    and signed["away from the parent"] < signed["true"] - 0.5,
    kind="mechanics",
)

# %% [markdown]
# Turning away from the parent is as far from the true child as turning towards it, and the score
# says so. The signed average would rank that dictionary *better* than the true one.

# %% [markdown]
# :::{exercise} Flat and hierarchical errors
# :label: ex-4-gram
#
# Write `hierarchy_errors(learned, true, sibling_groups, ancestor_pairs)`: with $G$ the cosines
# between the true atoms and $\hat G$ those between the matched learned atoms, return
# `{"flat": ..., "hierarchical": ...}`, the mean of $|\hat G_{ij} - G_{ij}|$ over pairs of
# siblings (each unordered pair once) and over the (ancestor, descendant) pairs: a tree gives
# them as `tree.sibling_groups` and `tree.ancestor_pairs()`.
# :::


# %%
def hierarchy_errors(learned, true, sibling_groups, ancestor_pairs):
    """{"flat": mean |Ĝ - G| over sibling pairs,
    "hierarchical": the same over (ancestor, descendant) pairs}."""
    raise NotImplementedError("your turn")


# %%
errors_passed = exercises.check_gram_errors(hierarchy_errors)

# %% [markdown]
# ::::{solution-start} ex-4-gram
# :class: dropdown
# ::::


# %%
def hierarchy_errors_solution(learned, true, sibling_groups, ancestor_pairs):
    matched, true = aligned_atoms(learned, true), F.normalize(true, dim=1)
    gap = (matched @ matched.T - true @ true.T).abs()
    siblings = [
        (i, j)
        for group in sibling_groups
        for a, i in enumerate(group)
        for j in group[a + 1 :]
    ]

    def mean_gap(pairs):
        return torch.stack([gap[i, j] for i, j in pairs]).mean().item()

    return {"flat": mean_gap(siblings), "hierarchical": mean_gap(ancestor_pairs)}


exercises.check_gram_errors(hierarchy_errors_solution, solution=True)

# %% [markdown]
# ::::{solution-end}
# ::::

# %% [markdown]
# ## Replication check
#
# Every claim above was computed and asserted where it was made; this table gathers them.

# %%
report.save()
report.show()

# %% [markdown]
# **Next:** chapter 5 replaces the one-shot encoder by matching pursuit, which reads concepts one at a
# time from what is left unexplained, and tests whether that recovers the tree.

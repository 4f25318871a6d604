# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 2. The standard SAE
#
# Chapter 1 built a toy world, 64 features packed into 32 dimensions, and showed that PCA cannot pull
# the features back out. This chapter builds the tool that can: the **standard sparse autoencoder**,
# a one-layer encoder with a ReLU, a linear decoder whose rows are the learned feature directions, and
# an L1 penalty that makes the codes sparse. It is the SAE of the first wave of dictionary-learning work
# on language models {cite}`bricken2023monosemanticity,cunningham2024sparse`, and every later family in
# this book is a reaction to one of its weaknesses.
#
# You will:
# * write the SAE and its training loop from scratch, in about thirty lines;
# * check that it recovers the true features, then switch to the library class and see both agree;
# * sweep the L1 coefficient and see sparsity traded against reconstruction;
# * measure **shrinkage**, the systematic underestimate the L1 penalty causes;
# * meet **dead latents**, and see what makes them.

# %% tags=["remove-cell"]
# Colab only (does nothing elsewhere): install the book's library at the version this
# notebook was written for. Stamped by scripts/stamp_colab.py: edit it there.
import subprocess, sys  # noqa: E401

if "google.colab" in sys.modules:
    REPO, TAG = "https://github.com/sae-book/sae-book", "v0.1.0"
    pip = [sys.executable, "-m", "pip", "install", "-q"]
    subprocess.run([*pip, f"sae-lib @ git+{REPO}@{TAG}"], check=True)

# %%
import pandas as pd
import plotly.graph_objects as go
import torch
import torch.nn.functional as F
from IPython.display import display
from torch import nn

from sae_lib import (
    ReLUSAE,
    by_profile,
    describe,
    evaluate,
    feature_response,
    held_out_seed,
    match_atoms,
    superposition_data,
    train_sae,
)
from sae_lib.plots import plot_frontier, plot_histories
from sae_lib.report import ReplicationReport

report = ReplicationReport("02_standard_sae")
N_FEATURES, D_MODEL, N_LATENTS = 64, 32, 128
N_SAMPLES = by_profile(ci=20_000, full=200_000)
STEPS = by_profile(ci=1_500, full=10_000)
BATCH, LR = 512, 3e-3
describe(
    features=N_FEATURES,
    d_model=D_MODEL,
    latents=N_LATENTS,
    samples=N_SAMPLES,
    steps=STEPS,
    batch=BATCH,
)

# %% [markdown]
# The same toy data as chapter 1: each of 64 unit-norm features is on with probability 0.05, with a
# magnitude near 1. We also draw a held-out set from the *same* dictionary, and report every
# evaluation on it.

# %%
train = superposition_data(
    N_SAMPLES, n_features=N_FEATURES, d=D_MODEL, p_active=0.05, seed=0
)
test = superposition_data(
    5_000,
    n_features=N_FEATURES,
    d=D_MODEL,
    p_active=0.05,
    seed=held_out_seed(0),  # the held-out samples of training seed 0 (1_000_000)
    dictionary=train.dictionary,
)
true_l0 = (test.codes > 0).sum(1).float().mean().item()
print(
    f"train {tuple(train.x.shape)}, test {tuple(test.x.shape)}; true features on per "
    f"input: {true_l0:.2f}"
)

# %% [markdown]
# ## The model
#
# An SAE with $n$ latents reads an activation $x \in \mathbb{R}^d$ and writes a code $z \in \mathbb{R}^n$:
#
# $$z = \mathrm{ReLU}\big(W_{\text{enc}}(x - b_{\text{dec}}) + b_{\text{enc}}\big), \qquad
#   \hat x = z\,D + b_{\text{dec}}, \qquad \|D_i\| = 1 .$$
#
# The rows $D_i$ of the decoder are the dictionary: if all goes well, each one is a true feature
# direction and $z_i$ says how much of it is present. Training minimises
#
# $$\mathcal{L} = \frac{1}{d}\,\|x - \hat x\|^2 + \lambda \sum_i z_i ,$$
#
# reconstruction error plus an L1 penalty on the (non-negative) codes. Three details matter:
#
# * **Unit-norm atoms.** Without them the penalty could be dodged: halve every $z_i$, double every
#   $D_i$, same reconstruction, half the penalty. We normalise the rows of $D$ in the forward pass,
#   so $z_i$ is exactly the size of latent $i$'s contribution.
# * **The pre-bias** $b_{\text{dec}}$ is subtracted before encoding and added back after decoding, so
#   the codes only need to explain how $x$ differs from a typical activation.
# * **The encoder bias** $b_{\text{enc}}$ can go negative and act as a threshold: a latent fires only
#   when its feature is present strongly enough to beat the interference from the others.
#
# Here it is, from scratch:


# %%
class ScratchSAE(nn.Module):
    def __init__(self, d: int, n: int, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.W_dec = nn.Parameter(F.normalize(torch.randn(n, d, generator=g), dim=1))
        self.W_enc = nn.Parameter(
            self.W_dec.detach().T.clone()
        )  # each latent starts out listening to its own atom
        self.b_enc = nn.Parameter(torch.zeros(n))
        self.b_dec = nn.Parameter(torch.zeros(d))

    def forward(self, x):
        z = F.relu((x - self.b_dec) @ self.W_enc + self.b_enc)
        x_hat = z @ F.normalize(self.W_dec, dim=1) + self.b_dec
        return x_hat, z


# %% [markdown]
# And the training loop: Adam on random batches, and after every step the decoder rows are put back on
# the unit sphere (the forward pass normalises them anyway; this keeps the stored weights tidy).


# %%
def train_scratch(sae, x, l1_coeff, steps, batch=BATCH, lr=LR, seed=0):
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(sae.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        xb = x[torch.randint(len(x), (batch,), generator=g)]
        x_hat, z = sae(xb)
        loss = (x_hat - xb).pow(2).mean() + l1_coeff * z.sum(-1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():
            sae.W_dec.copy_(F.normalize(sae.W_dec, dim=1))
        losses.append(loss.item())
    return losses


L1 = 0.02
scratch = ScratchSAE(D_MODEL, N_LATENTS)
scratch_losses = train_scratch(scratch, train.x, L1, STEPS)
print(
    f"loss: first step {scratch_losses[0]:.4f}, last 50 steps "
    f"{sum(scratch_losses[-50:]) / 50:.4f}"
)

# %% [markdown]
# ## Did it find the features?
#
# The SAE never saw the true dictionary. We match its 128 atoms one-to-one to the 64 true features
# (chapter 1's Hungarian matching) and look at the cosine of each matched pair.

# %%
scratch_match = match_atoms(scratch.W_dec, train.dictionary)
fig = go.Figure(
    go.Bar(y=scratch_match.cosine.sort().values.numpy(), marker_color="#1f77b4")
)
fig.update_layout(
    title="Scratch SAE: cosine of each true feature with its matched atom (sorted)",
    xaxis_title="true feature (sorted)",
    yaxis_title="cosine",
    yaxis_range=[0, 1.02],
    height=340,
)
fig.show()
print(
    f"matched mean cosine {scratch_match.mean:.3f}; recovered at cos ≥ 0.9: "
    f"{scratch_match.fraction_above(0.9):.0%}"
)

# %%
report.check(
    "A ReLU SAE written from scratch recovers the features (≥ 95% matched at cos ≥ "
    "0.9)",
    ours=f"{scratch_match.fraction_above(0.9):.0%}",
    passed=scratch_match.fraction_above(0.9) >= 0.95,
)

# %% [markdown]
# ## The library version
#
# `sae_lib.ReLUSAE` is the same model. To see that, copy the scratch SAE's weights into one and compare
# what both compute:

# %%
lib = ReLUSAE(D_MODEL, N_LATENTS, l1_coeff=L1)
lib.load_state_dict(scratch.state_dict())
with torch.no_grad():
    gap = max((a - b).abs().max().item() for a, b in zip(scratch(test.x), lib(test.x)))
print(f"largest difference between scratch and library outputs: {gap:.2e}")
report.check(
    "The library ReLUSAE computes exactly what the scratch SAE computes",
    ours=f"max |Δ| = {gap:.1e}",
    passed=gap < 1e-5,
    kind="mechanics",
)

# %% [markdown]
# From here on we train with `sae_lib.train_sae`, the one loop every chapter uses. Beyond the scratch
# loop it starts the pre-bias at the data mean, follows a warm-up, stable, decay learning-rate schedule,
# clips gradients, tracks which latents are dead, shows a progress bar, and returns a history of every
# loss term. Same data, same L1 coefficient:

# %%
sae = ReLUSAE(D_MODEL, N_LATENTS, l1_coeff=L1, seed=0)
history = train_sae(sae, train.x, steps=STEPS, batch_size=BATCH, lr=LR, seed=0)
lib_match = match_atoms(sae.W_dec, train.dictionary)
print(
    f"library SAE: matched mean cosine {lib_match.mean:.3f}, recovered "
    f"{lib_match.fraction_above(0.9):.0%}"
)
plot_histories(
    {"train_sae (MSE term)": history},
    key="mse",
    title="Reconstruction term during training",
).show()

# %%
report.check(
    "train_sae's ReLU SAE recovers the features (≥ 90% matched at cos ≥ 0.9)",
    ours=f"{lib_match.fraction_above(0.9):.0%}",
    passed=lib_match.fraction_above(0.9) >= 0.9,
)

# %% [markdown]
# ## The L1 trade-off
#
# The coefficient $\lambda$ sets the exchange rate between sparsity and reconstruction. Let us train one
# SAE per value and measure, on held-out data, the **L0** (how many latents fire per input) and the
# **FVU** (fraction of variance unexplained: 0 is perfect, 1 is no better than predicting the mean).

# %%
L1_SWEEP = [0.005, 0.01, 0.02, 0.03, 0.05]
sweep, saes = [], {}
for l1_coeff in L1_SWEEP:
    model = ReLUSAE(D_MODEL, N_LATENTS, l1_coeff=l1_coeff, seed=0)
    train_sae(
        model,
        train.x,
        steps=STEPS,
        batch_size=BATCH,
        lr=LR,
        seed=0,
        desc=f"λ = {l1_coeff}",
    )
    match = match_atoms(model.W_dec, train.dictionary)
    sweep.append(
        {
            "family": "relu",
            "λ": l1_coeff,
            **evaluate(model, test.x),
            "recovered": match.fraction_above(0.9),
        }
    )
    saes[l1_coeff] = model
sweep_table = pd.DataFrame(sweep).set_index("λ")[["l0", "fvu", "recovered", "dead"]]
sweep_table.round(3)

# %%
plot_frontier(
    sweep,
    x="l0",
    y="fvu",
    label="λ",
    title="ReLU SAE: each point is one L1 coefficient",
).show()

# %% [markdown]
# Reading the table from top to bottom (each regime is checked below):
#
# * With a **small λ** the codes are dense: far more latents fire per input than the ~3.2 features
#   that are really on. Reconstruction is good, but each feature is smeared over several latents, so
#   fewer features are recovered cleanly.
# * In the **middle** the SAE recovers essentially every feature, but its FVU is far from zero, even
#   though the data is noise-free and a perfect dictionary and code exist.
# * With a **large λ** the penalty wins: latents stay silent even when their feature is on, and both
#   reconstruction and recovery collapse.

# %%
l0s = sweep_table["l0"].tolist()
report.check(
    "Raising the L1 coefficient lowers L0 monotonically",
    ours=" > ".join(f"{v:.1f}" for v in l0s),
    passed=all(a > b for a, b in zip(l0s, l0s[1:])),
)
fvus = sweep_table["fvu"].tolist()
report.check(
    "…and raises the reconstruction error monotonically",
    ours=" < ".join(f"{v:.2f}" for v in fvus),
    passed=all(a < b for a, b in zip(fvus, fvus[1:])),
)
small, middle, large = L1_SWEEP[0], [0.02, 0.03], L1_SWEEP[-1]
row = sweep_table.loc
report.check(
    f"Small λ ({small}): codes far denser than the data (L0 > 3× the true "
    f"{true_l0:.1f}), and fewer features recovered than in the middle",
    ours=f"L0 {row[small, 'l0']:.1f}, recovered {row[small, 'recovered']:.0%} vs "
    f"{min(row[m, 'recovered'] for m in middle):.0%}",
    passed=row[small, "l0"] > 3 * true_l0
    and row[small, "recovered"] < min(row[m, "recovered"] for m in middle),
)
report.check(
    f"Middle λ ({', '.join(map(str, middle))}): ≥ 95% of features recovered, yet FVU "
    "far from zero (> 0.1)",
    ours=", ".join(
        f"λ = {m}: {row[m, 'recovered']:.0%}, FVU {row[m, 'fvu']:.2f}" for m in middle
    ),
    passed=all(row[m, "recovered"] >= 0.95 and row[m, "fvu"] > 0.1 for m in middle),
)
report.check(
    f"Large λ ({large}): recovery and reconstruction collapse (recovered < 60%, FVU "
    "over twice the middle's)",
    ours=f"recovered {row[large, 'recovered']:.0%}, FVU {row[large, 'fvu']:.2f}",
    passed=row[large, "recovered"] < 0.6
    and row[large, "fvu"] > 2 * max(row[m, "fvu"] for m in middle),
)

# %% [markdown]
# ## Shrinkage
#
# Why is the reconstruction error of the middle rows so large? Probe the SAE with the simplest possible
# inputs: one feature alone, $x = s\,d_i$, at magnitude $s$. A faithful SAE gives it back, so the
# reconstruction's component along the feature, $\langle \hat x, d_i\rangle / s$, is 1.
# `sae_lib.feature_response` computes this for every feature at once; here is its median over the 64
# features as the magnitude grows, for each $\lambda$.

# %%
magnitudes = torch.linspace(0.1, 2.0, 20)
fig = go.Figure()
for l1_coeff, model in saes.items():
    given_back = [
        feature_response(model, train.dictionary, s.item()).median().item() * s.item()
        for s in magnitudes
    ]
    fig.add_trace(
        go.Scatter(
            x=magnitudes.numpy(),
            y=given_back,
            mode="lines+markers",
            name=f"λ = {l1_coeff}",
        )
    )
fig.add_trace(
    go.Scatter(
        x=[0, 2],
        y=[0, 2],
        mode="lines",
        line=dict(dash="dash", color="black"),
        name="faithful",
    )
)
fig.update_layout(
    title="A lone feature in, how much of it comes back (median over features)",
    xaxis_title="magnitude s of the lone feature",
    yaxis_title="⟨x̂, dᵢ⟩",
    height=420,
)
fig.show()

# %% [markdown]
# Every curve has the same shape: a **dead zone** where small inputs give nothing back, then a line
# parallel to the diagonal but below it. That is *soft thresholding*. For an orthonormal dictionary the
# best code under an L1 penalty is known in closed form, the true magnitude minus a constant, clipped
# at zero, as in the lasso {cite}`tibshirani1996lasso`. Each unit of code costs $\lambda$, so the SAE
# pays for less than the full magnitude, and its encoder bias becomes a threshold that also has to
# keep the other features' interference out. Wright and Sharkey call the result **feature
# suppression** {cite}`wright2024addressing`. At the typical magnitude $s = 1$:

# %%
response_at_1 = {
    lam: feature_response(m, train.dictionary, 1.0).median().item()
    for lam, m in saes.items()
}
print(
    "fraction of a lone unit feature given back, by λ:",
    ", ".join(f"{lam}: {r:.2f}" for lam, r in response_at_1.items()),
)
values = list(response_at_1.values())
report.check(
    "L1 shrinks: a lone feature of magnitude 1 comes back at < 90% for every λ",
    ours=f"max {max(values):.2f}",
    paper="qualitative (Wright & Sharkey 2024)",
    kind="finding",
    passed=max(values) < 0.9,
)
report.check(
    "Shrinkage grows with λ (the response falls monotonically)",
    ours=" > ".join(f"{v:.2f}" for v in values),
    passed=all(a > b for a, b in zip(values, values[1:])),
)

# %% [markdown]
# ### The threshold in closed form
#
# How wide should the dead zone be? Take orthonormal atoms and a lone feature $x = s\,d_i$, and let
# one latent code it with $z \ge 0$. This chapter's loss is then $(s - z)^2/d + \lambda z$: the
# reconstruction term is a mean over the $d$ coordinates, the penalty is not. Its slope in $z$ is
# $-2(s - z)/d + \lambda$, zero at
#
# $$z^\star = \max\big(s - \tfrac{\lambda d}{2},\ 0\big),$$
#
# so the lasso's threshold for this loss is $\lambda d/2$: $0.32$ at $\lambda = 0.02$ and
# $d = 32$. Our atoms are not orthonormal (64 features in 32 dimensions), so this is a reference
# point, not an exact prediction. Two details matter when comparing it with the SAE:
#
# * $\hat x = z\,D + b_{\text{dec}}$ includes the pre-bias, which `train_sae` starts at the data's
#   mean. Inside the dead zone every code is 0 and the response is $\langle b_{\text{dec}},
#   d_i\rangle$, not 0: the curves above start a little off zero, by a different amount for each
#   feature.
# * So we measure the dead zone on the codes' part alone, $\langle z\,D, d_i\rangle$: it ends at the
#   smallest magnitude $s$ where that part exceeds 0.01. Per feature, on a grid of step 0.01, median
#   over features:

# %%
grid = torch.arange(0, 301) / 100  # s = 0, 0.01, ..., 3
dead_zone, bias_part, at_two = {}, {}, {}
atoms = train.dictionary
with torch.no_grad():
    for lam, m in saes.items():
        at_zero = (m.b_dec * atoms).sum(-1)  # <b_dec, d_i>: x_hat's part with no codes
        response = torch.stack([(m(s * atoms)[0] * atoms).sum(-1) for s in grid])
        along = response - at_zero  # the codes' part, <z D, d_i>, on the grid
        fires = along > 0.01
        onset = torch.where(fires.any(0), grid[fires.int().argmax(0)], float("inf"))
        dead_zone[lam] = onset.median().item()
        bias_part[lam] = (at_zero, response[0])  # <b_dec, d_i>, the response at s = 0
        at_two[lam] = along[grid == 2].median().item()  # codes' part at s = 2
thresholds = pd.DataFrame(
    {
        "λd/2 (closed form)": {lam: lam * D_MODEL / 2 for lam in saes},
        "measured dead zone (median s)": dead_zone,
        "codes' part at s = 2 (median)": at_two,
        "closed form at s = 2": {lam: max(2 - lam * D_MODEL / 2, 0) for lam in saes},
        "max |⟨b_dec, dᵢ⟩|": {
            lam: b.abs().max().item() for lam, (b, _) in bias_part.items()
        },
    }
).rename_axis("λ")
thresholds.round(3)

# %%
gap = abs(dead_zone[L1] - L1 * D_MODEL / 2)
report.check(
    f"The measured dead zone at λ = {L1} lies within 0.1 of the closed-form λd/2 = "
    f"{L1 * D_MODEL / 2:.2f}",
    paper="soft threshold (lasso)",
    ours=f"median onset s = {dead_zone[L1]:.2f}",
    passed=gap < 0.1,
    kind="finding",
)
b_dec_part, response_at_0 = bias_part[L1]
report.check(
    f"Inside the dead zone x̂ = b_dec: the response at s = 0 is ⟨b_dec, dᵢ⟩, "
    f"which is not 0 (λ = {L1})",
    ours=f"max |response − ⟨b_dec, dᵢ⟩| {(response_at_0 - b_dec_part).abs().max():.1e}"
    f"; max |⟨b_dec, dᵢ⟩| {b_dec_part.abs().max():.3f}",
    passed=bool((response_at_0 - b_dec_part).abs().max() < 1e-5)
    and b_dec_part.abs().max().item() > 0.01,
    kind="mechanics",
)
zones = [dead_zone[lam] for lam in saes]
report.check(
    "The dead zone widens as λ grows",
    ours=" ≤ ".join(f"{v:.2f}" for v in zones),
    passed=all(a <= b for a, b in zip(zones, zones[1:])) and zones[-1] > zones[0],
    kind="finding",
)
smallest = min(saes)
report.check(
    f"At the smallest λ ({smallest}) the dead zone is wider than λd/2: the encoder "
    "also keeps interference out",
    ours=f"{dead_zone[smallest]:.2f} vs λd/2 = {smallest * D_MODEL / 2:.2f}",
    passed=dead_zone[smallest] > smallest * D_MODEL / 2 + 0.05,
    kind="finding",
)
report.check(
    f"For λ ≥ {L1}, past the dead zone the codes give back less than the closed form "
    "s − λd/2 (at s = 2)",
    ours=", ".join(
        f"λ = {lam}: {at_two[lam]:.2f} vs {2 - lam * D_MODEL / 2:.2f}"
        for lam in saes
        if lam >= L1
    ),
    passed=all(at_two[lam] < 2 - lam * D_MODEL / 2 for lam in saes if lam >= L1),
    kind="finding",
)

# %% [markdown]
# The closed form is close at the chapter's $\lambda$, and the dead zone widens with $\lambda$ as it
# should (the table). At the smallest $\lambda$ the measured dead zone is wider than $\lambda d/2$:
# the encoder bias also has to keep the other features' interference out, a threshold of its own.
# And from $\lambda = 0.02$ up, past the dead zone the codes give back less than $s - \lambda d/2$:
# with atoms that are not orthonormal, the line is not parallel to the diagonal but a little
# flatter, so the shortfall grows with $s$.

# %% [markdown]
# Shrinkage is the first reason to look beyond the L1 penalty. Chapter 3's TopK SAE removes the penalty
# altogether and controls sparsity directly.
#
# ## Dead latents
#
# A ReLU latent whose pre-activation is negative on every input outputs zero everywhere, and so
# receives no gradient through the reconstruction: once it stops firing, nothing in its own loss brings
# it back. It can only come back by accident, when other parameters move its pre-activation: here the
# trainable pre-bias $b_{\text{dec}}$, which shifts every input before encoding. Until then it is
# **dead**, wasted capacity. `train_sae` counts a latent as dead when it has not fired for
# `dead_window` training samples.
#
# A common way to kill latents is a learning rate that is too high early in training: big updates push
# some encoders into regions where nothing activates them. Here is a wider SAE (512 latents) trained at
# two learning rates.

# %%
WIDE = 512
DEAD_SEEDS = [0, 1, 2]  # a seed fixes the initialisation and the batch order
dead_runs, dead_histories, dead_at_end = {}, {}, {}
for seed in DEAD_SEEDS:
    for lr in [3e-3, 3e-2]:
        model = ReLUSAE(D_MODEL, WIDE, l1_coeff=L1, seed=seed)
        h = train_sae(
            model,
            train.x,
            steps=STEPS,
            batch_size=BATCH,
            lr=lr,
            seed=seed,
            dead_window=20_000,
            desc=f"512 latents, lr = {lr}, seed {seed}",
        )
        dead_at_end[(lr, seed)] = h.dead[-1]
        if seed == 0:
            dead_histories[f"lr = {lr}"] = h
            dead_runs[lr] = evaluate(model, test.x)
fig = go.Figure()
for name, h in dead_histories.items():
    fig.add_trace(go.Scatter(y=h.dead, mode="lines", name=name))
fig.update_layout(
    title=f"Dead latents during training ({WIDE} latents, seed 0)",
    xaxis_title="step",
    yaxis_title="latents silent for 20,000 samples",
    height=360,
)
fig.show()
display(
    pd.DataFrame(dead_runs)
    .T[["l0", "fvu", "alive", "dead"]]
    .rename_axis("learning rate (seed 0)")
    .round(3)
)
pd.Series(dead_at_end, name="dead at end of training").unstack().rename_axis(
    index="learning rate", columns="seed"
)

# %%
low = [dead_at_end[(3e-3, seed)] for seed in DEAD_SEEDS]
high = [dead_at_end[(3e-2, seed)] for seed in DEAD_SEEDS]
report.check(
    "A 10× larger learning rate kills many more latents (dead at end of training, "
    f"≥ 50 more on each of {len(DEAD_SEEDS)} seeds)",
    ours=", ".join(f"{a} vs {b}" for a, b in zip(low, high)) + f" of {WIDE}",
    passed=all(b >= a + 50 for a, b in zip(low, high)),
)

# %% [markdown]
# With 512 latents and only 64 true features, some latents *should* end up idle or duplicated; the
# point is that on the same data, and on every seed we tried, the larger learning rate kills far more
# of them: how many die is set by the training recipe, not only by how many features the data has.
# Dead latents matter more on real models, where there are always more features to learn than
# latents to learn them with. Chapter 3 introduces an auxiliary loss that gives dead latents a
# gradient again.

# %% [markdown]
# ## Exercises
#
# Two exercises on the ReLU SAE itself. Each has a stub to fill in, a cell that checks your
# function against the library, and a solution behind a toggle
# ({ref}`how to work the exercises <working-the-exercises>`).

# %%
import torch.nn.functional as F

from sae_lib import ReLUSAE, exercises

# %% [markdown]
# :::{exercise} The best code for one atom
# :label: ex-2-best-code
#
# The closed form above took a lone feature, unit atoms and no pre-bias. Generalise it: for an SAE
# with a single latent, write `best_code(x, atom, b_dec, l1_coeff)`. For each row of `x`
# $(b, d)$, return the code $z \ge 0$ that minimises this chapter's loss
# $\frac{1}{d}\|x - \hat x\|^2 + \lambda z$, where $\hat x = z\,u + b_{\text{dec}}$, $u$ is
# `atom` $(d)$ scaled to unit length and $\lambda$ = `l1_coeff`, and the reconstruction
# $\hat x$ it gives. Return `(z, x_hat)`, of shapes $(b)$ and $(b, d)$. The checker's inputs
# are not multiples of the atom, its atoms have any length, and some inputs fall in the dead zone.
# :::


# %%
def best_code(x, atom, b_dec, l1_coeff):
    """(z, x_hat): each row's best code z >= 0 for the unit atom, and its x_hat."""
    raise NotImplementedError("your turn: zero the slope in z, then clip at 0")


# %%
best_code_passed = exercises.check_best_code(best_code)

# %% [markdown]
# ::::{solution-start} ex-2-best-code
# :class: dropdown
# ::::


# %%
def best_code_solution(x, atom, b_dec, l1_coeff):
    unit = F.normalize(atom, dim=0)
    # The slope in z is -2<x - b_dec - z u, u>/d + λ: zero at <x - b_dec, u> - λd/2.
    s = (x - b_dec) @ unit  # how much of the atom the centred input holds
    z = (s - l1_coeff * x.shape[-1] / 2).clamp(min=0)
    return z, z[:, None] * unit + b_dec


exercises.check_best_code(best_code_solution, solution=True)

# %% [markdown]
# ::::{solution-end}
# ::::
#
# The checker's reference is a library `ReLUSAE` with one latent, whose encoder reads the unit
# atom and whose encoder bias is $-\lambda d/2$: for a single atom, the ReLU encoder with that
# bias computes the best code exactly. With many atoms that are not orthogonal, no encoder of
# this form computes the best codes exactly in general: one reason the trained SAE's dead zone
# above need not equal $\lambda d/2$.
#
# **Predict, then run.** Take one SAE and double the length of every row of its `W_dec`
# parameter. Does the reconstruction change, and by how much? Guess, then run.

# %%
probe = ReLUSAE(D_MODEL, N_LATENTS, seed=5)
x_probe = test.x[:256]
with torch.no_grad():
    before, _ = probe(x_probe)
    probe.W_dec.mul_(2.0)
    after, _ = probe(x_probe)
change = (after - before).abs().max().item()
print(f"largest change in x_hat after doubling W_dec: {change:.1e}")

# %%
report.check(
    "Rescaling W_dec leaves the output unchanged (decoding uses unit atoms)",
    ours=f"max change {change:.1e}",
    passed=change < 1e-5,
    kind="mechanics",
)

# %% [markdown]
# Nothing changes: the forward pass only ever sees unit atoms. That is what keeps the L1 penalty
# honest, since no rescaling of the decoder can make a code smaller for free.
#
# :::{exercise} A decoder left free: the norm-weighted L1 loss
# :label: ex-2-loss
#
# This chapter renormalises every row of `W_dec` after each step. Anthropic's later recipe
# {cite}`conerly2024april` leaves the decoder free instead, and charges each code for the
# length of its atom: the loss is
# $\frac{1}{d}\|x - \hat x\|^2 + \lambda \sum_i z_i \|W_{\text{dec},i}\|$, averaged over the
# inputs. Write `norm_weighted_loss(x, x_hat, z, W_dec, l1_coeff)`; `x` and `x_hat` are
# $(\ldots, d)$, `z` is $(\ldots, n)$ and `W_dec` is $(n, d)$ with rows of any length. Return a
# tensor that carries a gradient, so an optimiser could train `W_dec` on it.
#
# Why does this close the loophole of the previous cell? Scale atom $i$ by $c$ and its code by
# $1/c$: $\hat x$ is unchanged, and so is the penalty $z_i \|W_{\text{dec},i}\|$. With a plain
# L1 penalty and a free decoder, large atoms would make every code cheap.
# :::


# %%
def norm_weighted_loss(x, x_hat, z, W_dec, l1_coeff):
    """MSE per entry plus l1_coeff times the mean over inputs of sum_i z_i |W_dec[i]|."""
    raise NotImplementedError("your turn")


# %%
norm_loss_passed = exercises.check_norm_weighted_loss(norm_weighted_loss)

# %% [markdown]
# ::::{solution-start} ex-2-loss
# :class: dropdown
# ::::


# %%
def norm_weighted_loss_solution(x, x_hat, z, W_dec, l1_coeff):
    inputs = z.numel() // z.shape[-1]  # x may have several leading dimensions
    penalty = (z * W_dec.norm(dim=-1)).sum() / inputs  # each code times its atom's length
    return (x_hat - x).pow(2).mean() + l1_coeff * penalty


exercises.check_norm_weighted_loss(norm_weighted_loss_solution, solution=True)

# %% [markdown]
# ::::{solution-end}
# ::::

# %% [markdown]
# ## Replication check

# %%
report.save()
report.show()

# %% [markdown]
# **Next:** chapter 3 replaces the L1 penalty with a TopK activation, which fixes sparsity directly, and
# compares the two families on one sparsity-reconstruction frontier.

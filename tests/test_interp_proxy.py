"""The offline detection proxy (sae_lib.interp_proxy) on latents whose firing rule is planted."""

import itertools
import math

import pytest
import torch

from sae_lib import ReLUSAE
from sae_lib import interp_proxy as ip

VOCAB = 50
TOKEN_PAIR = (3, 7)  # latent 0 fires exactly on these two tokens
BIGRAM = (9, 5)  # latent 2 fires on token 5 right after token 9


def _text(seed: int, n_seq: int = 100, pos: int = 40) -> tuple[torch.Tensor, torch.Tensor]:
    """Random tokens and the codes of four planted latents on them: a two-token latent, a random one,
    a bigram latent and one that never fires."""
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, VOCAB, (n_seq, pos), generator=g)
    tokens[:, 1::8] = BIGRAM[0]
    tokens[:, 2::8] = BIGRAM[1]  # make the bigram common enough to matter ...
    tokens[:, 4::8] = tokens[:, 6::8] = BIGRAM[1]  # ... and its second token common alone too
    size = 1 + torch.rand(n_seq, pos, generator=g)
    on_pair = (tokens == TOKEN_PAIR[0]) | (tokens == TOKEN_PAIR[1])
    at_random = torch.rand(n_seq, pos, generator=g) < 0.05
    on_bigram = (ip.previous_tokens(tokens) == BIGRAM[0]) & (tokens == BIGRAM[1])
    codes = torch.stack([size * on_pair, size * at_random, size * on_bigram, torch.zeros(n_seq, pos)], dim=-1)
    return tokens, codes


@pytest.fixture(scope="module")
def texts():
    return _text(0), _text(1)


def test_a_two_token_latent_is_explained_by_exactly_those_tokens(texts):
    (train_tokens, train_codes), (test_tokens, test_codes) = texts
    explanation = ip.explain_latent(train_tokens, train_codes[..., 0], latent=0)
    assert set(explanation.keys) == set(TOKEN_PAIR) and sum(explanation.counts) == ip.N_TOP
    scored = ip.score_explanation(explanation, test_tokens, test_codes[..., 0])
    assert scored.auroc == 1.0 and scored.balanced_accuracy == 1.0 and scored.note == ""


def test_a_random_latent_scores_near_chance(texts):
    result = ip.detection_proxy(*texts[0], *texts[1])
    random_latent = result.latents[1]
    assert abs(random_latent.auroc - 0.5) < 0.06
    assert abs(random_latent.balanced_accuracy - 0.5) < 0.06
    assert len(random_latent.explanation.keys) == ip.SIZE


def test_a_bigram_latent_needs_the_previous_token(texts):
    (train_tokens, train_codes), (test_tokens, test_codes) = texts
    by_token = ip.detection_proxy(train_tokens, train_codes, test_tokens, test_codes).latents[2]
    by_bigram = ip.detection_proxy(train_tokens, train_codes, test_tokens, test_codes, context="bigram").latents[2]
    assert by_bigram.explanation.keys == (BIGRAM,) and by_bigram.auroc == 1.0 and by_bigram.balanced_accuracy == 1.0
    assert by_token.explanation.keys[0] == BIGRAM[1]  # "the token 5" is right, but 5 often comes alone:
    assert by_token.auroc < 0.9 and by_token.balanced_accuracy < 0.9


def test_a_latent_that_never_fires_is_recorded_unscored(texts):
    result = ip.detection_proxy(*texts[0], *texts[1], latents=[10, 11, 12, 13])
    silent = result.latents[3]
    assert silent.latent == 13 and math.isnan(silent.auroc) and "never fires" in silent.note
    assert result.n_scored == 3
    summary = result.summary()
    assert summary["latents"] == 4 and summary["scored"] == 3
    assert summary["mean_auroc"] == pytest.approx(sum(r.auroc for r in result.latents[:3]) / 3)
    assert [row["latent"] for row in result.rows()] == [10, 11, 12, 13]


def test_auroc_matches_counting_pairs_with_ties():
    g = torch.Generator().manual_seed(0)
    scores = torch.randint(0, 4, (60,), generator=g).float()
    labels = torch.rand(60, generator=g) < 0.4
    pairs = [(p, n) for p, n in itertools.product(scores[labels].tolist(), scores[~labels].tolist())]
    expected = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in pairs) / len(pairs)
    assert ip.auroc(scores, labels) == pytest.approx(expected)
    assert math.isnan(ip.auroc(scores, torch.ones(60, dtype=torch.bool)))
    assert ip.balanced_accuracy(torch.tensor([1, 0, 0, 0]), torch.tensor([1, 1, 0, 0])) == pytest.approx(0.75)


def test_sampling_is_uniform_among_latents_that_fire_often_enough():
    density = torch.tensor([0.0, 0.5, 1e-5, 0.01, 0.2, 0.002, 0.0])
    picked = ip.sample_latents(density, 3, min_density=1e-3, seed=0)
    assert len(picked) == 3 and set(picked.tolist()) <= {1, 3, 4, 5} and picked.tolist() == sorted(picked.tolist())
    assert torch.equal(picked, ip.sample_latents(density, 3, min_density=1e-3, seed=0))
    assert ip.sample_latents(density, 10, min_density=1e-3).tolist() == [1, 3, 4, 5]
    codes = torch.tensor([[0.0, 1.0], [2.0, 0.0], [0.0, 3.0]])
    assert ip.firing_density(codes).tolist() == pytest.approx([1 / 3, 2 / 3])
    with pytest.raises(ValueError, match="no latent fires"):
        ip.sample_latents(density, 3, min_density=0.9)


def test_the_proxy_runs_on_an_sae(texts):
    """One-hot token embeddings as activations; latent 0 of the SAE reads tokens 3 and 7."""
    (train_tokens, _), (test_tokens, _) = texts
    sae = ReLUSAE(VOCAB, 8, seed=0)
    with torch.no_grad():
        sae.W_enc.zero_()
        sae.W_enc[list(TOKEN_PAIR), 0] = 1.0
        sae.W_enc[:, 1:] = torch.randn(VOCAB, 7, generator=torch.Generator().manual_seed(1))
    embed = torch.eye(VOCAB)
    result = ip.sae_detection_proxy(sae, train_tokens, embed[train_tokens], test_tokens, embed[test_tokens],
                                    n_latents=8, min_density=1e-3)
    by_latent = {r.latent: r for r in result.latents}
    assert set(by_latent[0].explanation.keys) == set(TOKEN_PAIR) and by_latent[0].auroc == 1.0
    assert sae.training  # the SAE's mode is restored


def test_bad_inputs_are_clear_errors(texts):
    (train_tokens, train_codes), (test_tokens, test_codes) = texts
    with pytest.raises(ValueError, match="train_codes must be"):
        ip.detection_proxy(train_tokens, train_codes[:, :-1], test_tokens, test_codes)
    with pytest.raises(ValueError, match="train_tokens must be"):
        ip.detection_proxy(train_tokens.float(), train_codes, test_tokens, test_codes)
    with pytest.raises(ValueError, match="negative ids"):
        ip.detection_proxy(train_tokens - 100, train_codes, test_tokens, test_codes)
    with pytest.raises(ValueError, match="test_codes has 3"):
        ip.detection_proxy(train_tokens, train_codes, test_tokens, test_codes[..., :3])
    with pytest.raises(ValueError, match="names 2 latents"):
        ip.detection_proxy(train_tokens, train_codes, test_tokens, test_codes, latents=[0, 1])
    with pytest.raises(ValueError, match="context"):
        ip.explain_latent(train_tokens, train_codes[..., 0], context="sentence")
    with pytest.raises(ValueError, match="n_top"):
        ip.explain_latent(train_tokens, train_codes[..., 0], n_top=0)
    with pytest.raises(ValueError, match="never fires"):
        ip.explain_latent(train_tokens, train_codes[..., 3])
    with pytest.raises(ValueError, match="empty"):
        ip.detection_proxy(train_tokens[:0], train_codes[:0], test_tokens, test_codes)
    sae = ReLUSAE(VOCAB + 1, 4)
    with pytest.raises(ValueError, match="train_activations must be"):
        ip.sae_detection_proxy(sae, train_tokens, torch.zeros(*train_tokens.shape, VOCAB), test_tokens,
                               torch.zeros(*test_tokens.shape, VOCAB))

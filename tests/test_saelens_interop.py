"""SAELens itself reads what save_saelens writes, and computes the same codes and reconstructions; and
load_saelens reads what SAELens itself saves. scripts/test.sh installs sae-lens for this test."""

import os

import pytest
import torch

from sae_lib import BatchTopKSAE, MatryoshkaSAE, MPSAE, ReLUSAE, TopKSAE, train_sae
from sae_lib.checkpoint import CheckpointError
from sae_lib.saelens_format import load_saelens, save_saelens

D, N = 12, 32
FAMILIES = {
    "relu": (lambda: ReLUSAE(D, N, seed=0), "StandardSAE"),
    "topk": (lambda: TopKSAE(D, N, 3, seed=0), "TopKSAE"),
    "batchtopk": (lambda: BatchTopKSAE(D, N, 3, seed=0), "JumpReLUSAE"),
    "matryoshka": (lambda: MatryoshkaSAE(D, N, 3, prefixes=(8, 16, N), seed=0), "JumpReLUSAE"),
    "mp": (lambda: MPSAE(D, N, 4, seed=0), "MatchingPursuitSAE"),
}
WHERE = {"hook_name": "blocks.0.hook_resid_post", "model_name": "tiny-lm"}


@pytest.fixture(scope="module")
def sae_lens():
    """SAELens, imported by the tests that use it (the import takes seconds, so not when merely collecting).
    On CI, where scripts/test.sh has installed it, a missing SAELens fails the tests instead of skipping them."""
    try:
        return pytest.importorskip("sae_lens")
    except pytest.skip.Exception:
        if os.environ.get("CI"):
            pytest.fail("sae_lens is not installed, but scripts/test.sh installs it for this test")
        raise


@pytest.fixture(scope="module")
def data():
    from sae_lib import superposition_data

    return superposition_data(2000, n_features=24, d=D, p_active=0.1, seed=0).x


def inputs(n=200, seed=1):
    return torch.randn(n, D, generator=torch.Generator().manual_seed(seed))


def saelens_reconstruction(theirs, x):
    with torch.no_grad():
        return theirs.decode(theirs.encode(x))


@pytest.mark.parametrize("family", FAMILIES)
def test_saelens_loads_our_sae_and_computes_the_same(family, sae_lens, data, tmp_path):
    make, saelens_class = FAMILIES[family]
    sae = make()
    train_sae(sae, data, steps=20, batch_size=64, lr=1e-2, seed=0, progress=False)
    save_saelens(sae, tmp_path, **WHERE)
    theirs = sae_lens.SAE.load_from_disk(tmp_path)
    assert type(theirs).__name__ == saelens_class
    assert theirs.cfg.metadata.hook_name == WHERE["hook_name"] and theirs.cfg.metadata.model_name == WHERE["model_name"]
    x = inputs()
    x_hat, z = sae(x)
    with torch.no_grad():
        z_theirs = theirs.encode(x)
        x_hat_theirs = theirs.decode(z_theirs)
    torch.testing.assert_close(z_theirs, z, atol=1e-4, rtol=1e-4)  # unit atoms: even the codes agree
    torch.testing.assert_close(x_hat_theirs, x_hat, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(theirs(x).detach(), x_hat, atol=1e-4, rtol=1e-4)


def test_matching_pursuit_differs_only_once_sae_lib_stops_at_the_noise_floor(sae_lens, data, tmp_path):
    """At k far beyond d_in, rows reach the noise floor: sae_lib stops there, SAELens keeps going (see
    saelens_format._pursuit_settings), so the reconstructions differ by less than twice our leftover residual."""
    sae = MPSAE(D, N, 200, seed=0)
    train_sae(sae, data, steps=20, batch_size=64, lr=1e-2, seed=0, progress=False)
    save_saelens(sae, tmp_path, **WHERE)
    x = inputs()
    x_hat = sae(x)[0]
    gap = (x_hat - saelens_reconstruction(sae_lens.SAE.load_from_disk(tmp_path), x)).norm(dim=1)
    residual = (x - x_hat).norm(dim=1)
    assert gap.max() > 1e-4  # the difference is real here...
    assert (gap <= 2 * residual + 1e-5).all()  # ...and bounded as documented


def test_saelens_reads_our_half_precision_files(sae_lens, data, tmp_path):
    sae = TopKSAE(D, N, 3, seed=0)
    train_sae(sae, data, steps=20, batch_size=64, lr=1e-2, seed=0, progress=False)
    save_saelens(sae, tmp_path, **WHERE, dtype="bfloat16")
    theirs = sae_lens.SAE.load_from_disk(tmp_path, dtype="float32")
    ours = load_saelens(tmp_path, dtype=torch.float32)
    x = inputs()
    with torch.no_grad():
        torch.testing.assert_close(theirs.decode(theirs.encode(x)), ours(x)[0], atol=1e-4, rtol=1e-4)


def randomise(theirs, seed=0):
    """Random weights, decoder rows of any length (SAELens does not keep them at unit length)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in theirs.named_parameters():
            p.copy_(torch.randn(p.shape, generator=g) * (0.1 if name.startswith("b_") else 0.3))
        theirs.W_dec.mul_(torch.rand(N, 1, generator=g) + 0.5)
    return theirs


@pytest.mark.parametrize("apply_b_dec_to_input", [True, False])
def test_we_load_saelens_standard_and_topk_saes(apply_b_dec_to_input, sae_lens, tmp_path):
    standard = randomise(sae_lens.StandardSAE(sae_lens.StandardSAEConfig(
        d_in=D, d_sae=N, apply_b_dec_to_input=apply_b_dec_to_input)))
    topk = randomise(sae_lens.TopKSAE(sae_lens.TopKSAEConfig(
        d_in=D, d_sae=N, k=4, rescale_acts_by_decoder_norm=True, apply_b_dec_to_input=apply_b_dec_to_input)))
    x = inputs()
    for theirs, cls in ((standard, ReLUSAE), (topk, TopKSAE)):
        theirs.save_model(tmp_path / cls.family)
        ours = load_saelens(tmp_path / cls.family)
        assert type(ours) is cls
        torch.testing.assert_close(ours(x)[0], saelens_reconstruction(theirs, x), atol=1e-4, rtol=1e-4)


def test_we_load_a_batchtopk_sae_trained_and_saved_by_saelens(sae_lens, tmp_path):
    cfg = sae_lens.BatchTopKTrainingSAEConfig(d_in=D, d_sae=N, k=3)
    trainer = randomise(sae_lens.BatchTopKTrainingSAE(cfg))
    trainer.topk_threshold = torch.tensor(0.4, dtype=torch.double)
    trainer.save_inference_model(tmp_path)  # SAELens writes it as a JumpReLU with one threshold repeated
    theirs = sae_lens.SAE.load_from_disk(tmp_path)
    ours = load_saelens(tmp_path)
    assert type(ours) is BatchTopKSAE and ours.k == 3
    x = inputs()
    torch.testing.assert_close(ours(x)[0], saelens_reconstruction(theirs, x), atol=1e-4, rtol=1e-4)


def test_what_sae_lib_cannot_reproduce_is_refused(sae_lens, tmp_path):
    jumprelu = randomise(sae_lens.JumpReLUSAE(sae_lens.JumpReLUSAEConfig(d_in=D, d_sae=N)))
    jumprelu.save_model(tmp_path / "jumprelu")  # one threshold per latent
    with pytest.raises(CheckpointError, match="JumpReLU SAE not trained as BatchTopK or Matryoshka"):
        load_saelens(tmp_path / "jumprelu")
    pursuit = sae_lens.MatchingPursuitSAE(sae_lens.MatchingPursuitSAEConfig(d_in=D, d_sae=N))
    pursuit.save_model(tmp_path / "mp")  # SAELens's default stopping rules
    with pytest.raises(CheckpointError, match="cannot reproduce"):
        load_saelens(tmp_path / "mp")

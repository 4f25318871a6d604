"""BatchTopK and Matryoshka SAEs: the batch-level selection, the inference threshold, the prefix losses."""

import pytest
import torch

from sae_lib import BatchTopKSAE, MatryoshkaSAE, load_sae, save_sae, train_sae
from sae_lib.training import Reconstruction

D, N, K = 8, 24, 3


def inputs(n, seed=0):
    return torch.randn(n, D, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("cls", [BatchTopKSAE, MatryoshkaSAE])
def test_shapes_and_unit_atoms(cls):
    sae = cls(D, N, K, seed=0)
    x_hat, z = sae(inputs(10))
    assert x_hat.shape == (10, D) and z.shape == (10, N)
    torch.testing.assert_close(sae.W_dec.norm(dim=1), torch.ones(N))
    assert (z >= 0).all()


@pytest.mark.parametrize("cls", [BatchTopKSAE, MatryoshkaSAE])
def test_training_mode_keeps_exactly_k_times_batch_activations(cls):
    sae = cls(D, N, K, seed=0).train()
    z = sae.encode(inputs(50))
    assert int((z > 0).sum()) == K * 50
    per_row = (z > 0).sum(1)
    assert per_row.min() < per_row.max()  # the budget moves between rows, unlike per-sample TopK
    # The kept activations are the batch's largest pre-activations.
    pre = sae.pre_activations(inputs(50)).reshape(-1)
    assert z.reshape(-1)[z.reshape(-1) > 0].min() >= pre.topk(K * 50).values.min() - 1e-6


def test_threshold_is_a_running_estimate_of_the_smallest_kept_activation():
    sae = BatchTopKSAE(D, N, K, seed=0, threshold_momentum=0.5).train()
    assert sae.threshold.item() == -1.0
    z1 = sae.encode(inputs(40, 1))
    first = z1[z1 > 0].min().item()
    assert sae.threshold.item() == pytest.approx(first)
    z2 = sae.encode(inputs(40, 2))
    assert sae.threshold.item() == pytest.approx(0.5 * first + 0.5 * z2[z2 > 0].min().item())


def test_inference_uses_the_threshold_so_a_row_does_not_depend_on_its_batch():
    sae = BatchTopKSAE(D, N, K, seed=0)
    train_sae(sae, inputs(2000), steps=60, batch_size=100, lr=1e-2, progress=False)
    assert not sae.training and sae.threshold > 0
    x = inputs(30, 3)
    z = sae.encode(x)
    pre = sae.pre_activations(x)
    torch.testing.assert_close(z, pre * (pre > sae.threshold))
    torch.testing.assert_close(sae.encode(x[:1]), z[:1])  # the same row alone gets the same code
    l0 = (z > 0).sum(1)
    assert l0.min() < l0.max()  # L0 varies per input
    assert int((sae.encode(x, k=2) > 0).sum()) == 2 * 30  # an explicit k asks for the batch selection


def test_threshold_survives_save_and_load(tmp_path):
    sae = BatchTopKSAE(D, N, K, seed=0)
    train_sae(sae, inputs(1000), steps=20, batch_size=100, lr=1e-2, progress=False)
    loaded = load_sae(save_sae(sae, tmp_path / "b"))
    assert isinstance(loaded, BatchTopKSAE) and loaded.threshold.item() == sae.threshold.item()
    x = inputs(9, 5)
    torch.testing.assert_close(loaded.eval().encode(x), sae.encode(x))


def test_matryoshka_round_trip_keeps_prefixes(tmp_path):
    sae = MatryoshkaSAE(D, N, K, prefixes=(4, 12, N), seed=0)
    loaded = load_sae(save_sae(sae, tmp_path / "m"))
    assert isinstance(loaded, MatryoshkaSAE) and loaded.prefixes == (4, 12, N)
    for name, tensor in sae.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[name], tensor)


def test_matryoshka_prefix_losses_are_each_prefixs_own_reconstruction_error():
    sae = MatryoshkaSAE(D, N, K, prefixes=(4, 12, N), seed=0).train()
    x = inputs(20)
    terms, z = Reconstruction()(sae, x, torch.zeros(N, dtype=torch.bool))
    atoms = sae.atoms().detach()
    expected = sum(((x - (z[:, :m] @ atoms[:m] + sae.b_dec)) ** 2).mean() for m in (4, 12))
    torch.testing.assert_close(terms["prefix_mse"], expected)
    full = z @ atoms + sae.b_dec
    torch.testing.assert_close(terms["mse"], ((x - full) ** 2).mean())
    # The prefix loss reaches the early atoms only: the last prefix's atoms get no gradient from it.
    terms["prefix_mse"].backward()
    assert sae.W_dec.grad[12:].abs().max() == 0 and sae.W_dec.grad[:12].abs().max() > 0


def test_matryoshka_default_prefixes_and_bad_prefixes():
    assert MatryoshkaSAE(D, N, K).prefixes == (6, 12, 24)
    for bad in [(4, 4, N), (12, 4, N), (4, 12), (0, N), (4.0, N)]:
        with pytest.raises(ValueError, match="prefixes"):
            MatryoshkaSAE(D, N, K, prefixes=bad)


def test_bad_threshold_momentum_is_a_clear_error():
    with pytest.raises(ValueError, match="threshold_momentum"):
        BatchTopKSAE(D, N, K, threshold_momentum=1.0)


@pytest.mark.parametrize("cls", [BatchTopKSAE, MatryoshkaSAE])
def test_training_reduces_the_loss(cls):
    sae = cls(D, N, K, seed=0)
    history = train_sae(sae, inputs(3000), steps=150, batch_size=100, lr=1e-2, progress=False)
    assert history.final("mse", 20) < 0.7 * sum(history.terms["mse"][:5]) / 5


def test_k_may_be_a_fractional_average():
    sae = BatchTopKSAE(D, N, 1.5, seed=0).train()
    assert int((sae.encode(inputs(10)) > 0).sum()) == 15
    for bad in [0, -1, N + 1, "2", True]:
        with pytest.raises(ValueError, match="k must be a number"):
            BatchTopKSAE(D, N, bad)


@pytest.mark.parametrize("cls", [BatchTopKSAE, MatryoshkaSAE])
@pytest.mark.parametrize("leading", [(60,), (3, 20)])
def test_the_sparse_route_gives_the_dense_routes_numbers(cls, leading, monkeypatch):
    """Large SAEs keep the batch selection sparse (CentredSelect over the batch, decode_rows for the
    reconstructions): codes, outputs, losses, gradients and the learned threshold must be the dense
    route's, which small SAEs take."""
    from sae_lib import saes

    def run(sparse: bool):
        monkeypatch.setattr(saes, "CENTRED_LINEAR_MIN_WORK", 0 if sparse else 2**62)
        monkeypatch.setattr(saes, "SPARSE_DECODE_RATIO", 1 if sparse else 10**9)
        sae = cls(D, N, K, seed=0).double().train()
        with torch.no_grad():  # biases off zero, so that centring and the bias gradients matter
            for p in (sae.b_dec, sae.b_enc):
                p.add_(0.1 * torch.randn(p.shape, generator=torch.Generator().manual_seed(2), dtype=p.dtype))
        x = torch.randn(*leading, D, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
        x_hat, z = sae(x)
        terms = sae.extra_losses(x, x_hat, z, torch.zeros(N, dtype=torch.bool))
        loss = (x - x_hat).pow(2).mean() + sum(terms.values())
        grads = torch.autograd.grad(loss, [sae.W_enc, sae.b_enc, sae.b_dec, sae.W_dec])
        return x_hat, z, loss, grads, sae.threshold.clone(), sorted(terms)

    dense, sparse = run(False), run(True)
    for a, b in zip(dense[:5], sparse[:5]):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-10)
    assert dense[5] == sparse[5]
    assert (dense[1] > 0).sum() == round(K * dense[1].numel() / N)  # the batch budget, both routes

"""Shapes, invariants and error messages of the SAE families."""

import pytest
import torch

from sae_lib import MPSAE, ReLUSAE, TopKSAE

D, N, K = 16, 48, 4
FACTORIES = {
    "relu": lambda: ReLUSAE(D, N, seed=0),
    "topk": lambda: TopKSAE(D, N, K, seed=0),
    "mp": lambda: MPSAE(D, N, K, seed=0),
}


def inputs(n=64, seed=1):
    return torch.randn(n, D, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("family", FACTORIES)
def test_shapes_and_unit_norm_dictionary(family):
    sae = FACTORIES[family]()
    assert sae.W_dec.shape == (N, D)
    torch.testing.assert_close(sae.W_dec.norm(dim=1), torch.ones(N))
    x = inputs()
    x_hat, z = sae(x)
    assert x_hat.shape == x.shape and z.shape == (64, N)
    torch.testing.assert_close(sae.decode(sae.encode(x)), x_hat, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("family", FACTORIES)
def test_leading_dimensions_are_kept(family):
    sae = FACTORIES[family]()
    x = torch.randn(3, 5, D)
    x_hat, z = sae(x)
    assert x_hat.shape == (3, 5, D) and z.shape == (3, 5, N)
    torch.testing.assert_close(z.reshape(15, N), sae.encode(x.reshape(15, D)))


@pytest.mark.parametrize("family", FACTORIES)
def test_same_seed_same_weights_different_seed_different(family):
    a, b = FACTORIES[family](), FACTORIES[family]()
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(p, q), name
    settings = {k: v for k, v in a.config().items() if k != "family"}
    other = type(a)(**settings, seed=1)
    assert not torch.equal(a.W_dec, other.W_dec)


def test_topk_has_exactly_k_nonzeros_and_accepts_other_k():
    sae = TopKSAE(D, N, K, seed=0)
    x = inputs(256)
    z = sae.encode(x)
    assert ((z != 0).sum(-1) == K).all()
    assert (z >= 0).all()
    for k in (1, 7, 12):
        assert ((sae.encode(x, k=k) != 0).sum(-1) == k).all()
    x_hat, z8 = sae(x, k=8)
    assert ((z8 != 0).sum(-1) == 8).all()


def test_topk_never_exceeds_k_when_few_preactivations_are_positive():
    sae = TopKSAE(D, N, K, seed=0)
    with torch.no_grad():
        sae.b_enc.fill_(-100.0)  # every pre-activation negative: nothing may fire
    z = sae.encode(inputs())
    assert (z == 0).all()


def test_topk_keeps_the_largest_preactivations():
    sae = TopKSAE(D, N, K, seed=0)
    x = inputs(32)
    pre = sae.pre_activations(x)
    z = sae.encode(x)
    kth = pre.topk(K, dim=-1).values[:, -1:]
    assert ((z > 0) == (pre >= kth) & (pre > 0)).all()


def test_mp_codes_nonnegative_at_most_k_and_other_k():
    sae = MPSAE(D, N, K, seed=0)
    x = inputs(256)
    z = sae.encode(x)
    assert (z >= 0).all()
    assert ((z != 0).sum(-1) <= K).all()
    z12 = sae.encode(x, k=12)
    assert ((z12 != 0).sum(-1) <= 12).all()
    assert ((z12 != 0).sum(-1) > K).any()


def test_mp_each_step_orthogonalises_residual_and_never_increases_its_norm():
    sae = MPSAE(D, N, 10, seed=0)
    x = inputs(128)
    trace = sae.trace(x)
    atoms = sae.atoms()
    norms = trace.residuals.norm(dim=-1)  # (k + 1, batch)
    assert (norms[1:] <= norms[:-1] + 1e-6).all()
    for t in range(10):
        chosen = atoms[trace.indices[:, t]]
        active = trace.coefficients[:, t] > 0
        dots = (trace.residuals[t + 1] * chosen).sum(-1)
        assert dots[active].abs().max() < 1e-5
    # the energy removed at each step is exactly the coefficient squared (unit-norm atoms)
    torch.testing.assert_close(norms[:-1] ** 2 - norms[1:] ** 2, trace.coefficients.T ** 2, atol=1e-4, rtol=1e-4)


def test_mp_fast_path_matches_plain_loop_codes_and_reconstruction():
    sae = MPSAE(D, N, 6, seed=0)
    with torch.no_grad():
        sae.b_dec.normal_(generator=torch.Generator().manual_seed(3))
    x = inputs(200)
    trace = sae.trace(x)
    ref_z = torch.zeros(200, N).scatter_add(1, trace.indices, trace.coefficients)
    x_hat, z = sae(x)
    torch.testing.assert_close(z, ref_z, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(x_hat, x - trace.residuals[-1], atol=1e-5, rtol=1e-5)


def plain_mp_loss(sae, x, k):
    """The unrolled pursuit written the obvious way (dense correlations, autograd through all of it)."""
    atoms = sae.atoms()
    r = x - sae.b_dec
    for _ in range(k):
        c = torch.relu(r @ atoms.T)
        j = c.detach().argmax(-1)
        coef = c.gather(1, j[:, None])
        r = r - coef * atoms[j]
    return (r ** 2).mean()  # x - x_hat = r


def test_mp_gradients_match_plain_unrolled_pursuit():
    x = inputs(100)
    fast, plain = MPSAE(D, N, 5, seed=0), MPSAE(D, N, 5, seed=0)
    with torch.no_grad():
        for sae in (fast, plain):
            sae.b_dec.copy_(0.1 * torch.ones(D))
    x_hat, _ = fast(x)
    ((x - x_hat) ** 2).mean().backward()
    plain_mp_loss(plain, x, 5).backward()
    for (name, p), q in zip(fast.named_parameters(), plain.parameters()):
        torch.testing.assert_close(p.grad, q.grad, atol=1e-6, rtol=1e-4, msg=name)


def test_mp_codes_accumulate_when_an_atom_is_picked_twice():
    # Strongly correlated atoms make pursuit zig-zag and come back to atoms it already used.
    gen = torch.Generator().manual_seed(0)
    sae = MPSAE(4, 6, 6)
    with torch.no_grad():
        sae.W_dec.copy_(torch.nn.functional.normalize(torch.ones(6, 4) + 0.3 * torch.randn(6, 4, generator=gen), dim=1))
    x = torch.rand(200, 4, generator=gen) + 0.5
    trace, z = sae.trace(x), sae.encode(x)
    repeats = [i for i in range(200) if len(set(trace.indices[i].tolist())) < 6 and (trace.coefficients[i] > 0).all()]
    assert len(repeats) > 10
    for i in repeats:
        expected = torch.zeros(6).index_add_(0, trace.indices[i], trace.coefficients[i])
        torch.testing.assert_close(z[i], expected, atol=1e-5, rtol=1e-5)
        assert (z[i] != 0).sum() < 6


def test_mp_stops_when_no_atom_correlates_positively():
    sae = MPSAE(2, 2, 2)
    with torch.no_grad():
        sae.W_dec.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    x = torch.tensor([[-1.0, -2.0]])  # negatively correlated with both atoms
    x_hat, z = sae(x)
    assert (z == 0).all()
    torch.testing.assert_close(x_hat, torch.zeros_like(x))


def test_decoder_uses_unit_atoms_so_l1_cannot_be_dodged_by_rescaling():
    sae = ReLUSAE(D, N, l1_coeff=0.1, seed=0)
    x = inputs()
    x_hat, z = sae(x)
    penalty = sae.extra_losses(x, x_hat, z, None)["l1"]
    with torch.no_grad():
        sae.W_dec.mul_(10.0)  # a bigger decoder changes nothing: decode() normalises the atoms
    x_hat2, z2 = sae(x)
    torch.testing.assert_close(x_hat2, x_hat)
    torch.testing.assert_close(sae.extra_losses(x, x_hat2, z2, None)["l1"], penalty)


def test_auxk_loss_only_with_dead_latents_and_it_has_gradient():
    sae = TopKSAE(D, N, K, seed=0)
    x = inputs()
    x_hat, z = sae(x)
    assert sae.extra_losses(x, x_hat, z, torch.zeros(N, dtype=torch.bool)) == {}
    dead = torch.zeros(N, dtype=torch.bool)
    dead[:10] = True
    aux = sae.extra_losses(x, x_hat, z, dead)["auxk"]
    aux.backward()
    assert sae.W_enc.grad[:, :10].abs().sum() > 0
    assert sae.W_enc.grad[:, 10:].abs().sum() == 0  # only the dead latents are pushed


@pytest.mark.parametrize("family", FACTORIES)
def test_wrong_input_dimension_is_a_clear_error(family):
    sae = FACTORIES[family]()
    with pytest.raises(ValueError, match=r"d_in=16.*\(4, 15\)"):
        sae(torch.randn(4, 15))


@pytest.mark.parametrize("family", FACTORIES)
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_input_is_a_clear_error(family, bad):
    sae = FACTORIES[family]()
    x = inputs(8)
    x[3, 2] = bad
    with pytest.raises(ValueError, match="NaN or infinite"):
        sae.encode(x)


def test_integer_input_is_rejected():
    with pytest.raises(TypeError, match="floating-point"):
        ReLUSAE(D, N).encode(torch.ones(2, D, dtype=torch.long))


@pytest.mark.parametrize("cls", [TopKSAE, MPSAE])
@pytest.mark.parametrize("k", [0, -1, N + 1, 2.5, True])
def test_bad_k_is_a_clear_error(cls, k):
    with pytest.raises(ValueError, match=r"k must be an integer in \[1, n_latents=48\]"):
        cls(D, N, k)
    sae = cls(D, N, K)
    with pytest.raises(ValueError, match="k must be an integer"):
        sae.encode(inputs(4), k=k)


@pytest.mark.parametrize("kwargs", [dict(d_in=0, n_latents=4), dict(d_in=4, n_latents=-2), dict(d_in=4.0, n_latents=4)])
def test_bad_sizes_are_clear_errors(kwargs):
    with pytest.raises(ValueError, match="must be a positive integer"):
        ReLUSAE(**kwargs)


def test_bad_codes_shape_for_decode():
    with pytest.raises(ValueError, match="n_latents=48"):
        ReLUSAE(D, N).decode(torch.zeros(3, N - 1))


def test_negative_l1_is_rejected():
    with pytest.raises(ValueError, match="l1_coeff"):
        ReLUSAE(D, N, l1_coeff=-1.0)

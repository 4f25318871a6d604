"""Shapes, invariants and error messages of the SAE families."""

import pytest
import torch

from sae_lib import MPSAE, ReLUSAE, TopKSAE, saes

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
    # Five atoms in R³: pursuit zig-zags and comes back to atoms it already used, with real (not
    # rounding-size) coefficients.
    sae = MPSAE(3, 5, 6, seed=0).double()
    x = torch.randn(200, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    trace, z = sae.trace(x), sae.encode(x)
    repeats = [i for i in range(200) if len(set(trace.indices[i].tolist())) < 6 and (trace.coefficients[i] > 1e-3).all()]
    assert len(repeats) > 10
    for i in repeats:
        expected = torch.zeros(5, dtype=torch.float64).index_add_(0, trace.indices[i], trace.coefficients[i])
        torch.testing.assert_close(z[i], expected, atol=1e-10, rtol=1e-10)
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


def test_huge_but_finite_input_is_not_mistaken_for_nan():
    x = torch.full((4, D), 3e38)  # its sum overflows to inf; its values are finite
    for family in FACTORIES:
        assert FACTORIES[family]().encode(x).shape == (4, N)


def test_integer_input_is_rejected():
    with pytest.raises(TypeError, match="floating-point"):
        ReLUSAE(D, N).encode(torch.ones(2, D, dtype=torch.long))


@pytest.mark.parametrize("k", [0, -1, N + 1, 2.5, True])
def test_bad_k_is_a_clear_error_for_topk(k):
    with pytest.raises(ValueError, match=r"k must be an integer in \[1, n_latents=48\]"):
        TopKSAE(D, N, k)
    sae = TopKSAE(D, N, K)
    with pytest.raises(ValueError, match="k must be an integer"):
        sae.encode(inputs(4), k=k)


@pytest.mark.parametrize("k", [0, -1, 2.5, True])
def test_bad_k_is_a_clear_error_for_mp(k):
    with pytest.raises(ValueError, match=r"k must be a positive integer"):
        MPSAE(D, N, k)
    sae = MPSAE(D, N, K)
    with pytest.raises(ValueError, match=r"k must be a positive integer"):
        sae.encode(inputs(4), k=k)


def test_mp_may_take_more_steps_than_it_has_atoms():
    # Pursuit can pick an atom again, so k > n_latents is a valid budget (issue 14), at construction and
    # at inference; with real coefficients left to find, the extra steps are used.
    sae = MPSAE(3, 5, 12, seed=0).double()
    x = torch.randn(50, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    trace = sae.trace(x)
    assert trace.coefficients.shape[1] > 5 and (trace.coefficients[:, 5:] > 0).any()
    assert sae.encode(x, k=40).shape == (50, 5)


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


# ---------------------------------------------------------------- fast paths against plain references
# Each family's forward takes shortcuts (sae_lib.saes docstring). These plain versions are the formulas
# written the obvious way; autograd differentiates them, so they also define the reference gradients.


def plain_relu(sae, x):
    z = torch.relu((x - sae.b_dec) @ sae.W_enc + sae.b_enc)
    return z @ torch.nn.functional.normalize(sae.W_dec, dim=1) + sae.b_dec, z


def plain_topk(sae, x, k):
    pre = (x - sae.b_dec) @ sae.W_enc + sae.b_enc
    values, indices = pre.topk(k, dim=-1)
    z = torch.zeros_like(pre).scatter(-1, indices, torch.relu(values))
    return z @ torch.nn.functional.normalize(sae.W_dec, dim=1) + sae.b_dec, z


def plain_mp(sae, x, k):
    """Dense correlations at every step, autograd through every step, argmax indices held constant."""
    atoms = torch.nn.functional.normalize(sae.W_dec, dim=1)
    r = x.reshape(-1, sae.d_in) - sae.b_dec
    z = torch.zeros(r.shape[0], sae.n_latents, dtype=r.dtype)
    for _ in range(k):
        c = torch.relu(r @ atoms.T)
        j = c.detach().argmax(-1, keepdim=True)
        coef = c.gather(1, j)
        r = r - coef * atoms[j[:, 0]]
        z = z.scatter_add(1, j, coef)
    return (x.reshape(-1, sae.d_in) - r).reshape(x.shape), z.reshape(*x.shape[:-1], sae.n_latents)


def outputs_and_gradients(sae, forward, x, x_needs_grad):
    """``forward(x)``'s reconstruction and codes, and the gradients of a loss that reads both (so the
    codes' own gradient path is checked too), for every parameter and, if asked, for ``x``."""
    x = x.detach().clone().requires_grad_(x_needs_grad)
    sae.zero_grad(set_to_none=True)
    x_hat, z = forward(x)
    weights = torch.linspace(-1, 1, z.shape[-1], dtype=z.dtype)
    ((x_hat - x.detach()) ** 2).mean().add((z * weights).sum() / z.numel()).backward()
    grads = {name: p.grad.clone() for name, p in sae.named_parameters() if p.grad is not None}
    return x_hat.detach(), z.detach(), {**grads, **({"x": x.grad.clone()} if x_needs_grad else {})}


def assert_same_function(sae, fast, plain, x, tol):
    """Same codes, reconstructions and gradients; with data as in training (no gradient for ``x``) and
    with activations that carry one (as when an SAE sits inside a model being differentiated)."""
    for x_needs_grad in (False, True):
        x_hat, z, grads = outputs_and_gradients(sae, fast, x, x_needs_grad)
        ref_x_hat, ref_z, ref_grads = outputs_and_gradients(sae, plain, x, x_needs_grad)
        torch.testing.assert_close(z, ref_z, atol=tol, rtol=tol)
        torch.testing.assert_close(x_hat, ref_x_hat, atol=tol, rtol=tol)
        assert grads.keys() == ref_grads.keys()
        for name in grads:
            torch.testing.assert_close(grads[name], ref_grads[name], atol=tol, rtol=tol, msg=name)


def random_sae(family, d=16, n=48, k=5, dtype=torch.float64, seed=0):
    """An SAE with every parameter moved off its initial value, so no gradient term hides behind a zero."""
    sae = {"relu": lambda: ReLUSAE(d, n, seed=seed), "topk": lambda: TopKSAE(d, n, k, seed=seed),
           "mp": lambda: MPSAE(d, n, k, seed=seed)}[family]().to(dtype)
    gen = torch.Generator().manual_seed(seed + 100)
    with torch.no_grad():
        for p in sae.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=gen, dtype=dtype))
    return sae


@pytest.fixture(params=["small-model paths", "large-model paths"])
def size_route(request, monkeypatch):
    """Run a test on both sides of the size thresholds in sae_lib.saes: the plain encoder and dense TopK
    decoder that small models use, and CentredLinear and the sparse TopK decoder that large ones use."""
    if request.param == "large-model paths":
        monkeypatch.setattr(saes, "CENTRED_LINEAR_MIN_WORK", 0)
        monkeypatch.setattr(saes, "SPARSE_DECODE_RATIO", 1)
    return request.param


def plain_forward(sae, k=None):
    if isinstance(sae, ReLUSAE):
        return lambda x: plain_relu(sae, x)
    return lambda x: (plain_topk if isinstance(sae, TopKSAE) else plain_mp)(sae, x, k or sae.k)


@pytest.mark.parametrize("family", FACTORIES)
@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-10), (torch.float32, 2e-5)])
def test_fast_path_matches_plain_codes_reconstructions_gradients(family, dtype, tol, size_route):
    sae = random_sae(family, dtype=dtype)
    x = torch.randn(100, D, generator=torch.Generator().manual_seed(5), dtype=dtype)
    assert_same_function(sae, sae, plain_forward(sae), x, tol)


@pytest.mark.parametrize("family", FACTORIES)
def test_fast_path_matches_plain_with_leading_dimensions(family, size_route):
    sae = random_sae(family)
    x = torch.randn(3, 7, D, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    assert_same_function(sae, sae, plain_forward(sae), x, 1e-10)


@pytest.mark.parametrize("family", ["topk", "mp"])
@pytest.mark.parametrize("k", [1, 2, 9])
def test_fast_path_matches_plain_at_inference_k(family, k, size_route):
    sae = random_sae(family)
    x = torch.randn(64, D, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    assert_same_function(sae, lambda x: sae(x, k=k), plain_forward(sae, k), x, 1e-10)


@pytest.mark.parametrize("family", FACTORIES)
def test_fast_path_with_a_frozen_pre_bias(family, size_route):
    sae = random_sae(family)  # the tree chapters freeze b_dec
    sae.b_dec.requires_grad_(False)
    x = torch.randn(50, D, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
    assert_same_function(sae, sae, plain_forward(sae), x, 1e-10)


def test_float64_input_to_a_float32_sae_is_encoded_in_float32(size_route):
    for family in FACTORIES:
        sae = FACTORIES[family]()
        x = inputs(20).double()
        x_hat, z = sae(x)
        assert x_hat.dtype == z.dtype == torch.float32
        torch.testing.assert_close(z, sae.encode(x.float()))


def test_topk_forward_equals_decode_of_encode(size_route):
    sae = random_sae("topk")
    x = torch.randn(40, D, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    x_hat, z = sae(x)
    torch.testing.assert_close(x_hat, sae.decode(z), atol=1e-12, rtol=1e-12)


def test_decode_chosen_sums_repeated_indices_like_dense_codes():
    from sae_lib.saes import decode_chosen

    atoms = torch.randn(6, 4, dtype=torch.float64)
    indices = torch.tensor([[0, 0, 5], [2, 3, 2]])
    values = torch.tensor([[1.0, 2.0, -1.0], [0.5, 0.0, 4.0]], dtype=torch.float64)
    z = torch.zeros(2, 6, dtype=torch.float64).scatter_add(1, indices, values)
    torch.testing.assert_close(decode_chosen(values, indices, atoms), z @ atoms)


@pytest.mark.parametrize("x_needs_grad", [False, True])
def test_centred_linear_gradients(x_needs_grad):
    from sae_lib.saes import CentredLinear

    gen = torch.Generator().manual_seed(0)
    x, b_dec, W, b = (torch.randn(*shape, generator=gen, dtype=torch.float64) for shape in ((7, 4), (4,), (4, 5), (5,)))
    args = (x.requires_grad_(x_needs_grad), b_dec.requires_grad_(), W.requires_grad_(), b.requires_grad_())
    assert torch.autograd.gradcheck(CentredLinear.apply, args)


@pytest.mark.parametrize("encode_ratio, decode_ratio", [(1, 1), (1, 10**9), (10**9, 1)])
def test_relu_codes_sparse_or_dense(monkeypatch, encode_ratio, decode_ratio):
    """A large ReLU SAE keeps its codes sparse or dense by how many fire (SPARSE_ENCODE_RATIO), and
    decodes them sparsely only when few fire (SPARSE_DECODE_RATIO): every combination computes the
    plain function, gradients included."""
    monkeypatch.setattr(saes, "CENTRED_LINEAR_MIN_WORK", 0)
    monkeypatch.setattr(saes, "SPARSE_ENCODE_RATIO", encode_ratio)
    monkeypatch.setattr(saes, "SPARSE_DECODE_RATIO", decode_ratio)
    sae = random_sae("relu")
    x = torch.randn(100, D, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    assert 0 < (sae.encode(x) > 0).float().mean() < 1
    assert_same_function(sae, sae, plain_forward(sae), x, 1e-10)
    # the reconstruction is a function of the codes on every route: d loss / d z exists at the active
    # codes (TargetL0 reads it there; a sparse decode has no path through the zeros)
    x_hat, z = sae(x)
    (by_code,) = torch.autograd.grad((x - x_hat).pow(2).sum(), z)
    active = z > 0
    torch.testing.assert_close(by_code[active], (2 * (x_hat - x) @ sae.atoms().T)[active])


@pytest.mark.parametrize("x_needs_grad", [False, True])
def test_centred_select_gradients(x_needs_grad, monkeypatch):
    from sae_lib.saes import CentredSelect

    gen = torch.Generator().manual_seed(0)
    x, b_dec, W, b = (torch.randn(*shape, generator=gen, dtype=torch.float64) for shape in ((7, 4), (4,), (4, 9), (9,)))
    args = (x.requires_grad_(x_needs_grad), b_dec.requires_grad_(), W.requires_grad_(), b.requires_grad_())
    monkeypatch.setattr(saes, "SPARSE_ENCODE_RATIO", 1)  # "positive" kept sparse here; dense: below
    pre = (x - b_dec) @ W + b
    for rule, k, want in [("row_topk", 3, pre.topk(3, dim=-1)), ("batch_topk", 10, None), ("positive", 0, None)]:
        assert torch.autograd.gradcheck(lambda *a: CentredSelect.apply(*a, rule, k)[0], args)
        values, indices = CentredSelect.apply(*args, rule, k)
        if want is None:  # flat indices in increasing order
            kept = pre.reshape(-1).topk(k).indices.sort().values if k else (pre.reshape(-1) > 0).nonzero().squeeze(1)
            want = (pre.reshape(-1)[kept], kept)
        torch.testing.assert_close((values, indices), want)
    with pytest.raises(ValueError, match="rule must be"):
        CentredSelect.apply(*args, "top", 3)
    monkeypatch.setattr(saes, "SPARSE_ENCODE_RATIO", 10**9)
    assert torch.autograd.gradcheck(lambda *a: CentredSelect.apply(*a, "positive")[0], args)
    values, indices = CentredSelect.apply(*args, "positive")
    assert indices.numel() == 0
    torch.testing.assert_close(values, pre.clamp_min(0).reshape(-1))


# ---------------------------------------------------------------- MP's two selection routes
@pytest.fixture(params=["gram", "per-step"])
def mp_route(request, monkeypatch):
    """Run an MP test twice: with the Gram matrix, and with the fallback used for huge dictionaries."""
    if request.param == "per-step":
        monkeypatch.setattr(MPSAE, "gram_limit_bytes", 0)
    return request.param


def test_mp_uses_the_gram_matrix_only_when_it_is_cheaper_and_small():
    sae = MPSAE(D, N, K)
    assert sae._use_gram(batch=64, k=4, itemsize=4)
    assert not sae._use_gram(batch=64, k=1, itemsize=4)  # one step: nothing to update
    assert not sae._use_gram(batch=8, k=4, itemsize=4)  # n_latents ≥ (k-1)·batch: the Gram costs more
    huge = MPSAE(8, 46_080, 32)  # GPT-2-sized dictionary: an 8.5 GB Gram matrix
    assert not huge._use_gram(batch=4096, k=32, itemsize=4)


def test_mp_routes_match_plain_pursuit(mp_route):
    sae = random_sae("mp", k=8)
    x = torch.randn(120, D, generator=torch.Generator().manual_seed(10), dtype=torch.float64)
    assert sae._use_gram(120, 8, 8) == (mp_route == "gram")
    assert_same_function(sae, sae, plain_forward(sae), x, 1e-10)
    trace = sae.trace(x)
    x_hat, z = sae(x)
    torch.testing.assert_close(x_hat, x - trace.residuals[-1], atol=1e-10, rtol=1e-10)


def correlated_mp_sae():
    """Five atoms in R³, random inputs: pursuit zig-zags and picks atoms more than once."""
    sae = MPSAE(3, 5, 6, seed=0).double()
    return sae, torch.randn(200, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)


def test_mp_routes_match_plain_pursuit_when_atoms_repeat(mp_route):
    sae, x = correlated_mp_sae()
    trace = sae.trace(x)
    assert any(len(set(row.tolist())) < 6 for row in trace.indices[trace.coefficients.gt(1e-3).all(1)])
    assert_same_function(sae, sae, plain_forward(sae), x, 1e-10)


def test_mp_routes_match_plain_pursuit_when_it_stops_early(mp_route):
    sae = MPSAE(3, 3, 3).double()
    with torch.no_grad():
        sae.W_dec.copy_(torch.eye(3, dtype=torch.float64))
        sae.b_dec.copy_(torch.tensor([0.1, 0.0, -0.1], dtype=torch.float64))
    # Row 0 has one positive coordinate, row 1 two, row 2 none: pursuit stops after 1, 2 and 0 steps.
    x = torch.tensor([[2.0, -1.0, -3.0], [1.0, 0.5, -2.0], [-1.0, -1.0, -1.0]], dtype=torch.float64)
    x_hat, z = sae(x)
    assert (z != 0).sum(1).tolist() == [1, 2, 0]
    assert_same_function(sae, sae, plain_forward(sae), x, 1e-12)


def test_unrolled_pursuit_gradcheck(mp_route):
    from sae_lib.saes import UnrolledPursuit

    gen = torch.Generator().manual_seed(1)
    atoms = torch.nn.functional.normalize(torch.randn(10, 5, generator=gen, dtype=torch.float64), dim=1)
    residual = torch.randn(6, 5, generator=gen, dtype=torch.float64)
    use_gram = mp_route == "gram"

    def pursuit(residual, atoms):  # indices are constants: return only the differentiable outputs
        final, coefficients, _ = UnrolledPursuit.apply(residual, atoms, 4, use_gram, None, False)
        return final, coefficients

    assert torch.autograd.gradcheck(pursuit, (residual.requires_grad_(), atoms.requires_grad_()))


def test_mp_training_memory_does_not_grow_with_k_steps_of_graph():
    """The fast path keeps no per-step graph: what autograd saves does not depend on k."""
    saved = {}
    for k in (2, 16):
        sae = MPSAE(D, N, k, seed=0)
        sizes = []

        def pack(t):
            sizes.append(t.numel() * t.element_size())
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            sae(inputs(128))
        saved[k] = sum(sizes)
    # What grows with k is a coefficient and an index per step and row (under 24 bytes: the index is kept by
    # the pursuit and by the scatter into z), never a residual per step (d_in · 4 = 64 bytes more per step and row).
    assert saved[16] - saved[2] <= (16 - 2) * 128 * 24


def test_relu_l1_term_equals_the_plain_absolute_sum_in_value_and_gradient():
    sae = random_sae("relu")
    sae.l1_coeff = 0.3
    x = torch.randn(30, D, generator=torch.Generator().manual_seed(11), dtype=torch.float64)
    grads = []
    for l1 in (lambda z: sae.extra_losses(x, None, z, None)["l1"], lambda z: 0.3 * z.abs().sum(-1).mean()):
        sae.zero_grad(set_to_none=True)
        value = l1(sae.encode(x))
        value.backward()
        grads.append((value.detach(), {n: p.grad.clone() for n, p in sae.named_parameters() if p.grad is not None}))
    torch.testing.assert_close(grads[0][0], grads[1][0])
    for name in grads[1][1]:
        torch.testing.assert_close(grads[0][1][name], grads[1][1][name], msg=name)


# ---------------------------------------------------------------- audit (issue 14): settings, numpy integers, casts, AuxK scale
def test_numpy_integers_are_accepted_wherever_an_int_is():
    import numpy as np

    i = np.int64
    for sae in (ReLUSAE(i(D), i(N), seed=i(0)), TopKSAE(i(D), i(N), i(K), k_aux=i(3), seed=i(0)),
                MPSAE(i(D), i(N), i(K), seed=i(0))):
        assert all(type(v) in (int, float, str, bool, type(None)) for v in sae.config().values())  # JSON
        assert sae.encode(inputs(4)).shape == (4, N)
        if not isinstance(sae, ReLUSAE):
            assert ((sae.encode(inputs(4), k=i(2)) != 0).sum(1) <= 2).all()
    assert torch.equal(ReLUSAE(i(D), i(N), seed=i(3)).W_dec, ReLUSAE(D, N, seed=3).W_dec)


@pytest.mark.parametrize("build, message", [
    (lambda: ReLUSAE(D, N, l1_coeff=float("inf")), r"l1_coeff must be a finite number >= 0, got inf"),
    (lambda: ReLUSAE(D, N, l1_coeff=float("nan")), r"l1_coeff must be a finite number >= 0, got nan"),
    (lambda: ReLUSAE(D, N, l1_coeff="0.1"), r"l1_coeff must be a number"),
    (lambda: TopKSAE(D, N, K, auxk_coeff=float("inf")), r"auxk_coeff must be a finite number >= 0"),
    (lambda: TopKSAE(D, N, K, auxk_coeff=-1.0), r"auxk_coeff must be a finite number >= 0"),
    (lambda: TopKSAE(D, N, K, k_aux=0), r"k_aux must be a positive integer"),
    (lambda: ReLUSAE(D, N, seed=1.5), r"seed must be an integer"),
])
def test_nonsense_sae_settings_are_clear_errors(build, message):
    with pytest.raises((ValueError, TypeError), match=message):
        build()


@pytest.mark.parametrize("family", FACTORIES)
def test_input_beyond_the_sae_dtype_is_checked_after_the_cast(family):
    x = inputs(4).double()
    x[1, 2] = 1e300  # finite in float64, inf once cast to the SAE's float32
    with pytest.raises(ValueError, match="1 NaN or infinite"):
        FACTORIES[family]().encode(x)


def test_auxk_to_mse_ratio_does_not_depend_on_the_datas_scale():
    sae = TopKSAE(D, N, K, seed=0)
    dead = torch.zeros(N, dtype=torch.bool)
    dead[:20] = True
    ratios = []
    for scale in (0.1, 1.0, 10.0):
        x = scale * inputs()
        x_hat, z = sae(x)
        mse = (x_hat - x).pow(2).mean()
        ratios.append((sae.extra_losses(x, x_hat, z, dead)["auxk"] / mse).item())
    assert ratios[0] == pytest.approx(ratios[1], rel=1e-4) and ratios[2] == pytest.approx(ratios[1], rel=1e-4)


# ---------------------------------------------------------------- MP at many steps, and its stopping rules
def test_mp_at_k_far_above_d_in_adds_no_noise_level_atoms():
    # An orthonormal dictionary and inputs with three positive coordinates: three steps explain x exactly.
    # Later steps used to pick atoms that correlate with rounding noise (coefficients ~1e-8), so the code
    # of every row filled up with noise-level entries (issue 14). Now they stop at the noise floor.
    sae = MPSAE(8, 8, 64)
    with torch.no_grad():
        sae.W_dec.copy_(torch.linalg.qr(torch.randn(8, 8, generator=torch.Generator().manual_seed(0))).Q)
    codes = torch.zeros(100, 8)
    codes[:, :3] = torch.rand(100, 3, generator=torch.Generator().manual_seed(1)) + 0.5
    x = codes @ sae.atoms().detach()
    z = sae.encode(x)
    assert ((z != 0).sum(1) == 3).all()
    torch.testing.assert_close(z, codes, atol=1e-5, rtol=1e-5)


def test_mp_codes_have_no_entry_below_the_noise_floor():
    from sae_lib.saes import pursuit_noise_floor

    sae = MPSAE(32, 256, 128, seed=0)
    x = torch.randn(300, 32, generator=torch.Generator().manual_seed(1))
    z = sae.encode(x)
    smallest = torch.where(z > 0, z, torch.inf).amin(1)
    assert (smallest > pursuit_noise_floor(torch.float32) * x.norm(dim=1)).all()


def test_mp_gram_and_step_by_step_routes_pick_the_same_atoms_at_many_steps(monkeypatch):
    # d_in = 32, k = 128: the Gram route's rounding used to grow until, with the residual near 1e-4 of the
    # input, it decided which atom won (5% of these rows picked other atoms than the step-by-step route).
    # What is left are exact near-ties between two atoms' correlations, where any two float programs may
    # differ: we allow 1% of the rows.
    sae = MPSAE(32, 256, 128, seed=0)
    x = torch.randn(2000, 32, generator=torch.Generator().manual_seed(1))
    assert sae._use_gram(2000, 128, 4)
    with torch.no_grad():
        x_hat_gram, z_gram = sae(x)
        monkeypatch.setattr(MPSAE, "gram_limit_bytes", 0)
        x_hat_steps, z_steps = sae(x)
    same_support = ((z_gram != 0) == (z_steps != 0)).all(1).float().mean().item()
    assert same_support >= 0.99
    assert ((x_hat_gram - x_hat_steps).norm(dim=1) <= 1e-2 * x.norm(dim=1)).all()


def test_mp_codes_do_not_depend_on_batch_size():
    # A batch of 2000 takes the Gram route, one row at a time the step-by-step route.
    sae = MPSAE(32, 256, 128, seed=0)
    x = torch.randn(100, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        together = sae.encode(torch.cat([x, torch.randn(1900, 32, generator=torch.Generator().manual_seed(3))]))[:100]
        alone = torch.cat([sae.encode(row[None]) for row in x])
    assert sae._use_gram(2000, 128, 4) and not sae._use_gram(1, 128, 4)
    assert ((together != 0) == (alone != 0)).all(1).float().mean().item() >= 0.99


def test_mp_threshold_stops_each_row_once_its_residual_is_small():
    sae = MPSAE(16, 64, 40, threshold=0.2, seed=0).double()
    x = torch.randn(300, 16, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    trace = sae.trace(x)
    norms = trace.residuals.norm(dim=-1) / x.norm(dim=-1)  # (steps + 1, batch)
    steps = (trace.coefficients > 0).sum(1)
    # Each row took steps while its residual was at least 0.2 of its norm, and stopped at the first below.
    for b in range(300):
        n = int(steps[b])
        assert (norms[:n, b] >= 0.2).all() and (n == sae.k or norms[n, b] < 0.2)
    assert (steps < sae.k).float().mean() > 0.5
    assert steps.min() < steps.max()  # L0 comes out of the data
    fixed = MPSAE(16, 64, 40, seed=0).double()
    assert ((fixed.encode(x) != 0).sum(1) >= (sae.encode(x) != 0).sum(1)).all()
    assert_same_function(sae, sae, lambda x: plain_mp_stopping(sae, x), x[:30], 1e-10)


def test_mp_stop_on_repeat_stops_before_an_atom_is_used_again():
    sae = MPSAE(3, 5, 12, stop_on_repeat=True, seed=0).double()
    x = torch.randn(200, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    trace = sae.trace(x)
    for b in range(200):
        used = trace.indices[b][trace.coefficients[b] > 0].tolist()
        assert len(used) == len(set(used))  # no atom twice
    free = MPSAE(3, 5, 12, seed=0).double().trace(x)
    assert any(len(set(r.tolist())) < len(r) for r in free.indices)  # without the rule, atoms repeat
    assert_same_function(sae, sae, lambda x: plain_mp_stopping(sae, x), x, 1e-10)


def test_mp_stopping_rules_survive_save_and_load(tmp_path):
    from sae_lib import load_sae, save_sae

    sae = MPSAE(8, 16, 6, threshold=0.05, stop_on_repeat=True, seed=0)
    loaded = load_sae(save_sae(sae, tmp_path / "mp"))
    assert (loaded.threshold, loaded.stop_on_repeat) == (0.05, True)


@pytest.mark.parametrize("bad, error", [(0, ValueError), (1.0, ValueError), (-0.1, ValueError),
                                        (float("nan"), ValueError), ("0.05", TypeError), (True, TypeError)])
def test_mp_bad_threshold_is_a_clear_error(bad, error):
    with pytest.raises(error, match=r"threshold must be .*a finite number in \(0, 1\)"):
        MPSAE(D, N, K, threshold=bad)


def plain_mp_stopping(sae, x):
    """The stopping rules written the obvious way: dense steps, autograd, one row at a time."""
    outs = [plain_mp_row(sae, row) for row in x]
    return torch.stack([o[0] for o in outs]), torch.stack([o[1] for o in outs])


def plain_mp_row(sae, x):
    atoms = torch.nn.functional.normalize(sae.W_dec, dim=1)
    r = x - sae.b_dec
    start = r.detach().norm()
    z = torch.zeros(sae.n_latents, dtype=r.dtype)
    used = set()
    for _ in range(sae.k):
        if sae.threshold is not None and r.detach().norm() < sae.threshold * start:
            break
        c = torch.relu(atoms @ r)
        j = int(c.detach().argmax())
        if c[j].item() <= 1.5e-8 * start or (sae.stop_on_repeat and j in used):
            break
        used.add(j)
        r = r - c[j] * atoms[j]
        z = z + torch.nn.functional.one_hot(torch.tensor(j), sae.n_latents).to(r.dtype) * c[j]
    return x - r, z

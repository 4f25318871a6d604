import pytest
import torch

from sae_lib import ReLUSAE, cosine_matrix, evaluate, fvu, l0, match_atoms, mean_max_cosine, r_squared, random_dictionary


def test_l0_counts_nonzeros_per_row():
    z = torch.tensor([[0.0, 1.0, 2.0], [0.0, 0.0, 0.0], [3.0, 0.0, 0.0]])
    assert l0(z) == pytest.approx(1.0)


def test_fvu_and_r2():
    x = torch.randn(500, 8)
    assert fvu(x, x) == 0.0
    assert fvu(x, x.mean(0).expand_as(x)) == pytest.approx(1.0)
    assert r_squared(x, x + 0.0) == 1.0
    assert fvu(x, x + 0.1 * torch.randn(500, 8)) == pytest.approx(0.01, rel=0.2)


def test_evaluate_counts_alive_latents_and_agrees_with_direct_metrics():
    sae = ReLUSAE(8, 16, seed=0)
    with torch.no_grad():
        sae.b_enc[:4] = -100.0  # these four can never fire
    x = torch.randn(1000, 8)
    result = evaluate(sae, x, batch_size=64)
    x_hat, z = sae(x)
    assert result["dead"] == 4 and result["alive"] == 12
    assert result["l0"] == pytest.approx(l0(z), rel=1e-5)
    assert result["fvu"] == pytest.approx(fvu(x, x_hat), rel=1e-4)
    assert result["r2"] == pytest.approx(1 - result["fvu"])


def test_match_atoms_finds_a_permutation_and_respects_sign():
    true = random_dictionary(10, 6, seed=0)
    perm = torch.randperm(10, generator=torch.Generator().manual_seed(1))
    learned = torch.cat([true[perm], -true[:3]])
    match = match_atoms(learned, true)
    assert match.mean == pytest.approx(1.0, abs=1e-6)
    assert (learned[match.learned_index] - true[match.true_index]).abs().max() < 1e-6
    axes = torch.eye(6)
    assert match_atoms(-axes, axes).mean <= 0.0  # an atom pointing the other way is a different feature


def test_matching_is_one_to_one_while_mmcs_is_not():
    true = random_dictionary(4, 6, seed=0)
    learned = torch.cat([true[:1]] * 4)  # one true atom, repeated
    assert match_atoms(learned, true).fraction_above(0.99) == pytest.approx(0.25)
    assert mean_max_cosine(learned, true) < 1.0
    assert mean_max_cosine(true, true) == pytest.approx(1.0)


def test_match_needs_enough_learned_atoms():
    with pytest.raises(ValueError, match="only 3 learned"):
        match_atoms(torch.randn(3, 5), torch.randn(4, 5))
    with pytest.raises(ValueError, match="same d"):
        match_atoms(torch.randn(3, 5), torch.randn(2, 4))


def test_cosine_matrix_is_scale_invariant():
    a, b = torch.randn(5, 3), torch.randn(7, 3)
    torch.testing.assert_close(cosine_matrix(3 * a, 0.5 * b), cosine_matrix(a, b))


def test_frontier_at_interpolates_in_log_l0_and_refuses_to_extrapolate():
    from sae_lib import frontier_at

    l0s, values = [8.0, 2.0, 4.0], [0.1, 0.3, 0.2]  # unsorted on purpose
    assert frontier_at(l0s, values, 4.0) == pytest.approx(0.2)
    assert frontier_at(l0s, values, 2 ** 1.5) == pytest.approx(0.25)  # halfway in log L0
    assert frontier_at(l0s, values, 1.0) != frontier_at(l0s, values, 1.0)  # NaN outside the range


def test_feature_response_is_one_for_a_faithful_sae_and_less_when_shrunk():
    from sae_lib import MPSAE, feature_response

    true = torch.eye(6)
    sae = MPSAE(6, 6, 1)
    with torch.no_grad():
        sae.W_dec.copy_(true)  # the perfect dictionary: MP gives back exactly what it gets
    torch.testing.assert_close(feature_response(sae, true, 1.3), torch.ones(6))
    relu = ReLUSAE(6, 6, seed=0)
    with torch.no_grad():
        relu.W_dec.copy_(true)
        relu.W_enc.copy_(true)
        relu.b_enc.fill_(-0.25)  # a threshold: codes are magnitude - 0.25
    torch.testing.assert_close(feature_response(relu, true, 1.0), torch.full((6,), 0.75))
    with pytest.raises(ValueError, match="magnitude must be positive"):
        feature_response(relu, true, 0.0)

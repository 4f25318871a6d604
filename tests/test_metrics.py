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


def test_modality_score_on_known_cases():
    from sae_lib.metrics import modality_score

    is_image = torch.tensor([True, True, False, False, False])
    z = torch.tensor([[1.0, 0.0, 1.0, 0.0], [1.0, 0.0, 1.0, 0.0], [0.0, 2.0, 1.0, 0.0], [0.0, 2.0, 1.0, 0.0],
                      [0.0, 2.0, 1.0, 0.0]])
    score = modality_score(z, is_image)
    assert score[:3].tolist() == [1.0, 0.0, 0.5] and score[3].isnan()
    with pytest.raises(ValueError, match="both modalities"):
        modality_score(z, torch.ones(5, dtype=torch.bool))
    with pytest.raises(ValueError, match="non-negative"):
        modality_score(-z, is_image)
    with pytest.raises(ValueError, match="one entry per row"):
        modality_score(z, is_image[:3])


def test_effective_rank_and_coactivation():
    from sae_lib.metrics import coactivation, effective_rank

    assert effective_rank(torch.eye(7)) == pytest.approx(7.0)
    assert effective_rank(torch.outer(torch.arange(1.0, 5), torch.arange(1.0, 4))) == pytest.approx(1.0)
    assert 1.0 < effective_rank(torch.diag(torch.tensor([1.0, 0.1]))) < 2.0
    z = torch.tensor([[1.0, 2.0, 0.0], [0.0, 3.0, 0.0], [0.0, 0.0, 0.0], [5.0, 0.0, 0.0]])
    c = coactivation(z)
    torch.testing.assert_close(c, torch.tensor([[0.5, 0.25, 0.0], [0.25, 0.5, 0.0], [0.0, 0.0, 0.0]]))


def test_babel_and_support_babel():
    from sae_lib.metrics import babel, support_babel

    assert babel(torch.eye(5), 2) == pytest.approx(0.0)
    atoms = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]])  # |cos|: (0,1) .6, (0,2) 0, (1,2) .8
    assert babel(atoms, 1) == pytest.approx(0.8) and babel(atoms, 2) == pytest.approx(1.4)
    z = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 1.0], [0.0, 2.0, 0.0], [1.0, 1.0, 1.0]])
    torch.testing.assert_close(support_babel(atoms, z), torch.tensor([0.6, 0.0, 0.0, 1.4]))
    big = random_dictionary(3000, 8, seed=0)  # more atoms than one block: the blocked loop must agree
    cos = (big @ big.T).abs().fill_diagonal_(0)
    assert babel(big, 3) == pytest.approx(cos.topk(3, dim=1).values.sum(1).max().item(), rel=1e-5)
    with pytest.raises(ValueError, match="p must be"):
        babel(atoms, 3)
    with pytest.raises(ValueError, match="need atoms"):
        support_babel(atoms, z[:, :2])


def test_linear_probe_reads_linear_labels_and_not_noise():
    from sae_lib.metrics import linear_probe_accuracy

    gen = torch.Generator().manual_seed(0)
    labels = [i % 3 for i in range(150)]
    centres = 3 * torch.randn(3, 20, generator=gen)
    x = centres[labels] + torch.randn(150, 20, generator=gen)
    assert linear_probe_accuracy(x, labels) > 0.95
    noise = torch.randn(150, 20, generator=gen)
    assert linear_probe_accuracy(noise, labels) < 0.55  # chance is 1/3
    with pytest.raises(ValueError, match="two classes"):
        linear_probe_accuracy(x, [0] * 150)
    with pytest.raises(ValueError, match="n labels"):
        linear_probe_accuracy(x, labels[:10])

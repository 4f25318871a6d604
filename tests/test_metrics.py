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
    with pytest.raises(ValueError, match="magnitude must be a finite number > 0"):
        feature_response(relu, true, 0.0)


# ---------------------------------------------------------------- hierarchy metrics
def _tree_and_dictionary(correlation=0.3):
    from sae_lib import conditionally_orthogonal_dictionary, paper_tree

    tree = paper_tree()
    return tree, conditionally_orthogonal_dictionary(tree, 20, correlation, seed=0)


def _absorbed(tree, dictionary):
    """Every child atom replaced by the normalised sum of child and parent: full absorption."""
    absorbed = dictionary.clone()
    for child in tree.child_indices:
        absorbed[child] = torch.nn.functional.normalize(dictionary[child] + dictionary[tree.parent[child]], dim=0)
    return absorbed


def test_aligned_atoms_undoes_a_permutation_and_scaling():
    from sae_lib import aligned_atoms

    _, true = _tree_and_dictionary()
    perm = torch.randperm(20, generator=torch.Generator().manual_seed(0))
    learned = torch.cat([3.0 * true[perm], random_dictionary(5, 20, seed=1)])  # extra atoms are ignored
    torch.testing.assert_close(aligned_atoms(learned, true), true)


def test_absorption_score_is_zero_when_faithful_and_high_when_absorbed():
    from sae_lib import absorption_score

    tree, true = _tree_and_dictionary()
    assert abs(absorption_score(true, true, tree.parent)) < 1e-6
    assert absorption_score(_absorbed(tree, true), true, tree.parent) == pytest.approx(1 / 2**0.5, abs=1e-5)
    with pytest.raises(ValueError, match="parent has 3 entries"):
        absorption_score(true, true, (-1, 0, 0))
    with pytest.raises(ValueError, match="at least one feature with a parent"):
        absorption_score(true, true, (-1,) * 20)


def test_gram_errors_separate_levels():
    from sae_lib import gram_errors

    tree, true = _tree_and_dictionary(0.3)
    groups, pairs = tree.sibling_groups, tree.ancestor_pairs()
    exact = gram_errors(true, true, groups, pairs)
    assert exact["flat"] < 1e-6 and exact["hierarchical"] < 1e-6
    absorbed = gram_errors(_absorbed(tree, true), true, groups, pairs)
    assert absorbed["hierarchical"] == pytest.approx(1 / 2**0.5, abs=1e-5)  # parent-child cosines went 0 → 0.71
    _, uncorrelated = _tree_and_dictionary(0.0)  # right hierarchy, wrong sibling correlations
    flat_only = gram_errors(uncorrelated, true, groups, pairs)
    assert flat_only["flat"] == pytest.approx(0.3, abs=1e-5) and flat_only["hierarchical"] < 1e-6


def test_error_vs_k_per_family():
    from sae_lib import MPSAE, TopKSAE, error_vs_k

    x = torch.randn(300, 8, generator=torch.Generator().manual_seed(0))
    mp, topk, relu = MPSAE(8, 16, 2, seed=0), TopKSAE(8, 16, 2, seed=0), ReLUSAE(8, 16, seed=0)
    ks = list(range(1, 17))
    mp_errors = error_vs_k(mp, x, ks)
    assert all(b <= a + 1e-6 for a, b in zip(mp_errors, mp_errors[1:])), "MP's error never increases with k"
    assert error_vs_k(topk, x, [3]) == [pytest.approx(evaluate(topk, x, k=3)["fvu"], rel=1e-5)]
    relu_errors = error_vs_k(relu, x, ks)
    n_active = int((relu.encode(x) > 0).sum(-1).max())
    assert relu_errors[-1] == pytest.approx(evaluate(relu, x)["fvu"], rel=1e-5)
    assert all(e == pytest.approx(relu_errors[-1], rel=1e-6) for e in relu_errors[n_active - 1:]), "flat past its L0"
    with pytest.raises(ValueError, match="k must be an integer"):
        error_vs_k(relu, x, [17])


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


# ---------------------------------------------------------------- audit (issue 14)
def test_absorption_does_not_let_opposite_signs_cancel():
    from sae_lib import absorption_score

    true = torch.eye(6)[:3]  # a parent (0) and its two children (1, 2)
    lean = 0.51
    other = (1 - lean**2) ** 0.5
    learned = torch.stack([true[0], other * true[1] + lean * true[0], other * true[2] - lean * true[0]])
    assert absorption_score(learned, true, (-1, 0, 0)) == pytest.approx(0.51, abs=1e-6)


@pytest.mark.parametrize("rows", [0, 1])
def test_evaluate_on_fewer_than_two_rows_is_a_clear_error(rows):
    with pytest.raises(ValueError, match="at least 2 rows"):
        evaluate(ReLUSAE(8, 16, seed=0), torch.randn(rows, 8))


def test_fvu_of_constant_data_is_a_clear_error():
    x = torch.ones(10, 8)
    with pytest.raises(ValueError, match="no variance"):
        fvu(x, x + 0.1)
    with pytest.raises(ValueError, match="no variance"):
        evaluate(ReLUSAE(8, 16, seed=0), x)


def test_evaluate_batch_size_is_checked():
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        evaluate(ReLUSAE(8, 16, seed=0), torch.randn(10, 8), batch_size=0)


def test_firing_rates_agree_with_evaluate_counts():
    import torch

    from sae_lib import TopKSAE
    from sae_lib.metrics import evaluate, firing_rates

    sae = TopKSAE(8, 32, k=3, seed=0)
    x = torch.randn(500, 8)
    rates = firing_rates(sae, x, batch_size=64)
    counts = evaluate(sae, x, counts=True)["fire_counts"]
    assert torch.equal(rates, counts.double() / 500)
    assert abs(rates.sum().item() - 3.0) < 1e-9  # exactly k latents per row
    assert "fire_counts" not in evaluate(sae, x)


def test_bootstrap_interval_covers_a_known_mean_and_keeps_pairs():
    import pytest
    import torch

    from sae_lib.metrics import bootstrap_interval

    g = torch.Generator().manual_seed(0)
    a = torch.randn(400, generator=g) + 3.0
    low, high = bootstrap_interval(lambda s: s.mean(), a)
    assert low < a.mean().item() < high and high - low < 0.4
    paired = a + 0.01  # a tiny, perfectly paired difference has a tiny interval
    low, high = bootstrap_interval(lambda s, o: s.mean() - o.mean(), paired, a)
    assert abs(low - 0.01) < 1e-5 and abs(high - 0.01) < 1e-5
    with pytest.raises(ValueError, match="one length"):
        bootstrap_interval(lambda s, o: 0, a, a[:10])

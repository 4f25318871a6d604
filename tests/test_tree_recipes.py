"""The recipe chapters 4 and 5 share: SAEs trained on the tree they are given, without a pre-bias,
deterministically, and scored against the tree's true dictionary."""

import pytest
import torch

from sae_lib import (hierarchical_data, median_and_range, paper_tree, run_on_tree, train_on_tree, tree_sae, tree_scores,
                     tune_l1)


@pytest.mark.parametrize("family", ["relu", "topk", "mp", "batchtopk", "matryoshka"])
def test_tree_recipe_trains_without_a_pre_bias_and_is_deterministic(family):
    data = hierarchical_data(4_000, correlation=0.3, seed=0)
    runs = []
    for _ in range(2):
        sae = tree_sae(family, 20, seed=1)
        with torch.no_grad():
            sae.b_dec.fill_(0.5)  # whatever it held, the recipe trains without a pre-bias
        history = train_on_tree(sae, data.x, steps=60, seed=2, progress=False)
        assert not sae.b_dec.requires_grad and torch.equal(sae.b_dec, torch.zeros(20))
        runs.append((sae.W_dec.detach().clone(), history.loss))
    assert torch.equal(runs[0][0], runs[1][0]) and runs[0][1] == runs[1][1]
    assert runs[0][1][-1] < runs[0][1][0]
    scores = tree_scores(sae, hierarchical_data(500, correlation=0.3, seed=9, dictionary_seed=0))
    assert set(scores) == {"mean_cos", "min_cos", "absorption", "flat", "hierarchical", "fvu", "l0", "dead"}
    assert -1 <= scores["min_cos"] <= scores["mean_cos"] <= 1


def test_run_on_tree_pairs_variants_on_shared_data():
    runs = run_on_tree(paper_tree(), {"relu": {}, "topk k=1": {"family": "topk", "k": 1}}, steps=20, seeds=[3, 4],
                       n_test=300, correlation=0.6, progress=False)
    assert [(r.name, r.seed) for r in runs] == [("relu", 3), ("topk k=1", 3), ("relu", 4), ("topk k=1", 4)]
    assert runs[1].sae.k == 1 and len(runs[0].test) == 300 and runs[0].test.correlation == 0.6
    assert runs[0].test is runs[1].test and not torch.equal(runs[0].test.dictionary, runs[2].test.dictionary)
    assert runs[0].test.dictionary.equal(hierarchical_data(1, correlation=0.6, seed=3).dictionary)
    assert runs[0].scores == tree_scores(runs[0].sae, runs[0].test)


def test_run_on_tree_trains_on_the_tree_it_is_given():
    small = paper_tree(n_parents=1, n_children=2, n_leaves=3)
    run = run_on_tree(small, {"mp": {}}, steps=5, seeds=[0], n_test=50, progress=False)[0]
    assert run.test.tree is small and run.sae.n_latents == small.n_features == 6


def test_tree_sae_settings_and_errors():
    assert tree_sae("topk", 20).k == 2 and tree_sae("mp", 20).k == 3 and tree_sae("mp", 20, k=5).k == 5
    assert tree_sae("relu", 20, 40).n_latents == 40
    with pytest.raises(ValueError, match="unknown SAE family"):
        tree_sae("jumprelu", 20)


def test_tune_l1_bisects_toward_the_target_l0():
    result = tune_l1(paper_tree(), 1.36, steps=80, probes=4, n_test=500, correlation=0.3)
    weights = [w for w, _ in result.probes]
    assert len(weights) == 4 and len(set(weights)) == 4
    for (w, l0), (w_next, _) in zip(result.probes, result.probes[1:]):
        assert (w_next > w) == (l0 > 1.36)  # too many active latents: the next probe penalises more
    with pytest.raises(ValueError, match="low < high"):
        tune_l1(paper_tree(), 1.36, steps=10, low=0.1, high=0.01)


def test_median_and_range_reports_the_spread_over_seeds():
    assert median_and_range([0.5, 0.1, 0.3]) == "0.30 [0.10 – 0.50]"
    assert median_and_range([0.01234], digits=3) == "0.012 [0.012 – 0.012]"
    assert median_and_range([0.2, 0.4]) == "0.30 [0.20 – 0.40]"  # an even count: the middle two averaged
    with pytest.raises(ValueError, match="at least one"):
        median_and_range([])


def test_held_out_data_follows_the_one_convention():
    from sae_lib import held_out_seed

    run = run_on_tree(paper_tree(), {"topk": {}}, steps=2, seeds=[5], n_test=40, progress=False, correlation=0.3)[0]
    expected = hierarchical_data(40, correlation=0.3, seed=held_out_seed(5), dictionary_seed=5)
    assert held_out_seed(5) == 1_000_005 and torch.equal(run.test.x, expected.x)

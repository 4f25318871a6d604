import pytest
import torch

from sae_lib import superposition_data


def test_data_is_codes_times_dictionary():
    data = superposition_data(1000, n_features=20, d=8, p_active=0.1, seed=0)
    assert data.x.shape == (1000, 8) and data.codes.shape == (1000, 20) and data.dictionary.shape == (20, 8)
    torch.testing.assert_close(data.x, data.codes @ data.dictionary)
    torch.testing.assert_close(data.dictionary.norm(dim=1), torch.ones(20))
    assert (data.codes >= 0).all()
    assert (data.codes > 0).float().mean().item() == pytest.approx(0.1, abs=0.01)


def test_per_feature_probabilities_and_noise():
    p = torch.linspace(0.01, 0.5, 10)
    data = superposition_data(20_000, n_features=10, d=6, p_active=p, noise=0.1, seed=0)
    torch.testing.assert_close((data.codes > 0).float().mean(0), p, atol=0.015, rtol=0)
    residual = data.x - data.codes @ data.dictionary
    assert residual.std().item() == pytest.approx(0.1, rel=0.05)


def test_seeded_and_reproducible():
    a = superposition_data(100, n_features=5, d=3, seed=4)
    b = superposition_data(100, n_features=5, d=3, seed=4)
    assert torch.equal(a.x, b.x)
    c = superposition_data(100, n_features=5, d=3, seed=5, dictionary=a.dictionary)
    assert torch.equal(c.dictionary, a.dictionary) and not torch.equal(c.x, a.x)


@pytest.mark.parametrize("kwargs, message", [
    (dict(p_active=0.0), "p_active"),
    (dict(p_active=1.5), "p_active"),
    (dict(magnitude=(0.0, 1.0)), "magnitude"),
    (dict(noise=-1.0), "noise"),
    (dict(n_features=0), "n_features"),
    (dict(dictionary=torch.ones(3, 3)), "dictionary must have shape"),
])
def test_bad_settings_are_clear_errors(kwargs, message):
    settings = dict(n_features=5, d=3) | kwargs
    with pytest.raises(ValueError, match=message):
        superposition_data(10, **settings)


def test_paired_modalities_share_codes_and_differ_by_the_gap():
    from sae_lib.synthetic import paired_modalities

    toy = paired_modalities(2000, n_concepts=12, d=16, gap=2.0, seed=0)
    assert toy.x.shape == (4000, 16) and toy.codes.shape == (2000, 12) and toy.offsets.shape == (2, 16)
    torch.testing.assert_close(toy.x.norm(dim=1), torch.ones(4000))
    assert toy.is_image[:2000].all() and not toy.is_image[2000:].any()
    images, texts = toy.x[:2000], toy.x[2000:]
    assert (images.mean(0) - texts.mean(0)).norm() > 0.8
    no_gap = paired_modalities(2000, n_concepts=12, d=16, gap=0.0, seed=0)
    assert (no_gap.x[:2000].mean(0) - no_gap.x[2000:].mean(0)).norm() < 0.1
    assert (no_gap.x[:2000] * no_gap.x[2000:]).sum(1).mean() > (images * texts).sum(1).mean()
    with pytest.raises(ValueError, match="non-negative"):
        paired_modalities(10, n_concepts=4, d=4, gap=-1.0)

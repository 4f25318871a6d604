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

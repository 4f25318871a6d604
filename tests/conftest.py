import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _small_and_deterministic():
    """Unit tests are about behaviour, not speed: one thread keeps CPU results bit-reproducible."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def toy_data():
    from sae_lib import superposition_data

    return superposition_data(4000, n_features=24, d=12, p_active=0.1, seed=0)

"""The e2e paper's released SAEs load as sae_lib SAEs that compute the same function."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from planted_hub import plant_paper_saes
from sae_lib.paper_saes import file_stem, from_e2e_sae_state

ROOT = Path(__file__).resolve().parents[1]


def e2e_sae_forward(state: dict, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """What their library's SAE computes, written from its definition: codes from x itself, atoms the
    decoder's columns at unit length."""
    c = F.relu(x @ state["encoder.weight"].T + state["encoder.bias"])
    return c @ F.normalize(state["decoder.weight"], dim=0).T + state["decoder.bias"], c


def random_state(n_latents=48, d_in=16, seed=0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {"encoder.weight": torch.randn(n_latents, d_in, generator=g), "encoder.bias": torch.randn(n_latents, generator=g),
            "decoder.weight": torch.randn(d_in, n_latents, generator=g), "decoder.bias": torch.randn(d_in, generator=g)}


def test_the_converted_sae_computes_what_theirs_does():
    state = random_state()
    x = torch.randn(200, 16, generator=torch.Generator().manual_seed(1)) * 3
    sae = from_e2e_sae_state(state, l1_coeff=1.5)
    x_hat, z = sae(x)
    want_x_hat, want_c = e2e_sae_forward(state, x)
    assert torch.allclose(z, want_c, atol=1e-5) and torch.allclose(x_hat, want_x_hat, atol=1e-4)
    assert 0 < (z > 0).float().mean() < 1  # some codes on and some off: the comparison means something
    assert sae.l1_coeff == 1.5 and not sae.training


def test_bad_files_are_refused_by_name():
    state = random_state()
    with pytest.raises(ValueError, match="holds.*not the e2e_sae"):
        from_e2e_sae_state({k: v for k, v in state.items() if k != "decoder.bias"}, source="x.pt")
    with pytest.raises(ValueError, match="x.pt: inconsistent shapes"):
        from_e2e_sae_state({**state, "decoder.weight": state["decoder.weight"][:, :5]}, source="x.pt")
    assert file_stem("e2e+ds", 6) == "downstream_similar_l0_layer_6"
    assert file_stem("local", 10, "ce") == "local_similar_ce_layer_10"
    for bad in [("e2e", 5), ("sparse", 6)]:
        with pytest.raises(ValueError):
            file_stem(*bad)
    with pytest.raises(ValueError, match="Table 2"):
        file_stem("e2e", 6, "kl")


def test_load_from_a_planted_hub_cache(tmp_path):
    states = plant_paper_saes(tmp_path, n_latents=40, d_in=32)
    x = torch.randn(64, 32, generator=torch.Generator().manual_seed(2))
    torch.save(x, tmp_path / "x.pt")
    probe = (
        "import json, torch; from sae_lib.paper_saes import load_paper_sae; "
        "sae, info = load_paper_sae('e2e+ds', 6); "
        f"x = torch.load({str(tmp_path / 'x.pt')!r}); x_hat, z = sae(x); "
        f"torch.save(x_hat, {str(tmp_path / 'x_hat.pt')!r}); print(json.dumps(info))"
    )
    env = {**os.environ, "HF_HOME": str(tmp_path), "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    env.pop("HF_HUB_CACHE", None)
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout.strip().splitlines()[-1])
    assert info["hook"] == "blocks.6.hook_resid_pre" and info["name"] == "downstream_similar_l0_layer_6"
    assert info["sparsity_coeff"] == 3.5 and info["n_samples"] == 400_000
    want, _ = e2e_sae_forward(states["e2e+ds"], x)
    assert torch.allclose(torch.load(tmp_path / "x_hat.pt"), want, atol=1e-4)

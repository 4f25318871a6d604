"""Plant files in a Hugging Face cache the way the hub client lays them out, for offline tests."""

from __future__ import annotations

from pathlib import Path

COMMIT = "0" * 40  # any commit hash: the cache only needs refs/main to name the snapshot folder


def snapshot(home: Path, repo_id: str) -> Path:
    """The snapshot folder of ``repo_id`` in the cache under ``home`` (HF_HOME), created if missing."""
    repo = home / "hub" / f"models--{repo_id.replace('/', '--')}"
    folder = repo / "snapshots" / COMMIT
    folder.mkdir(parents=True, exist_ok=True)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(COMMIT)
    return folder


def plant_paper_saes(home: Path, *, layer: int = 6, d_in: int = 768, n_latents: int = 96, seed: int = 0,
                     kinds=("local", "e2e", "e2e+ds"), matched: str = "l0") -> dict[str, dict]:
    """The e2e paper's SAE files (``sae_lib.paper_saes``) with random weights of the given size, and a
    config like their runs' ``final_config.yaml``; returns each kind's state dict."""
    import torch
    import yaml

    from sae_lib import paper_saes

    folder = snapshot(home, paper_saes.REPO)
    generator = torch.Generator().manual_seed(seed)
    states = {}
    for i, kind in enumerate(kinds):
        stem = paper_saes.file_stem(kind, layer, matched)
        state = {"encoder.weight": torch.randn(n_latents, d_in, generator=generator) / d_in**0.5,
                 "encoder.bias": torch.randn(n_latents, generator=generator) * 0.1,
                 "decoder.weight": torch.randn(d_in, n_latents, generator=generator),
                 "decoder.bias": torch.randn(d_in, generator=generator) * 0.1}
        torch.save(state, folder / f"{stem}.pt")
        config = {"tlens_model_name": "gpt2-small", "n_samples": 400_000,
                  "loss": {"sparsity": {"p_norm": 1.0, "coeff": 1.5 + i}, "logits_kl": {"coeff": 1.0}},
                  "saes": {"sae_positions": [f"blocks.{layer}.hook_resid_pre"],
                           "dict_size_to_input_ratio": n_latents / d_in}}
        (folder / f"{stem}.yaml").write_text(yaml.safe_dump(config))
        states[kind] = state
    return states

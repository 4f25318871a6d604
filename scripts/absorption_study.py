"""Chapter 9's data: SmolLM2 on the first-letter prompts, and the detection proxy of the shipped SAEs.

    python scripts/absorption_study.py          # make (or finish) both pieces
    python scripts/absorption_study.py --list   # what is done

Two pieces, each written atomically (a temporary file renamed into place) and skipped when done:

1. **words** (``sae_lib/assets/absorption/words.safetensors`` + ``words.json``): SAEBench's in-context
   first-letter prompt for a sample of SmolLM2's whole-word tokens (at most ``WORDS_PER_LETTER`` per
   letter), and the residual stream at the word's token at the real-scale hook
   (:data:`sae_lib.real_scale.HOOK`), float16. Probes and absorption need nothing else, so chapter 9
   computes them live from this file. Harvesting the prompts is the cost (about 90 tokens a word).
2. **proxy** (``sae_lib/assets/absorption/proxy.json``): the offline detection proxy
   (:mod:`sae_lib.interp_proxy`) of every shipped SAE, on ``PROXY_SEQUENCES`` training sequences (the
   explanations) and as many held-out ones (the scores): more text than the chapter can harvest live.
   SAEs are added one at a time (an SAE shipped later is scored by a later run, on the same text).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sae_lib import absorption, corpus, interp_proxy  # noqa: E402
from sae_lib.real_scale import HOOK, MODEL, SEQ_LEN, absorption_dir, load_shipped, shipped_names  # noqa: E402

WORDS_PER_LETTER = 150
WORD_SEED = 0
PROXY_SEQUENCES = 96  # per side (training text, held-out text), of SEQ_LEN tokens
PROXY_LATENTS = 200  # per SAE, drawn by interp_proxy.sample_latents
PROXY_SEED = 0


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def machine() -> str:
    return (f"{platform.machine()}, {os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads, "
            f"torch {torch.__version__}")


def write_atomically(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    write(tmp)
    os.replace(tmp, path)


def words_piece(out: Path, model, tokenizer, per_letter: int) -> None:
    from safetensors.torch import save_file

    began = time.perf_counter()
    vocabulary = absorption.word_vocabulary(tokenizer)
    sample = absorption.sample_words(vocabulary, per_letter, seed=WORD_SEED)
    train, test = absorption.split_words(sample, seed=WORD_SEED)
    log(f"{len(vocabulary):,d} whole-word tokens; {len(sample):,d} sampled "
        f"({len(train):,d} train, {len(test):,d} held out)")
    acts = {}
    for name, words in (("train", train), ("test", test)):
        acts[name] = absorption.word_activations(model, tokenizer, HOOK, words, examples=vocabulary,
                                                 seed=WORD_SEED)
    seconds = time.perf_counter() - began
    tensors = {f"{name}_{key}": value for name, words in (("train", train), ("test", test))
               for key, value in (("x", acts[name].half()), ("labels", words.labels),
                                  ("token_ids", words.token_ids))}
    write_atomically(out / "words.safetensors", lambda p: save_file(tensors, str(p)))
    info = {"model": MODEL, "hook": HOOK, "prompt_template": absorption.PROMPT_TEMPLATE,
            "n_examples": absorption.N_EXAMPLES, "examples_from": "the whole vocabulary",
            "vocabulary_size": len(vocabulary), "words_per_letter": per_letter, "seed": WORD_SEED,
            "train_words": list(train.words), "test_words": list(test.words),
            "seconds": round(seconds, 1), "machine": machine(),
            "made": time.strftime("%Y-%m-%d %H:%M:%S"), "script": "scripts/absorption_study.py"}
    write_atomically(out / "words.json", lambda p: p.write_text(json.dumps(info) + "\n"))
    log(f"words: {len(sample):,d} prompts in {seconds:.0f} s")


def proxy_todo(out: Path, again: bool) -> list[str]:
    """The shipped SAEs (chapter 7's e2e ones too) that proxy.json does not score yet (all with ``again``)."""
    path = out / "proxy.json"
    done = set() if again or not path.is_file() else set(json.loads(path.read_text())["saes"])
    return [name for name in shipped_names() + shipped_names("e2e") if name not in done]


def proxy_piece(out: Path, model, tokenizer, n_sequences: int, names: list[str]) -> None:
    """Score ``names`` and merge them into proxy.json (one file rewritten atomically per SAE, so an
    interrupted run keeps the SAEs it finished)."""
    from sae_lib.splicing import harvest

    began = time.perf_counter()
    texts = {"train": corpus.corpus_sequences(tokenizer, "train", SEQ_LEN, seed=PROXY_SEED,
                                              max_sequences=n_sequences),
             "held_out": corpus.corpus_sequences(tokenizer, "held_out", SEQ_LEN, seed=PROXY_SEED,
                                                 max_sequences=n_sequences)}
    acts = {side: harvest(model, tokens, HOOK, batch_size=8) for side, tokens in texts.items()}
    harvest_seconds = time.perf_counter() - began
    settings = {"model": MODEL, "hook": HOOK, "seq_len": SEQ_LEN, "sequences_per_side": n_sequences,
                "tokens_per_side": n_sequences * SEQ_LEN, "latents_per_sae": PROXY_LATENTS,
                "seed": PROXY_SEED, "n_top": interp_proxy.N_TOP, "size": interp_proxy.SIZE,
                "min_density": interp_proxy.MIN_DENSITY, "script": "scripts/absorption_study.py"}
    path = out / "proxy.json"
    result = json.loads(path.read_text()) if path.is_file() else {}
    if any(result.get(key) != value for key, value in settings.items()):
        result = {**settings, "saes": {}}  # other settings: start afresh, never mix two runs
    for name in names:
        sae_began = time.perf_counter()
        sae = load_shipped(name)
        proxy = interp_proxy.sae_detection_proxy(sae, texts["train"], acts["train"], texts["held_out"],
                                                 acts["held_out"], n_latents=PROXY_LATENTS,
                                                 seed=PROXY_SEED)
        result["saes"][name] = {"summary": proxy.summary(), "latents": proxy.rows(),
                                "seconds": round(time.perf_counter() - sae_began + harvest_seconds, 1),
                                "machine": machine(), "made": time.strftime("%Y-%m-%d %H:%M:%S")}
        write_atomically(path, lambda p: p.write_text(json.dumps(result) + "\n"))
        log(f"proxy {name}: {proxy.summary()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--list", action="store_true", help="say which pieces are done, then stop")
    parser.add_argument("--out", type=Path, default=absorption_dir(),
                        help="where to write (default: the shipped assets)")
    parser.add_argument("--words-per-letter", type=int, default=WORDS_PER_LETTER)
    parser.add_argument("--proxy-sequences", type=int, default=PROXY_SEQUENCES)
    parser.add_argument("--only", choices=("words", "proxy"), help="make only this piece")
    parser.add_argument("--again", action="store_true", help="remake pieces that are done")
    args = parser.parse_args()
    done = {"words": (args.out / "words.json").is_file() and (args.out / "words.safetensors").is_file(),
            "proxy": not proxy_todo(args.out, False)}
    if args.list:
        for piece, finished in done.items():
            print(f"{'done' if finished else 'todo':5s} {piece}")
        return
    todo = [p for p in ("words", "proxy") if (args.again or not done[p]) and args.only in (None, p)]
    if not todo:
        log("nothing to do")
        return
    from sae_lib.smollm2 import load_smollm2

    began = time.perf_counter()
    model, tokenizer = load_smollm2()
    if "words" in todo:
        words_piece(args.out, model, tokenizer, args.words_per_letter)
    if "proxy" in todo:
        proxy_piece(args.out, model, tokenizer, args.proxy_sequences, proxy_todo(args.out, args.again))
    log(f"done in {time.perf_counter() - began:.0f} s")


if __name__ == "__main__":
    main()

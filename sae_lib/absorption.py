"""Feature absorption on a real model: the first-letter test of Chanin et al. 2024, as SAEBench scores it.

"A is for Absorption" (Chanin et al. 2024, arXiv 2409.14507) asks whether an SAE has one latent for
"this word starts with S". The model clearly knows the first letter (a linear probe reads it from the
residual stream), so an SAE latent should too. Often one does, except on some words: there the letter
latent stays silent and a latent for the word itself (" short") fires instead, its decoder direction
leaning towards the letter. The word latent has *absorbed* the letter. SAEBench (adamkarvonen/SAEBench,
``sae_bench/evals/absorption/``) ships the test as its absorption metric; this module follows its
definitions and constants, in small steps a chapter can run one at a time:

1. **Words.** :func:`word_vocabulary`: tokens that are a leading space and then letters only, at least
   two of them (SAEBench also takes tokens without the space and single letters; we keep only word
   starts, whose first letter is the word's). :func:`split_words`: 80 % to train, 20 % held out.
2. **Activations.** :func:`prompt_tokens` builds SAEBench's in-context prompt for each word (see
   :data:`PROMPT_TEMPLATE`); :func:`word_activations` runs the model and keeps the residual vector at
   the word's token. The SAE part below needs only these vectors, so any model will do.
3. **Probes.** :func:`train_letter_probes`: one-vs-rest logistic regression, one probe per letter;
   :func:`probe_report` gives held-out accuracy, precision, recall and F1 per letter;
   :func:`select_letters` keeps the letters the model reads well (SAEBench: held-out F1 > 0.6).
4. **Main latents.** :func:`find_main_latents`: k-sparse probing on the SAE's codes, which also finds
   feature splits (a letter carried by several latents).
5. **Absorption.** :func:`word_absorption` scores each word, :func:`measure_absorption` runs steps 4-5
   for one SAE and returns per-letter and overall numbers (:class:`AbsorptionResult`).

Everything reaches the SAE through ``sae.encode`` and ``sae.atoms()``, so every family works.

One difference from the paper, which SAEBench shares: the paper judged absorption by integrated-gradient
ablation of the model's answer; SAEBench (and this module) judge it by projections onto the probe
direction, which needs no gradients and no answer logits.
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from .util import integer, positive_int, progress_bar, real_number, seeded_generator

LETTERS = "abcdefghijklmnopqrstuvwxyz"

# ----------------------------------------------------------------------------- the prompt (SAEBench's)
PROMPT_TEMPLATE = "{word} has the first letter:"
"""SAEBench's ``AbsorptionEvalConfig.prompt_template``. Each in-context example is the template followed
by the answer, a space and the capital letter (``" cat has the first letter: C"``); examples are joined by
``"\\n"`` and a ``"\\n"`` comes first; the word to probe ends the prompt, unanswered. SAEBench reads the
residual stream at position -6 (``prompt_token_pos``): the word's token, when the word is one token and
the template's tail, ``" has the first letter:"``, is five (as it is for GPT-2 and SmolLM2)."""
EXAMPLE_SEPARATOR = "\n"
N_EXAMPLES = 10
"""In-context examples per prompt (SAEBench's ``max_icl_examples``), drawn at random from the vocabulary,
never the word itself."""
TEST_FRACTION = 0.2  # SAEBench trains the probes on 80 % of the words and scores on the other 20 %

# ----------------------------------------------------------------------------- SAEBench's constants
MIN_PROBE_F1 = 0.6  # eval_config.min_GT_probe_f1: a letter counts only if its probe's held-out F1 exceeds this
MIN_TEST_WORDS = 10  # ours: a letter needs this many held-out words, or its F1 means little
MAX_K = 10  # eval_config.max_k_value: the largest k-sparse probe tried
F1_JUMP = 0.03  # eval_config.f1_jump_threshold: k grows while held-out F1 rises by more than this
SILENT = 1e-8  # feature_absorption_calculator.EPS: a main latent with |code| below this is silent
FULL_ABSORPTION_COSINE = 0.025  # the absorbing latent's decoder must have at least this cosine with the probe
FRACTION_COSINE = 0.1  # a latent can share in the absorption fraction only above this cosine
PROJECTION_SHARE = 0.4  # the absorbing latent(s) must carry at least this share of the probe projection
MAX_ABSORBERS = 3  # at most this many latents share in the absorption fraction

# ----------------------------------------------------------------------------- our solver settings
PROBE_L2 = 1e-4
"""Ridge on the letter probes (SAEBench's Adam weight decay), applied to standardised activations."""
L1_PENALTY = 0.01
"""SAEBench's ``k_sparse_probe_l1_decay``: the L1 weight of the probe that ranks latents (applied here to
codes divided by their root-mean-square non-zero value, so it does not depend on the SAE's scale)."""
L1_STEPS = 200  # accelerated proximal-gradient steps for the L1 probe (it is convex: no seed, no schedule)


# ============================================================================= 1. words
def first_letter(word: str) -> str:
    """The lowercase first letter of a word such as ``" Cat"`` (leading spaces ignored)."""
    stripped = word.lstrip()
    if not stripped or stripped[0].lower() not in LETTERS:
        raise ValueError(f"{word!r} does not start with a letter a-z")
    return stripped[0].lower()


@dataclass(frozen=True, eq=False)
class WordVocabulary:
    """Words with their token ids and first letters: ``labels[i]`` is ``LETTERS.index(first letter)``."""

    words: tuple[str, ...]
    token_ids: Tensor  # (n,) long
    labels: Tensor  # (n,) long, 0-25

    def __post_init__(self):
        if not (len(self.words) == len(self.token_ids) == len(self.labels)):
            raise ValueError(f"words, token_ids and labels differ in length: {len(self.words)}, "
                             f"{len(self.token_ids)}, {len(self.labels)}")

    @classmethod
    def from_words(cls, words: Sequence[str], token_ids: Sequence[int] | Tensor | None = None) -> WordVocabulary:
        """From a list of words (token ids default to 0, 1, 2, ..., for data made without a tokenizer)."""
        words = tuple(words)
        if not words:
            raise ValueError("the vocabulary is empty: there are no words to probe")
        ids = torch.arange(len(words)) if token_ids is None else torch.as_tensor(token_ids, dtype=torch.long)
        labels = torch.tensor([LETTERS.index(first_letter(w)) for w in words], dtype=torch.long)
        return cls(words, ids.reshape(-1), labels)

    def __len__(self) -> int:
        return len(self.words)

    def subset(self, index: Tensor | Sequence[int]) -> WordVocabulary:
        index = torch.as_tensor(index, dtype=torch.long).reshape(-1)
        return WordVocabulary(tuple(self.words[i] for i in index.tolist()), self.token_ids[index], self.labels[index])

    def letter_counts(self) -> dict[str, int]:
        """How many words start with each letter (all 26 letters, zeros included)."""
        counts = torch.bincount(self.labels, minlength=len(LETTERS)).tolist()
        return dict(zip(LETTERS, counts))


def word_vocabulary(tokenizer, *, min_length: int = 2) -> WordVocabulary:
    """Every token of ``tokenizer`` that is a whole word: a leading space, then ASCII letters only, at least
    ``min_length`` of them (``" cat"``, ``" The"``; not ``"cat"``, ``" c"``, ``" can't"``).

    Tokens are read with ``tokenizer.decode([id])`` for every id below ``len(tokenizer)``; a string that
    two ids decode to is kept once, with the smaller id. Upper and lower case both count, as in SAEBench.
    """
    min_length = positive_int("min_length", min_length)
    if not callable(getattr(tokenizer, "decode", None)) or not hasattr(tokenizer, "__len__"):
        raise TypeError(f"tokenizer must have decode() and len() (a Hugging Face tokenizer); "
                        f"got {type(tokenizer).__name__}")
    pattern = re.compile(rf" [A-Za-z]{{{min_length},}}")
    seen: dict[str, int] = {}
    for token_id in range(len(tokenizer)):
        text = tokenizer.decode([token_id])
        if pattern.fullmatch(text) and text not in seen:
            seen[text] = token_id
    if not seen:
        raise ValueError(f"the tokenizer has no whole-word tokens (a space, then {min_length}+ letters)")
    return WordVocabulary.from_words(list(seen), list(seen.values()))


def sample_words(vocabulary: WordVocabulary, max_per_letter: int, *, seed: int = 0) -> WordVocabulary:
    """At most ``max_per_letter`` words of each letter, drawn at random (seeded); letters with fewer keep
    all theirs. Running the model on 30k prompts takes long on a CPU: this keeps the letters balanced."""
    max_per_letter = positive_int("max_per_letter", max_per_letter)
    order = torch.randperm(len(vocabulary), generator=seeded_generator(seed))
    kept, taken = [], [0] * len(LETTERS)
    for i in order.tolist():
        label = int(vocabulary.labels[i])
        if taken[label] < max_per_letter:
            taken[label] += 1
            kept.append(i)
    return vocabulary.subset(sorted(kept))


def split_words(vocabulary: WordVocabulary, *, test_fraction: float = TEST_FRACTION,
                seed: int = 0) -> tuple[WordVocabulary, WordVocabulary]:
    """A random split of the words into (train, held out), ``test_fraction`` of them held out, as SAEBench
    splits its vocabulary: a probe is scored on words it never saw."""
    test_fraction = real_number("test_fraction", test_fraction, low=0, high=1, low_open=True, high_open=True)
    n_test = round(len(vocabulary) * test_fraction)
    if not 0 < n_test < len(vocabulary):
        raise ValueError(f"{len(vocabulary)} words are too few to hold out {test_fraction:g} of them")
    order = torch.randperm(len(vocabulary), generator=seeded_generator(seed))
    return vocabulary.subset(order[n_test:].sort().values), vocabulary.subset(order[:n_test].sort().values)


# ============================================================================= 2. prompts and activations
def _examples_text(examples: Sequence[str]) -> str:
    """The answered examples of a prompt: ``"\\n"``, then one ``"{ex} has the first letter: X\\n"`` each."""
    lines = [PROMPT_TEMPLATE.format(word=ex) + " " + first_letter(ex).upper() for ex in examples]
    return EXAMPLE_SEPARATOR + "".join(line + EXAMPLE_SEPARATOR for line in lines)


def icl_prompt(word: str, examples: Sequence[str]) -> str:
    """SAEBench's prompt text for ``word``: the answered examples, then the word's unanswered line.

    >>> icl_prompt(" dog", [" cat", " apple"])
    '\\n cat has the first letter: C\\n apple has the first letter: A\\n dog has the first letter:'
    """
    return _examples_text(examples) + PROMPT_TEMPLATE.format(word=word)


def _encode(tokenizer, text: str) -> list[int]:
    return list(tokenizer.encode(text, add_special_tokens=False))


def prompt_tokens(tokenizer, vocabulary: WordVocabulary, *, examples: WordVocabulary | None = None,
                  n_examples: int = N_EXAMPLES, seed: int = 0, prepend_bos: bool = True) -> tuple[Tensor, Tensor]:
    """One in-context prompt per word (:func:`icl_prompt`), as token ids: ``(tokens, positions)``, where
    ``tokens`` is (n_words, longest prompt), padded on the right, and ``positions[i]`` is where word ``i``'s
    token sits in row ``i``.

    The word's own token id is placed in the prompt as is (the tokenized examples, the word's id, then the
    tokenized tail ``" has the first letter:"``), so the position is exact whatever the tokenizer. Padding
    on the right changes nothing before it in a causal model. ``examples`` (default: the vocabulary itself)
    is the pool the ``n_examples`` examples are drawn from (seeded), never the word itself; ``prepend_bos``
    puts the tokenizer's BOS token first, as TransformerLens does with text.
    """
    n_examples = integer("n_examples", n_examples)
    pool = vocabulary if examples is None else examples
    if not 0 <= n_examples <= len(pool) - 1:
        raise ValueError(f"n_examples must be in [0, {len(pool) - 1}] (the pool has {len(pool)} words), "
                         f"got {n_examples}")
    bos = getattr(tokenizer, "bos_token_id", None) if prepend_bos else None
    start = [bos] if bos is not None else []
    tail = _encode(tokenizer, PROMPT_TEMPLATE.format(word=""))
    where = {word: i for i, word in enumerate(pool.words)}
    weights = torch.ones(len(pool))
    generator = seeded_generator(seed)
    rows, positions = [], []
    for word, token_id in zip(vocabulary.words, vocabulary.token_ids.tolist()):
        chosen = []
        if n_examples:
            own = where.get(word)
            if own is not None:
                weights[own] = 0.0  # never the word itself
            chosen = torch.multinomial(weights, n_examples, generator=generator).tolist()
            if own is not None:
                weights[own] = 1.0
        head = start + _encode(tokenizer, _examples_text([pool.words[j] for j in chosen]))
        positions.append(len(head))
        rows.append(head + [token_id] + tail)
    tokens = torch.zeros(len(rows), max(map(len, rows)), dtype=torch.long)
    for i, ids in enumerate(rows):
        tokens[i, : len(ids)] = torch.tensor(ids)
    return tokens, torch.tensor(positions)


@torch.no_grad()
def word_activations(model, tokenizer, hook: str, vocabulary: WordVocabulary, *, batch_size: int = 32,
                     progress: bool = True, **prompt_options) -> Tensor:
    """The residual vector at each word's token in its prompt (:func:`prompt_tokens`): (n_words, d), CPU.

    ``model`` is a TransformerLens model; the activations come from :func:`sae_lib.splicing.harvest` at
    ``hook`` (SAEBench reads ``blocks.L.hook_resid_post``), one batch of prompts at a time so only the word
    positions are kept. ``prompt_options`` go to :func:`prompt_tokens` (``examples``, ``n_examples``, ``seed``,
    ``prepend_bos``). Expect about 90 tokens per word: thousands of words take minutes on a CPU."""
    from .splicing import harvest

    tokens, positions = prompt_tokens(tokenizer, vocabulary, **prompt_options)
    batch_size = positive_int("batch_size", batch_size)
    parts = []
    starts = range(0, len(tokens), batch_size)
    for start in progress_bar(starts, desc=f"first-letter prompts at {hook}", show=progress):
        acts = harvest(model, tokens[start : start + batch_size], hook, batch_size=batch_size, progress=False)
        rows = torch.arange(len(acts))
        parts.append(acts[rows, positions[start : start + batch_size]])
    return torch.cat(parts)


# ============================================================================= 3. letter probes
def _check_data(x: Tensor, labels: Tensor, name: str = "x") -> tuple[Tensor, Tensor]:
    if not isinstance(x, Tensor) or x.ndim != 2 or not x.is_floating_point():
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"{name} must be a (n_words, d) floating-point tensor; got {shape}")
    labels = torch.as_tensor(labels)
    if labels.shape != (len(x),) or labels.is_floating_point():
        raise ValueError(f"labels must be ({len(x)},) integers, one letter index per row of {name}; "
                         f"got shape {tuple(labels.shape)}")
    if len(x) == 0:
        raise ValueError(f"{name} has no rows: there are no words")
    if labels.min() < 0 or labels.max() >= len(LETTERS):
        raise ValueError(f"labels must be letter indices in [0, {len(LETTERS)}); got {labels.min()} to {labels.max()}")
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} has NaN or infinite values")
    return x, labels.long()


def _check_letters(letters: Iterable[str]) -> tuple[str, ...]:
    letters = tuple(letters)
    bad = [letter for letter in letters if letter not in LETTERS or len(letter) != 1]
    if bad or not letters:
        raise ValueError(f"letters must be a non-empty selection of 'a'..'z'; got {letters!r}")
    return letters


def _balanced_weights(targets: Tensor) -> Tensor:
    """Per-sample weights that give each class of each column half the loss (scikit-learn's
    ``class_weight="balanced"``; SAEBench's ``pos_weight = negatives / positives`` up to a constant)."""
    n, positives = len(targets), targets.sum(0)
    pos, neg = n / (2 * positives.clamp_min(1)), n / (2 * (n - positives).clamp_min(1))
    return torch.where(targets > 0, pos, neg)


def _fit_logistic(features: Tensor, targets: Tensor, *, l2: float, max_iter: int = 500) -> tuple[Tensor, Tensor]:
    """Logistic regression for each column of ``targets`` (0/1), class-balanced, with ridge ``l2/2·‖W‖²``
    on the weights (not the bias), solved to convergence by L-BFGS in float64: deterministic, no seed.
    Returns ``(weight (n_targets, n_features), bias (n_targets,))``."""
    x, y = features.double(), targets.double()
    sample_weights = _balanced_weights(y)
    weight = torch.zeros(x.shape[1], y.shape[1], dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(y.shape[1], dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([weight, bias], lr=1, max_iter=max_iter, history_size=20,
                                  tolerance_grad=1e-9, tolerance_change=1e-12, line_search_fn="strong_wolfe")

    def loss():
        optimizer.zero_grad()
        logits = x @ weight + bias
        value = torch.nn.functional.binary_cross_entropy_with_logits(logits, y, weight=sample_weights,
                                                                     reduction="sum") / len(x)
        value = value + 0.5 * l2 * weight.pow(2).sum()
        value.backward()
        return value

    optimizer.step(loss)
    return weight.detach().T.float(), bias.detach().float()


@dataclass(frozen=True, eq=False)
class LetterProbes:
    """One linear probe per letter on the residual stream: ``scores(x)[:, i] > 0`` says "starts with
    ``LETTERS[i]``". Letters without training words have zero weights and a bias of -inf."""

    weight: Tensor  # (26, d), in the activations' own coordinates
    bias: Tensor  # (26,)

    def scores(self, x: Tensor) -> Tensor:
        """The probes' logits, (n_words, 26)."""
        return x.float() @ self.weight.T + self.bias

    def direction(self, letter: str) -> Tensor:
        """The unit vector the probe for ``letter`` reads along (what absorption compares decoders with)."""
        w = self.weight[LETTERS.index(_check_letters([letter])[0])]
        if not w.norm() > 0:
            raise ValueError(f"there is no probe for {letter!r}: no training word starts with it")
        return w / w.norm()


def train_letter_probes(x: Tensor, labels: Tensor, *, l2: float = PROBE_L2) -> LetterProbes:
    """One-vs-rest logistic probes for the first letter, one per letter that has training words.

    As in SAEBench: binary logistic regression per letter, positives weighted up to balance the negatives.
    Differently: the activations are centred and scaled to unit root-mean-square norm first (folded back
    into the returned weights, so ``scores`` takes raw activations and the directions are unchanged), and
    the fit is full-batch L-BFGS to convergence instead of 50 epochs of Adam, so it needs no seed.
    """
    x, labels = _check_data(x, labels)
    l2 = real_number("l2", l2, low=0, low_open=True)
    present = torch.bincount(labels, minlength=len(LETTERS)) > 0
    if int(present.sum()) < 2:
        raise ValueError("letter probes need words of at least two different letters")
    centre = x.float().mean(0)
    scale = (x.float() - centre).pow(2).sum(1).mean().sqrt().clamp_min(1e-12)
    targets = torch.nn.functional.one_hot(labels, len(LETTERS))[:, present]
    w, b = _fit_logistic((x.float() - centre) / scale, targets, l2=l2)
    weight = torch.zeros(len(LETTERS), x.shape[1])
    bias = torch.full((len(LETTERS),), -math.inf)
    weight[present] = w / scale
    bias[present] = b - weight[present] @ centre
    return LetterProbes(weight, bias)


@dataclass(frozen=True)
class LetterProbeScore:
    """A probe's held-out record for one letter (prediction: logit > 0, as SAEBench)."""

    letter: str
    n_words: int  # held-out words that start with the letter
    accuracy: float
    precision: float
    recall: float
    f1: float


def _f1(predicted: Tensor, actual: Tensor) -> tuple[float, float, float]:
    """(precision, recall, F1) of boolean predictions; 0 where undefined (no positives predicted or present)."""
    tp = int((predicted & actual).sum())
    precision = tp / int(predicted.sum()) if predicted.any() else 0.0
    recall = tp / int(actual.sum()) if actual.any() else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return precision, recall, f1


def probe_report(probes: LetterProbes, x: Tensor, labels: Tensor) -> list[LetterProbeScore]:
    """Held-out accuracy, precision, recall and F1 of each letter's probe (all 26 letters)."""
    x, labels = _check_data(x, labels)
    if x.shape[1] != probes.weight.shape[1]:
        raise ValueError(f"x has d={x.shape[1]} but the probes were trained on d={probes.weight.shape[1]}")
    predicted = probes.scores(x) > 0
    report = []
    for i, letter in enumerate(LETTERS):
        actual = labels == i
        precision, recall, f1 = _f1(predicted[:, i], actual)
        accuracy = float((predicted[:, i] == actual).float().mean())
        report.append(LetterProbeScore(letter, int(actual.sum()), accuracy, precision, recall, f1))
    return report


@dataclass(frozen=True)
class LetterSelection:
    """Which letters the absorption test uses, and why each other letter is left out."""

    kept: tuple[str, ...]
    dropped: dict[str, str] = field(default_factory=dict)


def select_letters(report: Sequence[LetterProbeScore], *, min_f1: float = MIN_PROBE_F1,
                   min_test_words: int = MIN_TEST_WORDS) -> LetterSelection:
    """Keep a letter when it has at least ``min_test_words`` held-out words (our rule: fewer make its F1
    noise) and its probe's held-out F1 exceeds ``min_f1`` (SAEBench's ``min_GT_probe_f1`` = 0.6: if the
    model does not represent the letter linearly, no SAE can be blamed for absorbing it)."""
    min_f1 = real_number("min_f1", min_f1, low=0, high=1)
    min_test_words = positive_int("min_test_words", min_test_words)
    kept, dropped = [], {}
    for score in report:
        if score.n_words < min_test_words:
            dropped[score.letter] = f"too few held-out words ({score.n_words} < {min_test_words})"
        elif not score.f1 > min_f1:
            dropped[score.letter] = f"weak probe (held-out F1 {score.f1:.2f} <= {min_f1:g})"
        else:
            kept.append(score.letter)
    return LetterSelection(tuple(kept), dropped)


# ============================================================================= 4. main latents (k-sparse probing)
@torch.no_grad()
def encode_codes(sae, x: Tensor, *, batch_size: int = 4096, latents: Tensor | None = None) -> Tensor:
    """``sae.encode(x)`` for rows ``x`` (n, d_in), in inference mode (BatchTopK's learned threshold, not the
    batch's top k) and in batches, as float32 on the CPU; only the columns ``latents`` if given. The SAE's
    training flag is restored afterwards."""
    batch_size = positive_int("batch_size", batch_size)
    was_training = sae.training
    sae.eval()
    try:
        parts = []
        for part in x.split(batch_size):
            z = sae.encode(part.to(sae.W_dec.device)).float().cpu()
            parts.append(z if latents is None else z[:, latents])
        return torch.cat(parts)
    finally:
        sae.train(was_training)


def _design(codes: Tensor) -> tuple[Tensor, Tensor]:
    """The codes with a column of ones appended (the bias), and its transpose: both in compressed sparse
    row form when most codes are zero (the probe's two products per step are then several times faster
    than with a dense or a coordinate-format matrix)."""
    with_bias = torch.cat([codes, torch.ones(len(codes), 1)], 1)
    if (codes != 0).float().mean() >= 0.1:
        return with_bias, with_bias.T
    with warnings.catch_warnings():  # "sparse CSR support is in beta": the two products used here work
        warnings.simplefilter("ignore", UserWarning)
        return with_bias.to_sparse_csr(), with_bias.T.contiguous().to_sparse_csr()


def _l1_probe_weights(codes: Tensor, targets: Tensor, *, l1: float, steps: int) -> Tensor:
    """Class-balanced logistic regression with penalty ``l1·Σ|w|`` for each column of ``targets``, by
    accelerated proximal gradient (FISTA) with a step of 1/L per column, L from power iteration.
    Returns the weights (n_latents, n_targets); most are exactly zero."""
    n = len(codes)
    rms = codes[codes != 0].pow(2).mean().sqrt() if (codes != 0).any() else torch.tensor(1.0)
    x, x_t = _design(codes / rms)
    y = targets.float()
    c = _balanced_weights(y) / n
    # Lipschitz constant of each column's smooth loss: 1/4 · largest eigenvalue of Xᵀ diag(c) X
    v = torch.ones(x.shape[1], y.shape[1])
    for _ in range(30):
        v = x_t @ (c * (x @ v))
        v = v / v.norm(dim=0).clamp_min(1e-30)
    lipschitz = 0.25 * (v * (x_t @ (c * (x @ v)))).sum(0) * 1.1 + 1e-12
    step = 1 / lipschitz
    w = torch.zeros_like(v)
    momentum, t = w.clone(), 1.0
    penalised = torch.ones(x.shape[1], 1)
    penalised[-1] = 0.0  # the bias row
    for _ in range(steps):
        gradient = x_t @ (c * (torch.sigmoid(x @ momentum) - y))
        moved = momentum - step * gradient
        new = moved.sign() * (moved.abs() - step * l1 * penalised).clamp_min(0)
        t_next = (1 + math.sqrt(1 + 4 * t * t)) / 2
        momentum = new + (t - 1) / t_next * (new - w)
        w, t = new, t_next
    return w[:-1]


def rank_latents(codes: Tensor, labels: Tensor, letters: Iterable[str], *, method: str = "l1_probe",
                 l1: float = L1_PENALTY, steps: int = L1_STEPS) -> dict[str, Tensor]:
    """For each letter, every latent in order of how well it signals the letter (best first).

    ``"l1_probe"`` (the paper's and SAEBench's choice): the weights of an L1-regularised, class-balanced
    logistic probe on the codes, largest positive first (a latent that fires *against* the letter does not
    count). SAEBench fits it with 50 epochs of Adam; we solve the same convex problem by proximal gradient
    (:data:`L1_STEPS` steps), so the ranking depends on no seed or schedule.
    ``"mean_difference"``: the letter's words' mean code minus the other words' (cheaper; Gurnee et al.'s
    and SAEBench's sparse-probing choice). Ties (e.g. all the zero L1 weights) are broken by the mean
    difference, then by latent index, so the order is deterministic.
    """
    codes, labels = _check_data(codes, labels, "codes")
    letters = _check_letters(letters)
    l1, steps = real_number("l1", l1, low=0), positive_int("steps", steps)
    if method not in ("l1_probe", "mean_difference"):
        raise ValueError(f"method must be 'l1_probe' or 'mean_difference', got {method!r}")
    index = torch.tensor([LETTERS.index(letter) for letter in letters])
    targets = labels.unsqueeze(1) == index
    for letter, column in zip(letters, targets.T):
        if column.all() or not column.any():
            raise ValueError(f"ranking latents for {letter!r} needs words with and without it; "
                             f"{int(column.sum())} of {len(labels)} start with it")
    positive = targets.float() / targets.sum(0)
    negative = (~targets).float() / (~targets).sum(0)
    difference = (positive - negative).T @ codes.float()  # (n_letters, n_latents)
    key = difference if method == "mean_difference" else _l1_probe_weights(codes.float(), targets, l1=l1, steps=steps).T
    ranking = {}
    for row, letter in enumerate(letters):
        by_difference = torch.argsort(-difference[row], stable=True)
        ranking[letter] = by_difference[torch.argsort(-key[row][by_difference], stable=True)]
    return ranking


@dataclass(frozen=True)
class MainLatents:
    """A letter's main latents from k-sparse probing: the top-ranked latents the feature-splitting rule kept."""

    letter: str
    latents: tuple[int, ...]
    f1_by_k: tuple[float, ...]  # held-out F1 of the k-sparse probe for k = 1, 2, ... as far as the rule looked

    @property
    def split(self) -> bool:
        """Feature splitting: the letter needs more than one latent."""
        return len(self.latents) > 1


def _k_sparse_f1(train: Tensor, y_train: Tensor, test: Tensor, y_test: Tensor) -> float:
    """Held-out F1 of a class-balanced logistic probe on a few latents' codes (scikit-learn's default
    ridge, C = 1, as SAEBench's ``LogisticRegression(class_weight="balanced")``)."""
    weight, bias = _fit_logistic(train, y_train.unsqueeze(1).float(), l2=1.0 / len(train))
    return _f1((test @ weight.T + bias).squeeze(1) > 0, y_test)[2]


def find_main_latents(codes_train: Tensor, labels_train: Tensor, codes_test: Tensor, labels_test: Tensor,
                      letters: Iterable[str], *, max_k: int = MAX_K, f1_jump: float = F1_JUMP,
                      method: str = "l1_probe") -> dict[str, MainLatents]:
    """Each letter's main latents, by SAEBench's feature-splitting rule.

    Latents are ranked on the training words (:func:`rank_latents`). For k = 1, 2, ..., ``max_k`` a
    logistic probe on the top k latents is trained on the training words and scored (F1) on the held-out
    words; k keeps growing while F1 beats the best so far by more than ``f1_jump`` (SAEBench: 0.03, up to
    k = 10), and the main latents are the top k at the last step that did. More than one is a split.
    """
    codes_train, labels_train = _check_data(codes_train, labels_train, "codes_train")
    codes_test, labels_test = _check_data(codes_test, labels_test, "codes_test")
    if codes_train.shape[1] != codes_test.shape[1]:
        raise ValueError(f"codes_train has {codes_train.shape[1]} latents but codes_test has {codes_test.shape[1]}")
    max_k = positive_int("max_k", max_k)
    f1_jump = real_number("f1_jump", f1_jump, low=0)
    ranking = rank_latents(codes_train, labels_train, letters, method=method)
    result = {}
    for letter, order in ranking.items():
        y_train, y_test = labels_train == LETTERS.index(letter), labels_test == LETTERS.index(letter)
        best, chosen, curve = -math.inf, (), []
        for k in range(1, min(max_k, codes_train.shape[1]) + 1):
            top = order[:k]
            curve.append(_k_sparse_f1(codes_train[:, top], y_train, codes_test[:, top], y_test))
            if not curve[-1] > best + f1_jump:
                break
            best, chosen = curve[-1], tuple(top.tolist())
        result[letter] = MainLatents(letter, chosen, tuple(curve))
    return result


# ============================================================================= 5. absorption
@dataclass(frozen=True, eq=False)
class WordAbsorption:
    """Per word: SAEBench's absorption fraction (0-1) and whether the word is fully absorbed."""

    fraction: Tensor  # (n,)
    full: Tensor  # (n,) bool


def word_absorption(x: Tensor, codes: Tensor, direction: Tensor, atoms: Tensor,
                    main: Sequence[int]) -> WordAbsorption:
    """SAEBench's two absorption scores for words that the probe says start with the letter.

    With ``p`` the unit probe direction, the word's *probe projection* is ``x·p``, and latent ``i``
    contributes ``z_i · cos(atom_i, p)`` of it.

    * **Full absorption** (a word is absorbed): every main latent is silent (``|z| < 1e-8``); the latent
      that contributes most has a decoder cosine of at least 0.025 with ``p``; and it alone carries at
      least 0.4 of the probe projection (which must be positive).
    * **Absorption fraction** (partial absorption too): the *absorbers* are the (at most 3) non-main
      latents with the largest positive contribution among those with cosine at least 0.1. If the main
      latents already carry the whole projection, or the absorbers carry under 0.4 of it, the fraction is
      0; if the main latents carry nothing, 1; otherwise ``a / (a + m)``, with ``m`` the main latents'
      contribution and ``a`` the absorbers', capped at what the main latents leave unexplained.

    Words with a projection of 0 or less score 0 on both (SAEBench divides by it).
    """
    for name, value in (("x", x), ("codes", codes)):
        if not isinstance(value, Tensor) or value.ndim != 2:
            raise ValueError(f"{name} must be a 2-D tensor, got {type(value).__name__}")
    if len(x) != len(codes) or codes.shape[1] != len(atoms) or atoms.shape[1] != x.shape[1] \
            or direction.shape != (x.shape[1],):
        raise ValueError(f"shapes do not fit: x {tuple(x.shape)}, codes {tuple(codes.shape)}, atoms "
                         f"{tuple(atoms.shape)}, direction {tuple(direction.shape)}")
    main = torch.as_tensor(list(main), dtype=torch.long)
    p = direction.float() / direction.float().norm().clamp_min(1e-12)
    cosine = torch.nn.functional.normalize(atoms.detach().float(), dim=1) @ p
    projection = x.float() @ p
    contribution = codes.float() * cosine
    is_main = torch.zeros(len(atoms), dtype=torch.bool)
    is_main[main] = True
    seen = projection > 0
    safe = torch.where(seen, projection, torch.ones_like(projection))

    main_share = contribution[:, is_main].sum(1)
    candidates = ~is_main & (cosine >= FRACTION_COSINE)
    absorbers = torch.where(candidates & (contribution > 0), contribution, torch.zeros_like(contribution))
    absorbed = absorbers.topk(min(MAX_ABSORBERS, absorbers.shape[1]), dim=1).values.sum(1)
    capped = torch.minimum(absorbed, projection - main_share)
    partial = (capped / (capped + main_share).clamp_min(1e-12)).clamp(0, 1)
    fraction = torch.where(main_share <= 0, torch.ones_like(partial), partial)
    fraction = torch.where((main_share >= projection) | (absorbed / safe < PROJECTION_SHARE) | ~seen,
                           torch.zeros_like(fraction), fraction)

    silent = (codes[:, is_main].abs() < SILENT).all(1)
    top_value, top = contribution.max(1)
    full = silent & seen & (cosine[top] >= FULL_ABSORPTION_COSINE) & (top_value / safe >= PROJECTION_SHARE)
    return WordAbsorption(fraction, full)


@dataclass(frozen=True)
class LetterAbsorption:
    """One letter's absorption over its probe true positives (held-out words that start with the letter
    and that the probe recognises)."""

    letter: str
    main_latents: tuple[int, ...]
    f1_by_k: tuple[float, ...]  # the k-sparse probes' held-out F1 that chose them (MainLatents.f1_by_k)
    words: tuple[int, ...]  # rows of the held-out data that are probe true positives
    absorbed: tuple[int, ...]  # of those, the fully absorbed ones
    absorption_fraction: float  # mean absorption fraction over the true positives

    @property
    def n_true_positives(self) -> int:
        return len(self.words)

    @property
    def full_absorption_rate(self) -> float:
        """Share of the probe's true positives that are fully absorbed."""
        return len(self.absorbed) / len(self.words) if self.words else math.nan


@dataclass(frozen=True)
class AbsorptionResult:
    """Absorption of one SAE, per letter and overall (means over letters, as SAEBench reports)."""

    letters: tuple[LetterAbsorption, ...]

    def _mean(self, values) -> float:
        values = [v for v in values if not math.isnan(v)]
        return sum(values) / len(values) if values else math.nan

    @property
    def full_absorption_rate(self) -> float:
        """SAEBench's ``mean_full_absorption_score``."""
        return self._mean(r.full_absorption_rate for r in self.letters)

    @property
    def absorption_fraction(self) -> float:
        """SAEBench's ``mean_absorption_fraction_score``."""
        return self._mean(r.absorption_fraction for r in self.letters)

    @property
    def mean_main_latents(self) -> float:
        """SAEBench's ``mean_num_split_features``: main latents per letter, averaged."""
        return self._mean(float(len(r.main_latents)) for r in self.letters)

    def by_letter(self) -> dict[str, LetterAbsorption]:
        return {r.letter: r for r in self.letters}

    def rows(self) -> list[dict]:
        """One plain dict per letter, for a table."""
        return [{"letter": r.letter, "main_latents": list(r.main_latents), "f1_by_k": list(r.f1_by_k),
                 "true_positives": r.n_true_positives,
                 "fully_absorbed": len(r.absorbed), "full_absorption_rate": r.full_absorption_rate,
                 "absorption_fraction": r.absorption_fraction} for r in self.letters]


def letter_absorption(main: MainLatents, probes: LetterProbes, x: Tensor, labels: Tensor, codes: Tensor,
                      atoms: Tensor) -> LetterAbsorption:
    """:func:`word_absorption` over the held-out words that start with ``main.letter`` and that its probe
    recognises (SAEBench's denominator: the probe's true positives)."""
    letter = _check_letters([main.letter])[0]
    index = LETTERS.index(letter)
    words = ((labels == index) & (probes.scores(x)[:, index] > 0)).nonzero().squeeze(1)
    if len(words) == 0:
        return LetterAbsorption(letter, main.latents, main.f1_by_k, (), (), math.nan)
    scores = word_absorption(x[words], codes[words], probes.direction(letter), atoms, main.latents)
    return LetterAbsorption(letter, main.latents, main.f1_by_k, tuple(words.tolist()),
                            tuple(words[scores.full].tolist()), float(scores.fraction.mean()))


def measure_absorption(sae, probes: LetterProbes, letters: Iterable[str], x_train: Tensor, labels_train: Tensor,
                       x_test: Tensor, labels_test: Tensor, *, max_k: int = MAX_K, f1_jump: float = F1_JUMP,
                       method: str = "l1_probe", batch_size: int = 4096) -> AbsorptionResult:
    """The whole test for one SAE: encode the words, find each letter's main latents by k-sparse probing
    (:func:`find_main_latents`), and score absorption on the held-out words (:func:`letter_absorption`).

    ``letters`` are the letters to score, normally ``select_letters(...).kept``; ``probes`` were trained on
    ``x_train``. Any SAE family works: only ``sae.encode`` and ``sae.atoms()`` are used."""
    letters = _check_letters(letters)
    x_train, labels_train = _check_data(x_train, labels_train, "x_train")
    x_test, labels_test = _check_data(x_test, labels_test, "x_test")
    if x_train.shape[1] != sae.d_in or x_test.shape[1] != sae.d_in:
        raise ValueError(f"the SAE has d_in={sae.d_in}; the words' activations have d={x_train.shape[1]} "
                         f"(train) and {x_test.shape[1]} (held out)")
    if probes.weight.shape[1] != sae.d_in:
        raise ValueError(f"the probes read d={probes.weight.shape[1]} but the SAE has d_in={sae.d_in}")
    codes_train = encode_codes(sae, x_train, batch_size=batch_size)
    codes_test = encode_codes(sae, x_test, batch_size=batch_size)
    main = find_main_latents(codes_train, labels_train, codes_test, labels_test, letters, max_k=max_k,
                             f1_jump=f1_jump, method=method)
    atoms = sae.atoms().detach().float().cpu()
    return AbsorptionResult(tuple(letter_absorption(main[letter], probes, x_test, labels_test, codes_test, atoms)
                                  for letter in letters))

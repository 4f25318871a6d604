"""Every exercise checker accepts a right answer and rejects a typical wrong one with a helpful sentence.

A right answer is a plain implementation, as in the chapters' solutions. The wrong ones are the
mistakes a learner makes (MP without the residual update, TopK without the ReLU, KL the wrong way
round, ...): each checker must return False and say what was expected, what it got, and on which input.
"""

import re
from pathlib import Path

import jupytext
import pytest
import torch
import torch.nn.functional as F

from sae_lib import exercises as ex
from sae_lib.metrics import aligned_atoms


def rejects(checker, wrong, capsys, *words):
    """The checker returns False for ``wrong``, prints one '✗' line naming the input, and raises with
    ``solution=True``."""
    assert checker(wrong) is False
    out = capsys.readouterr().out.strip()
    assert out.startswith("✗") and len(out.splitlines()) == 1, out
    assert "expected" in out and " On " in out, out
    for word in words:
        assert word in out, out
    with pytest.raises(ex.ExerciseFailed):
        checker(wrong, solution=True)
    return out


def accepts(checker, right, capsys):
    assert checker(right) is True
    assert capsys.readouterr().out.startswith("✓")
    assert checker(right, solution=True) is True
    capsys.readouterr()


def test_unfilled_stub_is_reported_not_attempted_and_raises_for_a_solution(capsys):
    def stub(dictionary):
        raise NotImplementedError

    assert ex.check_interference(stub) is False
    assert "not attempted yet" in capsys.readouterr().out
    with pytest.raises(NotImplementedError):
        ex.check_interference(stub, solution=True)


def test_a_crashing_attempt_is_reported_in_one_sentence(capsys):
    def crashes(dictionary):
        return dictionary @ dictionary  # shapes do not fit

    assert ex.check_interference(crashes) is False
    out = capsys.readouterr().out
    assert out.startswith("✗") and "RuntimeError" in out and "on 5 features" in out


def test_prefer_takes_yours_only_once_it_passed(capsys):
    def yours():
        pass

    def solution():
        pass

    assert ex.prefer(yours, solution, True) is yours
    assert ex.prefer(yours, solution, False) is solution
    assert "solution" in capsys.readouterr().out


# ---------------------------------------------------------------- chapter 1
def interference(dictionary):
    unit = F.normalize(dictionary, dim=1)
    return (unit @ unit.T).fill_diagonal_(0.0)


def test_interference(capsys):
    accepts(ex.check_interference, interference, capsys)
    rejects(ex.check_interference, lambda d: (d @ d.T).fill_diagonal_(0.0), capsys)  # not normalised
    rejects(ex.check_interference, lambda d: F.normalize(d, dim=1) @ F.normalize(d, dim=1).T, capsys,
            "[0, 0]")  # the diagonal (a feature with itself) left at 1


def matched_cosine(learned, true):
    from scipy.optimize import linear_sum_assignment

    cos = F.normalize(true, dim=1) @ F.normalize(learned, dim=1).T
    rows, cols = linear_sum_assignment(cos.numpy(), maximize=True)
    return cos[rows, cols]


def test_matched_cosine(capsys):
    accepts(ex.check_matched_cosine, matched_cosine, capsys)

    def greedy(learned, true):  # each feature in turn takes its best atom still free
        cos = F.normalize(true, dim=1) @ F.normalize(learned, dim=1).T
        free, out = torch.ones(cos.shape[1], dtype=torch.bool), []
        for row in cos:
            j = int(row.masked_fill(~free, -2).argmax())
            free[j] = False
            out.append(row[j])
        return torch.stack(out)

    def best_any(learned, true):  # MMCS's per-feature score: one atom may serve several features
        return (F.normalize(true, dim=1) @ F.normalize(learned, dim=1).T).max(dim=1).values

    rejects(ex.check_matched_cosine, greedy, capsys, "random learned atoms")
    rejects(ex.check_matched_cosine, best_any, capsys)
    rejects(ex.check_matched_cosine, lambda learned, true: matched_cosine(learned, true).sort().values,
            capsys)  # sorted, not in the true features' order


# ---------------------------------------------------------------- chapter 2
def norm_weighted_loss(x, x_hat, z, W_dec, l1_coeff):
    rows = z.numel() // z.shape[-1]
    return (x_hat - x).pow(2).mean() + l1_coeff * (z * W_dec.norm(dim=1)).sum() / rows


def best_code(x, atom, b_dec, l1_coeff):
    unit = F.normalize(atom, dim=0)
    z = ((x - b_dec) @ unit - l1_coeff * x.shape[-1] / 2).clamp(min=0)
    return z, z[:, None] * unit + b_dec


def test_best_code(capsys):
    accepts(ex.check_best_code, best_code, capsys)

    def threshold_without_d(x, atom, b_dec, l1_coeff):  # λ/2: as if the MSE were a plain sum
        unit = F.normalize(atom, dim=0)
        z = ((x - b_dec) @ unit - l1_coeff / 2).clamp(min=0)
        return z, z[:, None] * unit + b_dec

    def not_centred(x, atom, b_dec, l1_coeff):  # reads x instead of x - b_dec
        return best_code(x + b_dec, atom, b_dec, l1_coeff)[0], best_code(x, atom, b_dec, l1_coeff)[1]

    def raw_atom(x, atom, b_dec, l1_coeff):
        z = ((x - b_dec) @ atom - l1_coeff * x.shape[-1] / 2).clamp(min=0)
        return z, z[:, None] * atom + b_dec

    rejects(ex.check_best_code, threshold_without_d, capsys, "z[")
    rejects(ex.check_best_code, not_centred, capsys, "b_dec")
    rejects(ex.check_best_code, raw_atom, capsys)


def test_norm_weighted_loss(capsys):
    accepts(ex.check_norm_weighted_loss, norm_weighted_loss, capsys)

    def plain_l1(x, x_hat, z, W_dec, l1_coeff):  # forgets the decoder norms
        return (x_hat - x).pow(2).mean() + l1_coeff * z.sum() / (z.numel() // z.shape[-1])

    def squared_norms(x, x_hat, z, W_dec, l1_coeff):
        rows = z.numel() // z.shape[-1]
        return (x_hat - x).pow(2).mean() + l1_coeff * (z * W_dec.pow(2).sum(1)).sum() / rows

    def mean_over_latents(x, x_hat, z, W_dec, l1_coeff):
        return (x_hat - x).pow(2).mean() + l1_coeff * (z * W_dec.norm(dim=1)).mean()

    for wrong in (plain_l1, squared_norms, mean_over_latents):
        rejects(ex.check_norm_weighted_loss, wrong, capsys, "the loss")
    out = rejects(ex.check_norm_weighted_loss, lambda *a: norm_weighted_loss(*a).item(), capsys)
    assert "without one" in out


# ---------------------------------------------------------------- chapter 3
def topk_activation(pre, k):
    values, indices = pre.topk(k, dim=-1)
    return torch.zeros_like(pre).scatter(-1, indices, F.relu(values))


def auxk(sae, x, x_hat, dead_mask):
    residual = (x - x_hat).detach()
    pre = (x - sae.b_dec) @ sae.W_enc[:, dead_mask] + sae.b_enc[dead_mask]
    z_aux = topk_activation(pre, min(sae.k_aux, int(dead_mask.sum())))
    residual_hat = z_aux @ sae.atoms()[dead_mask]
    unexplained = (residual_hat - residual).pow(2).mean() / residual.pow(2).mean()
    return sae.auxk_coeff * unexplained * (x - x.mean(0)).pow(2).mean()


def batchtopk_threshold(batches, k, momentum):
    estimate = -1.0
    for pre in batches:
        kept = pre.flatten().topk(min(max(1, round(k * len(pre))), pre.numel())).values
        kept = kept[kept > 0]
        if len(kept):
            smallest = kept.min().item()
            estimate = smallest if estimate < 0 else momentum * estimate + (1 - momentum) * smallest
    return estimate


def test_batchtopk_threshold(capsys):
    accepts(ex.check_batchtopk_threshold, batchtopk_threshold, capsys)

    def per_row(batches, k, momentum):  # TopK's selection (k per row), not the batch's
        return batchtopk_threshold([pre.topk(round(k), dim=-1).values for pre in batches], 1, momentum)

    def keeps_negatives(batches, k, momentum):  # the k·B-th value, even when it is not positive
        estimate = None
        for pre in batches:
            smallest = pre.flatten().topk(round(k * len(pre))).values.min().item()
            estimate = smallest if estimate is None else momentum * estimate + (1 - momentum) * smallest
        return estimate

    def momentum_on_the_new_value(batches, k, momentum):
        return batchtopk_threshold(batches, k, 1 - momentum)

    rejects(ex.check_batchtopk_threshold, per_row, capsys, "one batch")
    rejects(ex.check_batchtopk_threshold, keeps_negatives, capsys, "fewer positive")
    rejects(ex.check_batchtopk_threshold, momentum_on_the_new_value, capsys, "momentum")


def test_auxk(capsys):
    accepts(ex.check_auxk, auxk, capsys)

    def every_latent(sae, x, x_hat, dead_mask):
        return auxk(sae, x, x_hat, torch.ones_like(dead_mask))

    def not_normalised(sae, x, x_hat, dead_mask):  # raw MSE: its ratio to the main loss depends on scale
        residual = (x - x_hat).detach()
        pre = (x - sae.b_dec) @ sae.W_enc[:, dead_mask] + sae.b_enc[dead_mask]
        z_aux = topk_activation(pre, min(sae.k_aux, int(dead_mask.sum())))
        return sae.auxk_coeff * (z_aux @ sae.atoms()[dead_mask] - residual).pow(2).mean()

    def without_the_variance(sae, x, x_hat, dead_mask):  # the fraction alone: not on the MSE's scale
        return auxk(sae, x, x_hat, dead_mask) / (x - x.mean(0)).pow(2).mean()

    rejects(ex.check_auxk, every_latent, capsys, "dead")
    rejects(ex.check_auxk, not_normalised, capsys)
    rejects(ex.check_auxk, without_the_variance, capsys)


# ---------------------------------------------------------------- chapter 4
def absorption(learned, true, parent):
    atoms, true = aligned_atoms(learned, true), F.normalize(true, dim=1)
    return torch.stack([atoms[c] @ true[p] for c, p in enumerate(parent) if p >= 0]).abs().mean()


def signed_absorption(learned, true, parent):  # the paper's signed average: turning away cancels
    atoms, true = aligned_atoms(learned, true), F.normalize(true, dim=1)
    return torch.stack([atoms[c] @ true[p] for c, p in enumerate(parent) if p >= 0]).mean()


def test_absorption(capsys):
    accepts(ex.check_absorption, absorption, capsys)

    def unmatched(learned, true, parent):  # reads learned[c] as if the SAE's atoms came in the true order
        learned, true = F.normalize(learned, dim=1), F.normalize(true, dim=1)
        return torch.stack([learned[c] @ true[p] for c, p in enumerate(parent) if p >= 0]).abs().mean()

    def child_to_child(learned, true, parent):  # the matched child atom against the child, not the parent
        atoms, true = aligned_atoms(learned, true), F.normalize(true, dim=1)
        return torch.stack([atoms[c] @ true[c] for c, p in enumerate(parent) if p >= 0]).abs().mean()

    rejects(ex.check_absorption, unmatched, capsys, "shuffled")
    rejects(ex.check_absorption, child_to_child, capsys)


def test_absorption_checker_rejects_signed_cosines(capsys):
    rejects(ex.check_absorption, signed_absorption, capsys, "anti-absorbed")


def gram_errors(learned, true, sibling_groups, ancestor_pairs):
    atoms, unit = aligned_atoms(learned, true), F.normalize(true, dim=1)
    diff = (atoms @ atoms.T - unit @ unit.T).abs()
    flat = [diff[i, j] for group in sibling_groups for a, i in enumerate(group) for j in group[a + 1:]]
    return {"flat": torch.stack(flat).mean(), "hierarchical": torch.stack([diff[i, j] for i, j in ancestor_pairs]).mean()}


def test_gram_errors(capsys):
    accepts(ex.check_gram_errors, gram_errors, capsys)

    def signed(learned, true, sibling_groups, ancestor_pairs):
        atoms, unit = aligned_atoms(learned, true), F.normalize(true, dim=1)
        diff = atoms @ atoms.T - unit @ unit.T
        flat = [diff[i, j] for group in sibling_groups for a, i in enumerate(group) for j in group[a + 1:]]
        return {"flat": torch.stack(flat).mean(),
                "hierarchical": torch.stack([diff[i, j] for i, j in ancestor_pairs]).mean()}

    rejects(ex.check_gram_errors, signed, capsys, "anti-absorbed")


# ---------------------------------------------------------------- chapter 5
def mp_step(residual, atoms):
    coefficients, indices = F.relu(residual @ atoms.T).max(dim=-1)
    return indices, coefficients, residual - coefficients[:, None] * atoms[indices]


def matching_pursuit(x, atoms, k):
    z, residual = torch.zeros(len(x), len(atoms)), x.clone()
    for _ in range(k):
        indices, coefficients, residual = mp_step(residual, atoms)
        z[torch.arange(len(x)), indices] += coefficients
    return z, x - residual


def test_babel(capsys):
    def babel(atoms, p):
        unit = F.normalize(atoms, dim=1)
        cos = (unit @ unit.T).abs().fill_diagonal_(0.0)
        return cos.topk(p, dim=1).values.sum(1).max()

    accepts(ex.check_babel, babel, capsys)

    def with_itself(atoms, p):  # the diagonal left in: every atom's own cosine 1 counted
        unit = F.normalize(atoms, dim=1)
        return (unit @ unit.T).abs().topk(p, dim=1).values.sum(1).max()

    def signed(atoms, p):  # a negative cosine interferes as much as a positive one
        unit = F.normalize(atoms, dim=1)
        return (unit @ unit.T).fill_diagonal_(0.0).topk(p, dim=1).values.sum(1).max()

    rejects(ex.check_babel, with_itself, capsys, "coherence")
    rejects(ex.check_babel, signed, capsys)
    rejects(ex.check_babel, lambda atoms, p: babel(atoms, p) / p, capsys, "p = 3")  # a mean, not a sum


def mp_threshold(x, atoms, k, threshold):
    z, residual = torch.zeros(len(x), len(atoms)), x
    for _ in range(k):
        going = residual.norm(dim=1) >= threshold * x.norm(dim=1)
        indices, coefficients, new_residual = mp_step(residual, atoms)
        z[torch.arange(len(x)), indices] += coefficients * going
        residual = torch.where(going[:, None], new_residual, residual)
    return z


def test_mp_threshold(capsys):
    accepts(ex.check_mp_threshold, mp_threshold, capsys)

    def absolute(x, atoms, k, threshold):  # ‖r‖ < threshold, whatever the input's scale
        z, residual = torch.zeros(len(x), len(atoms)), x
        for _ in range(k):
            going = residual.norm(dim=1) >= threshold
            indices, coefficients, new_residual = mp_step(residual, atoms)
            z[torch.arange(len(x)), indices] += coefficients * going
            residual = torch.where(going[:, None], new_residual, residual)
        return z

    def whole_batch(x, atoms, k, threshold):  # runs every row until all rows are done
        z, residual = torch.zeros(len(x), len(atoms)), x
        for _ in range(k):
            if (residual.norm(dim=1) < threshold * x.norm(dim=1)).all():
                break
            indices, coefficients, residual = mp_step(residual, atoms)
            z[torch.arange(len(x)), indices] += coefficients
        return z

    rejects(ex.check_mp_threshold, absolute, capsys, "threshold 0.3")
    rejects(ex.check_mp_threshold, whole_batch, capsys)
    rejects(ex.check_mp_threshold, lambda x, atoms, k, threshold: matching_pursuit(x, atoms, k)[0],
            capsys)  # no stopping rule at all


# ---------------------------------------------------------------- chapters 6-7 (the shipped tiny LM)
def splice_hook(sae):
    def hook(activation, hook):
        x_hat, _ = sae(activation)
        return x_hat

    return hook


def ce_increase(model, sae, tokens, hook):
    def ce(logits):
        return F.cross_entropy(logits[:, :-1].flatten(0, 1), tokens[:, 1:].flatten())

    with torch.no_grad():
        spliced = model.run_with_hooks(tokens, fwd_hooks=[(hook, splice_hook(sae))])
        return (ce(spliced) - ce(model(tokens))).item()


def kl(logits_p, logits_q):
    log_p, log_q = F.log_softmax(logits_p, -1), F.log_softmax(logits_q, -1)
    return (log_p.exp() * (log_p - log_q)).sum(-1).mean()


def e2e_ds_loss(model, sae, tokens, hook, beta):
    from sae_lib.e2e import downstream_hooks
    from sae_lib.splicing import run_original, run_spliced

    later = downstream_hooks(model, hook)
    original = run_original(model, tokens, hook, capture=later)
    spliced = run_spliced(model, tokens, hook, sae, capture=later)
    mse = sum(F.mse_loss(spliced.acts[h], original.acts[h]) for h in later)
    sparsity = sum(sae.extra_losses(spliced.x, spliced.x_hat, spliced.z, None).values())
    return 0.5 * kl(original.logits, spliced.logits) + beta / len(later) * mse + sparsity


def test_splice_hook(capsys):
    accepts(ex.check_splice_hook, splice_hook, capsys)

    def forgets_to_return(sae):
        def hook(activation, hook):
            sae(activation)

        return hook

    rejects(ex.check_splice_hook, forgets_to_return, capsys, "logits")


def test_ce_increase(capsys):
    accepts(ex.check_ce_increase, ce_increase, capsys)

    def unshifted(model, sae, tokens, hook):  # predicts the current token instead of the next one
        def ce(logits):
            return F.cross_entropy(logits.flatten(0, 1), tokens.flatten())

        spliced = model.run_with_hooks(tokens, fwd_hooks=[(hook, splice_hook(sae))])
        return (ce(spliced) - ce(model(tokens))).item()

    rejects(ex.check_ce_increase, unshifted, capsys, "random")
    rejects(ex.check_ce_increase, lambda *args: -ce_increase(*args), capsys)


def test_kl(capsys):
    accepts(ex.check_kl, kl, capsys)
    rejects(ex.check_kl, lambda p, q: kl(q, p), capsys, "batch 2")  # KL in the wrong direction

    def mean_over_vocabulary(p, q):
        log_p, log_q = F.log_softmax(p, -1), F.log_softmax(q, -1)
        return (log_p.exp() * (log_p - log_q)).mean(-1).mean()

    rejects(ex.check_kl, mean_over_vocabulary, capsys)


def test_e2e_ds_loss(capsys):
    accepts(ex.check_e2e_ds_loss, e2e_ds_loss, capsys)

    def reversed_kl(model, sae, tokens, hook, beta):
        from sae_lib.e2e import downstream_hooks
        from sae_lib.splicing import run_original, run_spliced

        later = downstream_hooks(model, hook)
        original = run_original(model, tokens, hook, capture=later)
        spliced = run_spliced(model, tokens, hook, sae, capture=later)
        mse = sum(F.mse_loss(spliced.acts[h], original.acts[h]) for h in later)
        sparsity = sum(sae.extra_losses(spliced.x, spliced.x_hat, spliced.z, None).values())
        return 0.5 * kl(spliced.logits, original.logits) + beta / len(later) * mse + sparsity

    rejects(ex.check_e2e_ds_loss, reversed_kl, capsys, "β")


# ---------------------------------------------------------------- chapter 8
def modality_score(z, is_image):
    image, text = z[is_image].mean(0), z[~is_image].mean(0)
    return image / (image + text)  # 0/0 = NaN for a latent that never fires


def test_modality_score(capsys):
    accepts(ex.check_modality_score, modality_score, capsys)

    def sums_not_means(z, is_image):  # depends on how many rows each modality has
        image, text = z[is_image].sum(0), z[~is_image].sum(0)
        return image / (image + text)

    def firing_counts(z, is_image):  # how often, not how strongly
        return modality_score((z > 0).float(), is_image)

    rejects(ex.check_modality_score, sums_not_means, capsys, "15 captions")
    rejects(ex.check_modality_score, firing_counts, capsys)


def concept_overlap(z_image, z_caption, labels, value, *, pooled=False, clip=False, subtract=True,
                    standardise=True):
    """The right answer by default; each keyword makes one of the mistakes the checker must catch."""
    has = torch.tensor([label == value for label in labels])
    both = torch.cat([z_image, z_caption])

    def profile(z):
        difference = z[has].mean(0) - (z[~has].mean(0) if subtract else 0)
        if standardise:
            spread = both.std(0) if pooled else z.std(0)
            difference = torch.where(spread > 0, difference / spread.clamp_min(1e-12), 0.0)
        return difference.clamp_min(0) if clip else difference

    a, b = profile(z_image), profile(z_caption)
    norms = a.norm() * b.norm()
    return float(a @ b / norms) if norms > 0 else 0.0


def test_concept_overlap(capsys):
    accepts(ex.check_concept_overlap, concept_overlap, capsys)

    def biased_std(z_image, z_caption, labels, value):  # a global rescaling: the cosine ignores it
        return concept_overlap(z_image * 3, z_caption / 2, labels, value)

    accepts(ex.check_concept_overlap, biased_std, capsys)
    rejects(ex.check_concept_overlap,
            lambda *a: concept_overlap(*a, standardise=False), capsys)  # swamped by atom 4
    rejects(ex.check_concept_overlap, lambda *a: concept_overlap(*a, pooled=True), capsys)
    rejects(ex.check_concept_overlap, lambda *a: concept_overlap(*a, clip=True), capsys)
    rejects(ex.check_concept_overlap, lambda *a: concept_overlap(*a, subtract=False), capsys)

    def nan_for_constant_atoms(z_image, z_caption, labels, value):
        has = torch.tensor([label == value for label in labels])
        a, b = ((z[has].mean(0) - z[~has].mean(0)) / z.std(0) for z in (z_image, z_caption))
        return float(F.cosine_similarity(a, b, dim=0))

    rejects(ex.check_concept_overlap, nan_for_constant_atoms, capsys, "nan")


# ---------------------------------------------------------------- every chapter's exercises section
BOOK = Path(__file__).resolve().parents[1] / "book"


@pytest.mark.parametrize("chapter", sorted(BOOK.glob("[0-9][0-9]_*.py")), ids=lambda p: p.stem)
def test_every_chapter_has_two_exercises_each_with_a_checked_hidden_solution(chapter):
    notebook = jupytext.read(chapter)
    markdown = "\n".join(c.source for c in notebook.cells if c.cell_type == "markdown")
    labels = re.findall(r":::\{exercise\}[^\n]*\n:label: (\S+)", markdown)
    assert len(labels) >= 2, f"{chapter.name} has {len(labels)} exercises; every chapter needs at least 2"
    assert len(set(labels)) == len(labels), f"{chapter.name} repeats an exercise label: {labels}"
    cells = notebook.cells
    for label in labels:
        start = next((i for i, c in enumerate(cells) if c.cell_type == "markdown"
                      and re.search(rf"\{{solution-start\}} {re.escape(label)}\n:class: dropdown", c.source)), None)
        assert start is not None, f"{chapter.name}: exercise {label} has no hidden (dropdown) gated solution"
        end = next(i for i in range(start + 1, len(cells)) if "{solution-end}" in cells[i].source)
        solution = "\n".join(c.source for c in cells[start + 1:end] if c.cell_type == "code")
        assert re.search(r"exercises\.check_\w+\(\w+_solution, solution=True\)", solution), (
            f"{chapter.name}: the solution to {label} is not run through its checker with solution=True")
        # The reader's stub comes before the solution and is checked in reader mode.
        before = "\n".join(c.source for c in cells[:start] if c.cell_type == "code")
        name = re.search(r"exercises\.(check_\w+)\(", solution).group(1)
        assert re.search(rf"exercises\.{name}\((?!\w+_solution)\w+\)", before), (
            f"{chapter.name}: no check cell runs {name} on the reader's function before the solution")


def full_absorption(x, codes, direction, atoms, main):
    p = direction / direction.norm()
    cosine = F.normalize(atoms, dim=1) @ p
    projection, contribution = x @ p, codes * cosine
    top_value, top = contribution.max(1)
    silent = (codes[:, main].abs() < 1e-8).all(1)
    return silent & (projection > 0) & (cosine[top] >= 0.025) & (top_value >= 0.4 * projection)


def test_full_absorption(capsys):
    accepts(ex.check_full_absorption, full_absorption, capsys)

    def unnormalised(x, codes, direction, atoms, main):  # forgets that the probe has any length
        cosine = F.normalize(atoms, dim=1) @ direction
        projection, contribution = x @ direction, codes * cosine
        top_value, top = contribution.max(1)
        silent = (codes[:, main].abs() < 1e-8).all(1)
        return silent & (projection > 0) & (cosine[top] >= 0.025) & (top_value >= 0.4 * projection)

    def first_main_only(x, codes, direction, atoms, main):  # a split letter: only one main latent checked
        return full_absorption(x, codes, direction, atoms, main[:1])

    rejects(ex.check_full_absorption, unnormalised, capsys, "unit length")
    rejects(ex.check_full_absorption, first_main_only, capsys, "split")


def test_explanation_auroc(capsys):
    from sae_lib.interp_proxy import TokenExplanation, auroc

    def right(keys, counts, tokens, fires):
        return auroc(TokenExplanation(-1, "token", tuple(keys), tuple(counts)).score(tokens), fires)

    def ties_ignored(keys, counts, tokens, fires):  # ranks ties in arbitrary order
        score = TokenExplanation(-1, "token", tuple(keys), tuple(counts)).score(tokens).flatten()
        ranks = torch.empty(len(score))
        ranks[score.argsort(stable=True)] = torch.arange(1, len(score) + 1, dtype=torch.float)
        y = fires.flatten()
        n_pos, n_neg = int(y.sum()), int((~y).sum())
        return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))

    accepts(ex.check_explanation_auroc, right, capsys)
    rejects(ex.check_explanation_auroc, ties_ignored, capsys)

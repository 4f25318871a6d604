"""Does one dictionary serve both modalities? Two answers: the modality score, and ground truth.

The MP-SAE paper judges sharing by each atom's *modality score* (its image share of activation energy,
:func:`sae_lib.metrics.modality_score`): near 0.5 means "shared". That score cannot tell an atom that
serves one concept in both modalities from one that serves unrelated things in each. Where the concepts
are known (the generated scenes of :mod:`sae_lib.image_data`) a sharper question can be asked: for one
concept, do its pictures and its captions use the *same* atoms?

* :func:`split_and_shared` counts atoms by modality score (single-modality, shared).
* :func:`concept_atoms` is the profile of atoms a concept value switches on and off, in one modality.
* :func:`concept_overlap` compares a concept's image profile with its caption profile (cosine: 1 means
  the same atoms in the same proportions, about 0 unrelated ones); :func:`sharing_table` does it for
  every concept, including the *unshared* controls, where the two profiles can only agree by chance.
* :func:`atom_concepts` names, for each atom, the concept value it is most selective for in each
  modality.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pandas as pd
import torch
from torch import Tensor

SINGLE_MODALITY = 0.1  # modality score below this, or above 1 - this: an atom of one modality
SHARED_BAND = (0.25, 0.75)  # modality score inside this band: a shared atom (the and our convention)


def split_and_shared(score: Tensor) -> tuple[float, float]:
    """Among atoms that fired (score not NaN): the share that is single-modality (score < 0.1 or > 0.9)
    and the share that is shared (0.25 < score < 0.75)."""
    alive = score[~score.isnan()]
    if alive.numel() == 0:
        raise ValueError("no atom fired: there is nothing to count")
    single = ((alive < SINGLE_MODALITY) | (alive > 1 - SINGLE_MODALITY)).float().mean()
    shared = ((alive > SHARED_BAND[0]) & (alive < SHARED_BAND[1])).float().mean()
    return float(single), float(shared)


def concept_atoms(z: Tensor, labels: Sequence[str], value: str) -> Tensor:
    """How strongly ``value`` switches each atom on (or off): the mean code of rows labelled ``value``
    minus that of the other rows, in units of the atom's standard deviation over all rows (0 for an
    atom that never varies). Standardising matters: without it, atoms that fire often and strongly
    dominate every profile, and two unrelated profiles look alike."""
    if len(labels) != len(z):
        raise ValueError(f"need one label per row of the codes: {len(z)} rows, {len(labels)} labels")
    mask = torch.tensor([label == value for label in labels], device=z.device)
    if mask.all() or not mask.any():
        raise ValueError(f"value {value!r} must label some rows but not all ({int(mask.sum())} of {len(z)})")
    z = z.float()
    spread = z.std(0)
    difference = z[mask].mean(0) - z[~mask].mean(0)
    return torch.where(spread > 0, difference / spread.clamp_min(1e-12), torch.zeros_like(spread))


def concept_overlap(z_image: Tensor, z_caption: Tensor, image_labels: Sequence[str], caption_labels: Sequence[str],
                    value: str) -> float:
    """Cosine between the atom profiles of ``value`` (:func:`concept_atoms`) in pictures and in captions:
    1 means the same atoms switched on and off in the same proportions; about 0 unrelated profiles,
    which is what an unshared concept gives (0 when either profile is empty)."""
    a, b = concept_atoms(z_image, image_labels, value), concept_atoms(z_caption, caption_labels, value)
    denominator = a.norm() * b.norm()
    return float(a @ b / denominator) if denominator > 0 else 0.0


def sharing_table(z: Tensor, is_image: Tensor, labels: Mapping[str, Sequence[str]],
                  kinds: Mapping[str, str]) -> pd.DataFrame:
    """One row per concept value: its overlap between the modalities (:func:`concept_overlap`).

    ``z`` holds image rows and caption rows of matched pairs (row i of the image rows and row i of the
    caption rows are a pair); ``labels[concept]`` gives each *pair's* value; ``kinds[concept]`` says
    ``"shared"``, ``"image only"`` or ``"caption only"``. For an unshared concept one side's split is
    by a value that modality does not show, so its overlap measures what chance alone gives."""
    is_image = torch.as_tensor(is_image, dtype=torch.bool, device=z.device)
    z_image, z_caption = z[is_image], z[~is_image]
    if len(z_image) != len(z_caption):
        raise ValueError(f"need matched pairs: {len(z_image)} image rows but {len(z_caption)} caption rows")
    rows = []
    for concept, values in labels.items():
        if len(values) != len(z_image):
            raise ValueError(f"{concept}: need one value per pair ({len(z_image)}), got {len(values)}")
        for value in sorted(set(values)):
            rows.append({"concept": concept, "value": value, "kind": kinds[concept],
                         "overlap": concept_overlap(z_image, z_caption, values, values, value)})
    return pd.DataFrame(rows)


def atom_concepts(z: Tensor, is_image: Tensor, labels: Mapping[str, Sequence[str]], atoms: Sequence[int]) -> pd.DataFrame:
    """For each atom in ``atoms``: the concept value that switches it on most strongly among pictures and
    among captions (:func:`concept_atoms`, in standard deviations), and whether the two agree."""
    is_image = torch.as_tensor(is_image, dtype=torch.bool, device=z.device)
    out = []
    for side, rows in (("image", is_image), ("caption", ~is_image)):
        zs = z[rows][:, list(atoms)].float()
        best, best_name = torch.zeros(len(atoms)), [""] * len(atoms)
        for concept, values in labels.items():
            for value in sorted(set(values)):
                gain = concept_atoms(zs, values, value).cpu()
                for j in torch.nonzero(gain > best).flatten().tolist():
                    best[j], best_name[j] = gain[j], f"{concept}={value}"
        out.append(pd.DataFrame({f"{side} concept": best_name, f"{side} selectivity": best.numpy()}, index=list(atoms)))
    table = pd.concat(out, axis=1)
    table["same concept"] = table["image concept"] == table["caption concept"]
    return table


def sharing_summary(z: Tensor, is_image: Tensor, labels: Mapping[str, Sequence[str]],
                    kinds: Mapping[str, str]) -> dict[str, float]:
    """The numbers the book compares across SAE families and trained models: the share of
    single-modality and of shared atoms by modality score, and the mean concept overlap of the shared
    concepts and of the unshared controls (:func:`sharing_table`)."""
    from .metrics import modality_score

    single, shared = split_and_shared(modality_score(z, is_image))
    table = sharing_table(z, is_image, labels, kinds)
    return {"single-modality atoms": single, "shared atoms": shared,
            "overlap, shared concepts": float(table.loc[table.kind == "shared", "overlap"].mean()),
            "overlap, unshared controls": float(table.loc[table.kind != "shared", "overlap"].mean())}


def train_shared_dictionaries(x: Tensor, *, k: int, n_atoms: int, steps: int, batch_size: int = 256,
                              lr: float = 1e-3, seed: int = 0, progress: bool = True) -> dict:
    """One TopK SAE and one MP-SAE with ``n_atoms`` atoms and ``k`` atoms per input, each trained on
    all rows of ``x`` (both modalities, unlabelled) with the same settings: ``{"topk": ..., "mp": ...}``."""
    from .saes import MPSAE, TopKSAE
    from .training import train_sae

    saes = {}
    for family, cls in (("topk", TopKSAE), ("mp", MPSAE)):
        sae = cls(x.shape[1], n_atoms, k=k, seed=seed).to(x.device)
        train_sae(sae, x, steps=steps, batch_size=batch_size, lr=lr, seed=seed, progress=progress,
                  desc=f"{family}, k={k}, {n_atoms} atoms")
        saes[family] = sae
    return saes

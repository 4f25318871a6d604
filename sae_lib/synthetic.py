"""Synthetic activations whose ground truth is known: sparse features in superposition.

Each sample is a sparse, non-negative combination of ``n_features`` unit-norm directions in
``d`` dimensions. With ``n_features > d`` the directions cannot all be orthogonal: that is
superposition, and the SAE's job is to recover the directions (the dictionary) and the codes.

**Held-out data**, one convention for every synthetic-data recipe and chapter: data drawn with seed
``s`` is scored on samples drawn with seed :func:`held_out_seed` ``(s) = 1_000_000 + s`` from the same
dictionary. No training seed a chapter uses comes near it, so held-out samples are never training
samples, and each training seed has its own held-out set.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from .util import positive_int, seeded_generator

HELD_OUT_OFFSET = 1_000_000


def held_out_seed(seed: int) -> int:
    """The seed of the held-out samples that go with data drawn with ``seed`` (see the module docstring)."""
    return HELD_OUT_OFFSET + seed


@dataclass
class SyntheticData:
    """Activations with their ground truth: ``x = codes @ dictionary + noise``."""

    x: Tensor  # (N, d) the activations an SAE is trained on
    codes: Tensor  # (N, n_features) the true sparse, non-negative codes
    dictionary: Tensor  # (n_features, d) the true unit-norm feature directions

    def __len__(self) -> int:
        return len(self.x)


def random_dictionary(n_features: int, d: int, *, seed: int = 0) -> Tensor:
    """``n_features`` random unit vectors in ``R^d`` (nearly orthogonal when ``d`` is large)."""
    positive_int("n_features", n_features)
    positive_int("d", d)
    gen = seeded_generator(seed)
    return F.normalize(torch.randn(n_features, d, generator=gen), dim=1)


def superposition_data(
    n_samples: int,
    *,
    n_features: int,
    d: int,
    p_active: float | Tensor = 0.05,
    magnitude: tuple[float, float] = (1.0, 0.25),
    noise: float = 0.0,
    seed: int = 0,
    dictionary: Tensor | None = None,
) -> SyntheticData:
    """Sample ``n_samples`` activations built from sparse features in superposition.

    Feature ``i`` is active independently with probability ``p_active`` (a number, or one per feature),
    with magnitude drawn from a normal ``(mean, std)`` and clipped below at 5% of the mean, so
    active means clearly non-zero. Isotropic Gaussian noise of standard deviation ``noise`` is added.
    The dictionary is :func:`random_dictionary` unless one is given.
    """
    positive_int("n_samples", n_samples)
    positive_int("n_features", n_features)
    positive_int("d", d)
    p = torch.as_tensor(p_active, dtype=torch.float32).expand(n_features).clone()
    if not bool(((p > 0) & (p <= 1)).all()):
        raise ValueError(f"p_active must lie in (0, 1] for every feature, got {p_active!r}")
    mean, std = magnitude
    if not (mean > 0 and std >= 0):
        raise ValueError(f"magnitude must be (mean > 0, std >= 0), got {magnitude!r}")
    if noise < 0:
        raise ValueError(f"noise must be non-negative, got {noise!r}")
    if dictionary is None:
        dictionary = random_dictionary(n_features, d, seed=seed + 1)
    elif dictionary.shape != (n_features, d):
        raise ValueError(f"dictionary must have shape ({n_features}, {d}), got {tuple(dictionary.shape)}")

    gen = seeded_generator(seed)
    active = torch.rand(n_samples, n_features, generator=gen) < p
    sizes = (mean + std * torch.randn(n_samples, n_features, generator=gen)).clamp_min(0.05 * mean)
    codes = active * sizes
    x = codes @ dictionary + noise * torch.randn(n_samples, d, generator=gen)
    return SyntheticData(x=x, codes=codes, dictionary=dictionary)


@dataclass
class PairedModalities:
    """A toy of a shared image-text space: every pair shows the same sparse concepts in two "modalities"
    that differ by a constant offset (CLIP's *modality gap*) and by independent noise.

    Rows ``0..N-1`` of ``x`` are the "images", rows ``N..2N-1`` their "captions" (same order).
    """

    x: Tensor  # (2N, d) unit-length embeddings
    is_image: Tensor  # (2N,) bool
    codes: Tensor  # (N, n_concepts) the concepts each pair shows (shared by its image and its caption)
    dictionary: Tensor  # (n_concepts, d) the true concept directions
    offsets: Tensor  # (2, d) unit directions of the image and text offsets


def paired_modalities(
    n_pairs: int, *, n_concepts: int, d: int, gap: float, noise: float = 0.1, p_active: float = 0.06, seed: int = 0
) -> PairedModalities:
    """Sample ``n_pairs`` image/caption pairs: ``normalise(codes @ dictionary + gap · offset_m + noise)``.

    With ``gap = 0`` both modalities are the same distribution; ``gap ≈ 2`` (with the defaults) gives a
    CLIP-like geometry: a distance of about 1 between the modality means, and a cosine of about 0.35
    between an image and its own caption.
    """
    if gap < 0 or noise < 0:
        raise ValueError(f"gap and noise must be non-negative, got gap={gap!r}, noise={noise!r}")
    shared = superposition_data(n_pairs, n_features=n_concepts, d=d, p_active=p_active, seed=seed)
    offsets = random_dictionary(2, d, seed=seed + 100)
    gen = seeded_generator(seed + 200)
    images = F.normalize(shared.x + gap * offsets[0] + noise * torch.randn(n_pairs, d, generator=gen), dim=1)
    texts = F.normalize(shared.x + gap * offsets[1] + noise * torch.randn(n_pairs, d, generator=gen), dim=1)
    is_image = torch.cat([torch.ones(n_pairs, dtype=torch.bool), torch.zeros(n_pairs, dtype=torch.bool)])
    return PairedModalities(torch.cat([images, texts]), is_image, shared.codes, shared.dictionary, offsets)

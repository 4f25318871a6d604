"""CLIP through open_clip: load it (pretrained, or a clearly labelled stand-in) and embed images and captions.

The embedding functions work for any model with CLIP's interface (``encode_image``, ``encode_text``,
and a ``tokenizer`` and ``preprocess`` in ``extras``), such as the book's own :mod:`sae_lib.mini_clip`.

CLIP maps an image and a caption into the same 512-dimensional space, trained so that an image and
its caption point the same way. The MP-SAE paper trains one SAE on both kinds of embeddings; this
module produces them the way that experiment needs:

* :func:`try_load_clip` returns pretrained CLIP or says why it cannot; :func:`untrained_clip` builds it
  at initialisation.
* :func:`load_clip` follows the book's loader contract (:mod:`sae_lib.models`): it returns whether the
  weights are pretrained, falls back to random weights with a loud banner when the hub is unreachable,
  and refuses the fallback under ``SAE_BOOK_NO_STANDINS=1``.
* :func:`embed_images` and :func:`embed_captions` run the two towers in batches with a progress bar and
  return unit-length embeddings (CLIP compares them by cosine, so their length carries no meaning).
* :func:`harvest` pairs every caption with its image, so the two modalities are balanced exactly.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from .models import LoadedModel, fall_back_to_standin, hub_unreachable_reason
from .util import progress_bar

ARCHITECTURE = "ViT-B-32"
# OpenAI's original ViT-B/32 (Radford et al. 2021): the CLIP most readers mean, and the one the
# modality-gap literature studies. The MP-SAE paper does not name its checkpoint in a form we could
# confirm; pass another open_clip tag (e.g. "laion2b_s34b_b79k") to load_clip to compare.
DEFAULT_CHECKPOINT = "openai"


@contextmanager
def _quiet_logging():
    """open_clip reports a failed download and random initialisation through the root logger; the
    stand-in banner already says both, in words a reader cannot miss."""
    previous = logging.root.manager.disable
    logging.disable(logging.ERROR)
    try:
        yield
    finally:
        logging.disable(previous)


def _quick_gelu(checkpoint: str) -> bool:
    """Some tags (OpenAI's) were trained with QuickGELU; the architecture must match them."""
    import open_clip

    known = open_clip.list_pretrained_tags_by_model(ARCHITECTURE)
    if checkpoint not in known:
        raise ValueError(f"unknown {ARCHITECTURE} checkpoint {checkpoint!r}; open_clip knows {', '.join(known)}")
    return bool(open_clip.get_pretrained_cfg(ARCHITECTURE, checkpoint).get("quick_gelu", False))


def _wrap(model, preprocess, checkpoint: str | None, name: str, device) -> LoadedModel:
    import open_clip

    model = model.to(device).eval()
    extras = {"tokenizer": open_clip.get_tokenizer(ARCHITECTURE), "preprocess": preprocess, "checkpoint": checkpoint,
              "embed_dim": int(model.text_projection.shape[1])}
    return LoadedModel(model=model, name=name, pretrained=checkpoint is not None, extras=extras)


def try_load_clip(checkpoint: str = DEFAULT_CHECKPOINT, *, device: str | torch.device = "cpu") -> tuple[LoadedModel | None, str | None]:
    """Pretrained CLIP ViT-B/32 (``checkpoint``, an open_clip tag) in eval mode, or ``(None, reason)``
    when its weights cannot be had (no hub, no local cache). Never a stand-in: a chapter that has
    another model to analyse asks this first."""
    import open_clip

    quick_gelu = _quick_gelu(checkpoint)
    reason = hub_unreachable_reason()
    if reason is not None:
        return None, reason
    try:
        with _quiet_logging():
            model, _, preprocess = open_clip.create_model_and_transforms(
                ARCHITECTURE, pretrained=checkpoint, force_quick_gelu=quick_gelu)
    except Exception as error:  # any failure to fetch or read the weights: the hub, the cache, the disk
        return None, f"{type(error).__name__}: {error}"
    return _wrap(model, preprocess, checkpoint, f"{ARCHITECTURE} ({checkpoint})", device), None


def untrained_clip(checkpoint: str = DEFAULT_CHECKPOINT, *, device: str | torch.device = "cpu", seed: int = 0) -> LoadedModel:
    """CLIP ViT-B/32's architecture (as ``checkpoint`` builds it) with random weights seeded by ``seed``:
    CLIP at initialisation, for comparisons such as the modality gap before training."""
    import open_clip

    quick_gelu = _quick_gelu(checkpoint)
    with torch.random.fork_rng(devices=[]), _quiet_logging():
        torch.manual_seed(seed)
        model, _, preprocess = open_clip.create_model_and_transforms(ARCHITECTURE, pretrained=None,
                                                                     force_quick_gelu=quick_gelu)
    return _wrap(model, preprocess, None, f"{ARCHITECTURE} (random weights)", device)


def load_clip(checkpoint: str = DEFAULT_CHECKPOINT, *, device: str | torch.device = "cpu", seed: int = 0) -> LoadedModel:
    """CLIP ViT-B/32 with the ``checkpoint`` weights (an open_clip tag), in eval mode on ``device``.

    If the weights cannot be loaded, the same architecture with random weights (seeded by ``seed``, so
    the stand-in is reproducible) and open_clip's bundled tokenizer, after a banner; or an error when
    ``SAE_BOOK_NO_STANDINS=1``. ``extras`` holds ``tokenizer``, ``preprocess`` (the image transform),
    ``checkpoint`` (None for a stand-in) and ``embed_dim``.
    """
    loaded, reason = try_load_clip(checkpoint, device=device)
    if loaded is not None:
        return loaded
    fall_back_to_standin(f"{ARCHITECTURE} ({checkpoint})", reason)
    standin = untrained_clip(checkpoint, device=device, seed=seed)
    standin.name = f"{ARCHITECTURE} (random-weight stand-in)"
    return standin


# ----------------------------------------------------------------------------- input checks
def check_image(image, index: int = 0) -> Image.Image:
    """Accept an RGB ``PIL.Image`` or an ``(H, W, 3)`` uint8 array; anything else is a clear error
    (convert grey or RGBA pictures yourself, so nothing changes behind your back)."""
    where = f"image {index}"
    if isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[-1] != 3:
            raise ValueError(f"{where}: an image array must have shape (height, width, 3); got {image.shape}")
        if image.dtype != np.uint8:
            raise ValueError(f"{where}: an image array must be uint8 (0-255); got dtype {image.dtype}")
        image = Image.fromarray(image, mode="RGB")
    if not isinstance(image, Image.Image):
        raise TypeError(f"{where}: expected a PIL.Image or a numpy array, got {type(image).__name__}")
    if image.mode != "RGB":
        raise ValueError(f"{where} has mode {image.mode!r}; the image tower needs 'RGB' (use image.convert('RGB'))")
    if min(image.size) < 8:
        raise ValueError(f"{where} is {image.size[0]}x{image.size[1]} pixels: too small to show a model anything")
    return image


def check_captions(captions: Sequence[str]) -> list[str]:
    if isinstance(captions, str) or not isinstance(captions, Sequence):
        raise TypeError(f"captions must be a list of strings, got {type(captions).__name__}")
    if len(captions) == 0:
        raise ValueError("captions is empty: there is nothing to embed")
    for i, caption in enumerate(captions):
        if not isinstance(caption, str):
            raise TypeError(f"caption {i} is a {type(caption).__name__}, not a string")
        if not caption.strip():
            raise ValueError(f"caption {i} is empty")
    return list(captions)


def _check_clip(clip: LoadedModel) -> None:
    if not isinstance(clip, LoadedModel) or not {"tokenizer", "preprocess"} <= set(clip.extras):
        raise TypeError("pass the LoadedModel that load_clip() returns")


# ----------------------------------------------------------------------------- embedding
def _device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.inference_mode()
def embed_images(clip: LoadedModel, images: Sequence, *, batch_size: int = 32, progress: bool = True) -> Tensor:
    """Unit-length CLIP image embeddings, ``(len(images), embed_dim)`` float32 on the CPU."""
    _check_clip(clip)
    if isinstance(images, (Image.Image, np.ndarray)) or not isinstance(images, Sequence):
        raise TypeError(f"images must be a list of images, got {type(images).__name__}")
    if len(images) == 0:
        raise ValueError("images is empty: there is nothing to embed")
    images = [check_image(image, i) for i, image in enumerate(images)]
    device, preprocess = _device(clip.model), clip.extras["preprocess"]
    out = []
    for start in progress_bar(range(0, len(images), batch_size), desc="embedding images", show=progress):
        pixels = torch.stack([preprocess(image) for image in images[start : start + batch_size]]).to(device)
        out.append(F.normalize(clip.model.encode_image(pixels).float(), dim=-1).cpu())
    return torch.cat(out)


@torch.inference_mode()
def embed_captions(clip: LoadedModel, captions: Sequence[str], *, batch_size: int = 64, progress: bool = True) -> Tensor:
    """Unit-length CLIP text embeddings, ``(len(captions), embed_dim)`` float32 on the CPU."""
    _check_clip(clip)
    captions = check_captions(captions)
    device, tokenizer = _device(clip.model), clip.extras["tokenizer"]
    out = []
    for start in progress_bar(range(0, len(captions), batch_size), desc="embedding captions", show=progress):
        tokens = tokenizer(captions[start : start + batch_size]).to(device)
        out.append(F.normalize(clip.model.encode_text(tokens).float(), dim=-1).cpu())
    return torch.cat(out)


@dataclass
class PairedEmbeddings:
    """Image and caption embeddings in one table, balanced between the modalities.

    Row ``r`` of ``x`` is either a caption or a copy of that caption's image: every caption appears
    once and every image once per caption, so an image with five captions weighs as much as its five
    captions do, and the two modalities have exactly as many rows.
    """

    x: Tensor  # (2 * n_captions, d) unit-length embeddings: all image rows, then all caption rows
    is_image: Tensor  # (2 * n_captions,) bool
    image_index: Tensor  # (2 * n_captions,) the image each row shows or describes
    caption_index: Tensor  # (2 * n_captions,) the caption of the pair each row belongs to
    image_embeddings: Tensor  # (n_images, d) one row per distinct image
    caption_embeddings: Tensor  # (n_captions, d)
    captions: list[str] = field(default_factory=list)  # the caption texts, when known (harvest fills them)

    def __len__(self) -> int:
        return len(self.x)


def pair_embeddings(image_embeddings: Tensor, caption_embeddings: Tensor, caption_image: Tensor | Sequence[int],
                    captions: Sequence[str] = ()) -> PairedEmbeddings:
    """Balance the modalities: pair caption ``j`` (text ``captions[j]``, optional) with image ``caption_image[j]``."""
    caption_image = torch.as_tensor(caption_image, dtype=torch.long)
    if image_embeddings.ndim != 2 or caption_embeddings.ndim != 2 or image_embeddings.shape[1] != caption_embeddings.shape[1]:
        raise ValueError(f"need (n, d) image and caption embeddings with the same d; got "
                         f"{tuple(image_embeddings.shape)} and {tuple(caption_embeddings.shape)}")
    if caption_image.shape != (len(caption_embeddings),):
        raise ValueError(f"caption_image must name one image per caption: {len(caption_embeddings)} captions, "
                         f"{caption_image.numel()} entries")
    if len(caption_image) and (caption_image.min() < 0 or caption_image.max() >= len(image_embeddings)):
        raise ValueError(f"caption_image refers to images outside 0..{len(image_embeddings) - 1}")
    if captions and len(captions) != len(caption_embeddings):
        raise ValueError(f"got {len(captions)} caption texts for {len(caption_embeddings)} caption embeddings")
    uncaptioned = len(image_embeddings) - caption_image.unique().numel()
    if uncaptioned:
        raise ValueError(f"{uncaptioned} image(s) have no caption; every image needs at least one")
    n = len(caption_embeddings)
    return PairedEmbeddings(
        x=torch.cat([image_embeddings[caption_image], caption_embeddings]),
        is_image=torch.cat([torch.ones(n, dtype=torch.bool), torch.zeros(n, dtype=torch.bool)]),
        image_index=torch.cat([caption_image, caption_image]),
        caption_index=torch.arange(n).repeat(2),
        image_embeddings=image_embeddings, caption_embeddings=caption_embeddings, captions=list(captions),
    )


def harvest(clip: LoadedModel, images: Sequence, captions: Sequence[Sequence[str]], *, captions_per_image: int | None = None,
            batch_size: int = 32, progress: bool = True) -> PairedEmbeddings:
    """Embed ``images`` and their ``captions`` (``captions[i]`` describe ``images[i]``) and pair them.

    ``captions_per_image`` keeps only the first few captions of each image (``None``: all of them).
    """
    if len(images) != len(captions):
        raise ValueError(f"got {len(images)} images but {len(captions)} caption lists: give one list per image")
    if captions_per_image is not None and (isinstance(captions_per_image, bool) or not isinstance(captions_per_image, int)
                                           or captions_per_image <= 0):
        raise ValueError(f"captions_per_image must be a positive integer or None, got {captions_per_image!r}")
    flat, owner = [], []
    for i, caps in enumerate(captions):
        if isinstance(caps, str) or len(caps) == 0:
            raise ValueError(f"image {i} needs a non-empty list of captions, got {caps!r}")
        kept = list(caps)[:captions_per_image]
        flat += kept
        owner += [i] * len(kept)
    image_embeddings = embed_images(clip, images, batch_size=batch_size, progress=progress)
    caption_embeddings = embed_captions(clip, flat, batch_size=2 * batch_size, progress=progress)
    return pair_embeddings(image_embeddings, caption_embeddings, owner, flat)

"""A CLIP in miniature: two different towers trained contrastively on generated captioned scenes.

CLIP's embedding space is what it is because two *different* encoders, one for pictures and one for
text, are trained so that a picture and its caption point the same way (Radford et al. 2021). No
installable package carries CLIP-style weights, so the book trains the same kind of model at toy scale
(``scripts/train_mini_clip.py``) and ships the checkpoint in ``sae_lib/assets/mini_clip``:

* the **image tower** is a small convolutional network over 32x32 pictures;
* the **text tower** is a one-layer transformer over a word tokenizer (the caption vocabulary of
  :mod:`sae_lib.image_data`), mean-pooled;
* both end in a linear projection to a shared 64-dimensional space, and the loss is CLIP's symmetric
  InfoNCE with a **learned temperature** (or a fixed one, for the book's sweep).

:func:`load_mini_clip` returns a :class:`~sae_lib.models.LoadedModel` whose ``extras`` hold a
``tokenizer`` and a ``preprocess`` like open_clip's, so :func:`sae_lib.clip.harvest` embeds with either.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn

from .bundle import frozen, load_bundle, save_bundle
from .image_data import caption_scene, caption_vocabulary, draw_scenes, sample_scene, scene_batch
from .models import LoadedModel
from .training import lr_factor
from .util import positive_int, progress_bar

PACKAGED_CHECKPOINT = "mini_clip"
LR_SCHEDULE = dict(schedule="cosine", warmup=0.05, decay=0.0, final_lr_frac=0.0)
""":func:`~sae_lib.training.lr_factor`'s settings for :func:`train_mini_clip`: a linear warm-up over 5% of the
steps, then a cosine decay to zero. Saved models record them. The shipped checkpoint records none: it was
trained before, by the same warm-up under ``min(warm-up, cosine counted from step 0)``."""
MAX_WORDS = 20  # the longest generated caption has 17 words


# ----------------------------------------------------------------------------- the tokenizer
class WordTokenizer:
    """Splits a caption on spaces and maps each word to its index (0 pads, 1 is an unknown word)."""

    def __init__(self, vocabulary: list[str], max_words: int = MAX_WORDS):
        self.vocabulary = list(vocabulary)
        self.index = {word: i + 2 for i, word in enumerate(self.vocabulary)}
        self.max_words = positive_int("max_words", max_words)

    def __len__(self) -> int:
        return len(self.vocabulary) + 2

    def __call__(self, captions: list[str]) -> Tensor:
        """``(len(captions), max_words)`` token indices, padded with 0 (longer captions are cut)."""
        rows = torch.zeros(len(captions), self.max_words, dtype=torch.long)
        for i, caption in enumerate(captions):
            ids = [self.index.get(word, 1) for word in caption.lower().replace(",", " , ").split()][: self.max_words]
            rows[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        return rows


# ----------------------------------------------------------------------------- the model
@dataclass
class MiniClipConfig:
    image_size: int = 32
    embed_dim: int = 64
    channels: tuple[int, int, int] = (16, 32, 64)
    text_width: int = 64
    text_heads: int = 4
    temperature: float | None = None  # None: learned, as in CLIP; a number: fixed at that value
    init_temperature: float = 0.07  # CLIP's starting value
    vocabulary: list[str] = field(default_factory=caption_vocabulary)
    seed: int = 0

    def __post_init__(self):
        positive_int("image_size", self.image_size)
        positive_int("embed_dim", self.embed_dim)
        if self.image_size % 8:
            raise ValueError(f"image_size must be a multiple of 8 (three halvings), got {self.image_size}")
        if self.temperature is not None and not 0 < self.temperature <= 1:
            raise ValueError(f"temperature must be None (learned) or lie in (0, 1], got {self.temperature!r}")
        self.channels = tuple(self.channels)


class ImageTower(nn.Module):
    """Three conv + max-pool stages, then a two-layer head on the flattened map (flattening, not
    average pooling, keeps *where* things are, which the captions talk about)."""

    def __init__(self, cfg: MiniClipConfig):
        super().__init__()
        c1, c2, c3 = cfg.channels
        self.features = nn.Sequential(
            nn.Conv2d(3, c1, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(c2, c3, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        )
        side = cfg.image_size // 8
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(c3 * side * side, 128), nn.ReLU(), nn.Linear(128, cfg.embed_dim))

    def forward(self, pixels: Tensor) -> Tensor:
        return self.head(self.features(pixels))


class TextTower(nn.Module):
    """Word and position embeddings, one transformer layer, a mean over the real words, a projection."""

    def __init__(self, cfg: MiniClipConfig):
        super().__init__()
        self.words = nn.Embedding(len(cfg.vocabulary) + 2, cfg.text_width, padding_idx=0)
        self.positions = nn.Parameter(0.02 * torch.randn(MAX_WORDS, cfg.text_width))
        self.layer = nn.TransformerEncoderLayer(cfg.text_width, cfg.text_heads, dim_feedforward=2 * cfg.text_width,
                                                dropout=0.0, batch_first=True, norm_first=True)
        self.project = nn.Linear(cfg.text_width, cfg.embed_dim)

    def forward(self, tokens: Tensor) -> Tensor:
        real = tokens != 0
        h = self.layer(self.words(tokens) + self.positions[: tokens.shape[1]], src_key_padding_mask=~real)
        pooled = (h * real[..., None]).sum(1) / real.sum(1, keepdim=True).clamp_min(1)
        return self.project(pooled)


class MiniClip(nn.Module):
    """The two towers and the temperature. ``encode_image`` and ``encode_text`` return raw (not yet
    unit-length) embeddings, as open_clip's do."""

    def __init__(self, cfg: MiniClipConfig):
        super().__init__()
        self.cfg = cfg
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            self.image_tower = ImageTower(cfg)
            self.text_tower = TextTower(cfg)
        start = math.log(1 / (cfg.temperature or cfg.init_temperature))
        # CLIP learns log(1/T); a fixed temperature is a buffer the optimiser never sees
        if cfg.temperature is None:
            self.logit_scale = nn.Parameter(torch.tensor(start))
        else:
            self.register_buffer("logit_scale", torch.tensor(start))

    @property
    def temperature(self) -> float:
        return float(torch.exp(-self.logit_scale.detach()))

    def encode_image(self, pixels: Tensor) -> Tensor:
        return self.image_tower(pixels)

    def encode_text(self, tokens: Tensor) -> Tensor:
        return self.text_tower(tokens)


def pixels(pictures: np.ndarray | list) -> Tensor:
    """uint8 pictures ``(n, h, w, 3)`` (or a list of PIL images) as the image tower's input, ``(n, 3, h, w)``
    scaled to about [-1, 1]."""
    array = np.stack([np.asarray(p) for p in pictures]) if isinstance(pictures, list) else np.asarray(pictures)
    return (torch.from_numpy(array).permute(0, 3, 1, 2).float() - 127.5) / 127.5


def preprocess_for(cfg: MiniClipConfig):
    """open_clip-style ``preprocess``: one PIL image to a ``(3, size, size)`` tensor (resized if needed)."""
    def preprocess(image: Image.Image) -> Tensor:
        if image.size != (cfg.image_size, cfg.image_size):
            image = image.resize((cfg.image_size, cfg.image_size), Image.BILINEAR)
        return pixels([image])[0]
    return preprocess


def contrastive_loss(image_embeddings: Tensor, text_embeddings: Tensor, logit_scale: Tensor) -> Tensor:
    """CLIP's symmetric InfoNCE: row i of each batch is a matched pair, every other row a negative."""
    img, txt = F.normalize(image_embeddings, dim=-1), F.normalize(text_embeddings, dim=-1)
    logits = logit_scale.clamp(max=math.log(100)).exp() * img @ txt.T  # CLIP caps 1/T at 100
    target = torch.arange(len(img), device=img.device)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


# ----------------------------------------------------------------------------- measuring a model
@torch.no_grad()
def embed_pairs(model: MiniClip, pictures: np.ndarray, captions: list[str], tokenizer: WordTokenizer,
                batch_size: int = 512) -> tuple[Tensor, Tensor]:
    """Unit-length image and caption embeddings of matched pairs (fast path for training and sweeps)."""
    model.eval()
    img = torch.cat([model.encode_image(pixels(pictures[i : i + batch_size])) for i in range(0, len(pictures), batch_size)])
    txt = torch.cat([model.encode_text(tokenizer(captions[i : i + batch_size])) for i in range(0, len(captions), batch_size)])
    return F.normalize(img, dim=-1), F.normalize(txt, dim=-1)


def retrieval_accuracy(image_embeddings: Tensor, text_embeddings: Tensor, *, pool: int = 100,
                       ks: tuple[int, ...] = (1, 5)) -> dict[str, float]:
    """Recall@k both ways within pools of ``pool`` held-out pairs (chance: k / pool).

    Row i of each is a matched pair; each image ranks the pool's captions (image→text) and each caption
    the pool's images (text→image). Pools keep chance fixed whatever the number of pairs."""
    n = len(image_embeddings) // pool * pool
    if n == 0:
        raise ValueError(f"need at least pool={pool} pairs, got {len(image_embeddings)}")
    result = {}
    for direction, (a, b) in {"image→text": (image_embeddings, text_embeddings),
                              "text→image": (text_embeddings, image_embeddings)}.items():
        sims = a[:n].reshape(-1, pool, a.shape[1]) @ b[:n].reshape(-1, pool, b.shape[1]).transpose(1, 2)
        # how many others score at least as high as the true partner (ties count against the model)
        rank = (sims >= sims.diagonal(dim1=1, dim2=2)[..., None]).sum(-1) - 1
        for k in ks:
            result[f"{direction} R@{k}"] = float((rank < k).float().mean())
    return result


def modality_gap(image_embeddings: Tensor, text_embeddings: Tensor) -> dict[str, float]:
    """The modality gap of Liang et al. (2022): how far apart the two modalities' centroids are.

    ``centroid distance`` is ``|mean(img) - mean(txt)|`` over unit-length embeddings (0: no gap, up to
    2); ``variance along the gap`` is the share of the pooled embeddings' variance that lies along the
    line joining the two centroids (1/d if the gap direction were nothing special)."""
    img, txt = F.normalize(image_embeddings.float(), dim=-1), F.normalize(text_embeddings.float(), dim=-1)
    gap = img.mean(0) - txt.mean(0)
    both = torch.cat([img, txt])
    centred = both - both.mean(0)
    along = (centred @ (gap / gap.norm().clamp_min(1e-12))).pow(2).sum()
    return {"centroid distance": float(gap.norm()), "variance along the gap": float(along / centred.pow(2).sum()),
            "centroid cosine": float(F.cosine_similarity(img.mean(0), txt.mean(0), dim=0))}


# ----------------------------------------------------------------------------- training
@dataclass
class MiniClipRun:
    """What training recorded: the loss and temperature per step, the modality gap and held-out
    retrieval at a few steps (``checkpoints``), and the wall time."""

    loss: list[float] = field(default_factory=list)
    temperature: list[float] = field(default_factory=list)
    checkpoints: list[dict] = field(default_factory=list)
    seconds: float = 0.0


def held_out_pairs(n: int, *, seed: int, size: int = 32, completeness: float = 1.0):
    """Scenes never seen in training (their own seed stream), with one caption each."""
    return scene_batch(n, seed=10_000_019 + seed, size=size, completeness=completeness)


def train_mini_clip(cfg: MiniClipConfig, *, steps: int = 600, batch_size: int = 256, lr: float = 2e-3,
                    completeness: float = 1.0, pool_size: int = 8000, check_every: int = 100,
                    progress: bool = True) -> tuple[MiniClip, MiniClipRun]:
    """Train a :class:`MiniClip` from scratch; deterministic on CPU for a fixed ``cfg.seed``.

    The pictures are a pool of ``pool_size`` scenes drawn once; captions are drawn afresh every step
    (new template, synonyms and, below ``completeness`` 1, which concepts are named). Adam with a
    linear warm-up over the first 5% of steps and a cosine decay (:data:`LR_SCHEDULE`). Every ``check_every``
    steps (and at step 0, before any update) it records the modality gap and retrieval on 1,000 held-out pairs."""
    positive_int("steps", steps)
    positive_int("batch_size", batch_size)
    positive_int("pool_size", pool_size)
    if batch_size > pool_size:
        raise ValueError(f"batch_size={batch_size} is larger than the picture pool ({pool_size})")
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    scenes = [sample_scene(rng) for _ in range(pool_size)]
    pool = pixels(draw_scenes(scenes, size=cfg.image_size, rng=rng))
    tokenizer = WordTokenizer(cfg.vocabulary)
    test_pictures, test_captions, _ = held_out_pairs(1000, seed=cfg.seed, size=cfg.image_size)
    test_captions = [c[0] for c in test_captions]
    model = MiniClip(cfg)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, steps, **LR_SCHEDULE))
    run = MiniClipRun()

    def check(step: int) -> None:
        img, txt = embed_pairs(model, test_pictures, test_captions, tokenizer)
        run.checkpoints.append({"step": step, **modality_gap(img, txt), **retrieval_accuracy(img, txt)})

    start = time.perf_counter()
    check(0)
    for step in progress_bar(range(steps), desc="training the mini CLIP", show=progress):
        model.train()
        batch = rng.choice(pool_size, size=batch_size, replace=False)
        captions = [caption_scene(scenes[i], rng, completeness=completeness) for i in batch]
        loss = contrastive_loss(model.encode_image(pool[batch]), model.encode_text(tokenizer(captions)), model.logit_scale)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        run.loss.append(loss.item())
        run.temperature.append(model.temperature)
        if (step + 1) % check_every == 0 or step + 1 == steps:
            check(step + 1)
    run.seconds = time.perf_counter() - start
    return frozen(model), run


# ----------------------------------------------------------------------------- saving and loading
def save_mini_clip(model: MiniClip, run: MiniClipRun, path: str | Path, **notes) -> Path:
    """Write the weights (float32: under 1 MB) and a JSON with the config, the training record and
    ``notes`` to the directory ``path`` (a :mod:`~sae_lib.bundle`)."""
    record = {"config": asdict(model.cfg), "notes": notes,
              "run": {"seconds": round(run.seconds, 1), "checkpoints": run.checkpoints, "lr_schedule": LR_SCHEDULE,
                      "loss": [round(v, 4) for v in run.loss], "temperature": [round(v, 5) for v in run.temperature]}}
    return save_bundle(path, model.state_dict(), record)


def packaged_path() -> Path:
    return Path(str(resources.files("sae_lib").joinpath("assets", PACKAGED_CHECKPOINT)))


def _loaded(model: MiniClip, name: str, pretrained: bool, record: dict | None) -> LoadedModel:
    return LoadedModel(model=model, name=name, pretrained=pretrained, extras={
        "tokenizer": WordTokenizer(model.cfg.vocabulary), "preprocess": preprocess_for(model.cfg),
        "embed_dim": model.cfg.embed_dim, "config": model.cfg, "record": record, "checkpoint": None})


def load_mini_clip(path: str | Path | None = None) -> LoadedModel:
    """The mini CLIP saved by :func:`save_mini_clip`; by default the one shipped inside ``sae_lib``
    (trained by ``scripts/train_mini_clip.py``). ``extras`` holds ``tokenizer``, ``preprocess``,
    ``embed_dim``, ``config`` and ``record`` (what training recorded, and the notes)."""
    tensors, record = load_bundle(path if path is not None else packaged_path(), "a saved mini CLIP")
    model = MiniClip(MiniClipConfig(**record["config"]))
    model.load_state_dict({k: v.float() for k, v in tensors.items()})
    return _loaded(frozen(model), "mini CLIP (trained in this book)", True, record)


def untrained_mini_clip(cfg: MiniClipConfig) -> LoadedModel:
    """The same architecture at initialisation (seeded by ``cfg.seed``): the starting point of training,
    for comparisons such as the modality gap at initialisation."""
    model = MiniClip(cfg).eval()
    return _loaded(model, "mini CLIP at initialisation (untrained)", False, None)

"""Captioned images whose content is known: generated scenes offline, MS-COCO when online.

A *scene* is a small picture the book draws itself: one to three shapes of one colour and one size,
grouped in one half of the picture, on a plain or a striped background. Its caption is generated from
templates with synonyms and varied word order. Every scene carries its true *concepts*, so a claim
about what an embedding or an SAE atom encodes can be checked against ground truth:

* **shared concepts**, shown in the picture and named by the caption: colour, shape, size, count,
  position (see :data:`SHARED_CONCEPTS`);
* **unshared concepts**, a control for "is this atom shared?": the background texture, visible only in
  the picture, and the word ``photo`` or ``sketch``, present only in the caption (the pictures are all
  alike in style, so the word says nothing about them).

A caption's *completeness* is the probability that it names each shared concept; at 1 every caption
names all five. With internet, :func:`coco_captions` streams MS-COCO 2017 validation images with their
five human captions each through the ``datasets`` library.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from .models import hub_unreachable_reason
from .util import positive_int

COCO_DATASET = "lmms-lab/COCO-Caption2017"  # COCO 2017 val: 5,000 images, 5 captions each, parquet

COLOURS = {"red": (215, 25, 28), "green": (26, 150, 65), "blue": (43, 87, 214),
           "yellow": (240, 200, 20), "purple": (128, 50, 170), "orange": (245, 125, 20)}
SHAPES = ("circle", "square", "triangle", "diamond")
SIZES = {"small": 0.075, "large": 0.12}  # the shapes' radius, as a fraction of the picture's side
COUNTS = {"one": 1, "two": 2, "three": 3}
POSITIONS = ("left", "right", "top", "bottom")  # the half of the picture the shapes sit in
BACKGROUNDS = ("plain", "striped")  # visible only in the picture
MEDIA = ("photo", "sketch")  # named only in the caption

SHARED_CONCEPTS = {"colour": tuple(COLOURS), "shape": SHAPES, "size": tuple(SIZES), "count": tuple(COUNTS),
                   "position": POSITIONS}
IMAGE_ONLY_CONCEPTS = {"background": BACKGROUNDS}
CAPTION_ONLY_CONCEPTS = {"medium": MEDIA}
CONCEPTS = {**SHARED_CONCEPTS, **IMAGE_ONLY_CONCEPTS, **CAPTION_ONLY_CONCEPTS}
CONCEPT_KINDS = {**{c: "shared" for c in SHARED_CONCEPTS}, **{c: "image only" for c in IMAGE_ONLY_CONCEPTS},
                 **{c: "caption only" for c in CAPTION_ONLY_CONCEPTS}}

# Synonyms: the text tower has to learn that "crimson" and "red" mean the same.
_COLOUR_WORDS = {"red": ("red", "crimson"), "green": ("green", "emerald"), "blue": ("blue", "azure"),
                 "yellow": ("yellow", "golden"), "purple": ("purple", "violet"), "orange": ("orange", "amber")}
_SHAPE_WORDS = {"circle": ("circle", "disc"), "square": ("square", "box"), "triangle": ("triangle", "wedge"),
                "diamond": ("diamond", "lozenge")}
_PLURAL = {"box": "boxes"}  # every other shape noun takes an s
_SIZE_WORDS = {"small": ("small", "tiny", "little"), "large": ("large", "big", "huge")}
_COUNT_WORDS = {"one": ("one", "a single"), "two": ("two", "a pair of"), "three": ("three", "a trio of")}
_POSITION_WORDS = {"left": ("on the left", "to the left"), "right": ("on the right", "to the right"),
                   "top": ("at the top", "in the upper half"), "bottom": ("at the bottom", "in the lower half")}
_TEMPLATES = (  # {m}: medium, {n}: count, {s}: size, {c}: colour, {k}: shape noun, {p}: position
    "a {m} of {n} {s} {c} {k} {p}",
    "{p} , {n} {c} {k} , {s} , in a {m}",
    "this {m} shows {n} {k} , {c} and {s} , {p}",
    "{n} {s} {k} {p} , {c} , a {m}",
    "{c} {k} {p} : {n} , {s} . a {m}",
)


@dataclass
class ImageCaptionSet:
    """Images, the captions of each image, and what is known about each image.

    ``captions[i]`` are the captions of ``images[i]`` (at least one). ``source[i]`` says where the image
    comes from (``"scene"`` or ``"coco"``) and ``concepts[i]`` holds its known concepts, for a scene
    ``{"colour": "red", "shape": "circle", ..., "background": "plain", "medium": "photo"}`` (the medium
    of its first caption; all its captions share it); empty for COCO.
    """

    images: list[Image.Image]
    captions: list[list[str]]
    source: list[str]
    concepts: list[dict[str, str]] = field(default_factory=list)

    def __post_init__(self):
        if not self.concepts:
            self.concepts = [{} for _ in self.images]
        lengths = {"images": len(self.images), "captions": len(self.captions), "source": len(self.source),
                   "concepts": len(self.concepts)}
        if len(set(lengths.values())) != 1:
            raise ValueError(f"an ImageCaptionSet needs one entry per image in every field; got {lengths}")

    def __len__(self) -> int:
        return len(self.images)

    def __add__(self, other: ImageCaptionSet) -> ImageCaptionSet:
        return ImageCaptionSet(self.images + other.images, self.captions + other.captions,
                               self.source + other.source, self.concepts + other.concepts)

    def labels(self, concept: str) -> list[str]:
        """The value of ``concept`` for every image (one entry per image)."""
        missing = [i for i, c in enumerate(self.concepts) if concept not in c]
        if missing:
            raise ValueError(f"image {missing[0]} has no concept {concept!r} (only generated scenes carry concepts)")
        return [c[concept] for c in self.concepts]


# ----------------------------------------------------------------------------- scenes: sampling
def sample_scene(rng: np.random.Generator) -> dict[str, str]:
    """The concepts of one scene, every value equally likely and all independent of each other."""
    return {name: str(values[rng.integers(len(values))]) for name, values in CONCEPTS.items()}


def check_scene(scene: dict[str, str]) -> None:
    for name, values in CONCEPTS.items():
        if scene.get(name) not in values:
            raise ValueError(f"a scene needs {name} in {', '.join(values)}; got {scene.get(name)!r}")


# ----------------------------------------------------------------------------- scenes: drawing
def _shape_mask(shape: str, dx: np.ndarray, dy: np.ndarray) -> np.ndarray:
    """Which points (offsets from the centre in units of the radius, y pointing down) lie inside."""
    if shape == "circle":
        return dx**2 + dy**2 <= 1.0
    if shape == "square":
        return np.maximum(np.abs(dx), np.abs(dy)) <= 0.82
    if shape == "diamond":
        return np.abs(dx) + np.abs(dy) <= 1.1
    if shape == "triangle":  # apex up
        return (dy <= 0.8) & (np.abs(dx) <= 0.58 * (dy + 1.0))
    raise ValueError(f"unknown shape {shape!r}; use one of {', '.join(SHAPES)}")


def _centres(position: str, count: int, radius: float, rng: np.random.Generator) -> np.ndarray:
    """``count`` non-overlapping centres inside the ``position`` half of the unit square, ``(count, 2)``."""
    lo_x, hi_x, lo_y, hi_y = {"left": (0, 0.5, 0, 1), "right": (0.5, 1, 0, 1),
                              "top": (0, 1, 0, 0.5), "bottom": (0, 1, 0.5, 1)}[position]
    margin = radius + 0.02
    low, high = np.array([lo_x + margin, lo_y + margin]), np.array([hi_x - margin, hi_y - margin])
    # 64 candidate layouts at once; keep the first whose shapes do not overlap (rejection sampling)
    layouts = rng.uniform(low, high, size=(64, count, 2))
    gaps = np.linalg.norm(layouts[:, :, None] - layouts[:, None], axis=-1) + 9 * np.eye(count)
    fits = gaps.min(axis=(1, 2)) >= 2.1 * radius
    return layouts[int(fits.argmax())]  # argmax is the first True (or layout 0 if none fits: overlap)


def draw_scenes(scenes: Sequence[dict[str, str]], *, size: int = 32, rng: np.random.Generator | None = None) -> np.ndarray:
    """The pictures of ``scenes`` as an ``(n, size, size, 3)`` uint8 array, anti-aliased (drawn at twice
    the size, then averaged); where the shapes sit and their exact shades vary with ``rng``.

    All scenes are drawn at once, with array operations: training draws fresh pictures every step."""
    for scene in scenes:
        check_scene(scene)
    positive_int("size", size)
    rng = rng if rng is not None else np.random.default_rng(0)
    n, fine = len(scenes), 2 * size
    grid = (np.arange(fine) + 0.5) / fine
    xs, ys = (a.astype(np.float32) for a in np.meshgrid(grid, grid))
    background = rng.uniform(225, 250, size=(n, 1)) + rng.uniform(-6, 6, size=(n, 3))
    canvas = np.broadcast_to(background[:, None, None, :], (n, fine, fine, 3)).astype(np.float32)
    striped = np.array([s["background"] == "striped" for s in scenes])
    period = rng.uniform(0.12, 0.18, size=n)[:, None, None]
    phase = rng.uniform(0, 1, size=n)[:, None, None] * period
    stripes = (((xs + ys + phase) % period) < period / 2) & striped[:, None, None]
    canvas[stripes] -= 45
    radius = np.array([SIZES[s["size"]] for s in scenes]) * rng.uniform(0.9, 1.1, size=n)
    colour = np.clip(np.array([COLOURS[s["colour"]] for s in scenes]) + rng.normal(0, 8, size=(n, 3)), 0, 255)
    centres = np.full((n, 3, 2), np.inf)  # unused slots stay at infinity: nothing is drawn there
    for i, scene in enumerate(scenes):
        count = COUNTS[scene["count"]]
        centres[i, :count] = _centres(scene["position"], count, radius[i], rng)
    shape = np.array([s["shape"] for s in scenes])
    for slot in range(3):
        dx = (xs - centres[:, slot, 0, None, None]) / radius[:, None, None]
        dy = (ys - centres[:, slot, 1, None, None]) / radius[:, None, None]
        inside = np.zeros((n, fine, fine), dtype=bool)
        for name in SHAPES:
            chosen = shape == name
            if chosen.any():
                inside[chosen] = _shape_mask(name, dx[chosen], dy[chosen])
        canvas = np.where(inside[..., None], colour[:, None, None, :], canvas)
    pictures = canvas.reshape(n, size, 2, size, 2, 3).mean(axis=(2, 4))
    return np.clip(np.rint(pictures), 0, 255).astype(np.uint8)


def draw_scene(scene: dict[str, str], *, size: int = 32, rng: np.random.Generator | None = None) -> np.ndarray:
    """The picture of one ``scene``, ``(size, size, 3)`` uint8 (see :func:`draw_scenes`)."""
    return draw_scenes([scene], size=size, rng=rng)[0]


# ----------------------------------------------------------------------------- scenes: captions
def caption_scene(scene: dict[str, str], rng: np.random.Generator, *, completeness: float = 1.0) -> str:
    """One generated caption of ``scene``: a random template and random synonyms; each shared concept
    is named with probability ``completeness`` (an unnamed one is left out, or said vaguely)."""
    check_scene(scene)
    if not 0.0 <= completeness <= 1.0:
        raise ValueError(f"completeness must lie in [0, 1], got {completeness!r}")
    named = {name: bool(rng.random() < completeness) for name in SHARED_CONCEPTS}
    pick = lambda words: str(words[rng.integers(len(words))])  # noqa: E731
    plural = scene["count"] != "one" or not named["count"]
    noun = pick(_SHAPE_WORDS[scene["shape"]]) if named["shape"] else "shape"
    if plural:
        noun = _PLURAL.get(noun, noun + "s")
    words = {"m": scene["medium"], "n": pick(_COUNT_WORDS[scene["count"]]) if named["count"] else "",
             "s": pick(_SIZE_WORDS[scene["size"]]) if named["size"] else "",
             "c": pick(_COLOUR_WORDS[scene["colour"]]) if named["colour"] else "",
             "p": pick(_POSITION_WORDS[scene["position"]]) if named["position"] else "", "k": noun}
    text = _TEMPLATES[rng.integers(len(_TEMPLATES))].format(**words)
    # drop the separators an unnamed concept leaves behind ("red , , big" -> "red , big")
    tokens = text.split()
    kept: list[str] = []
    for token in tokens:
        if token in {",", ":", ".", "and"} and (not kept or kept[-1] in {",", ":", ".", "and"}):
            continue
        kept.append(token)
    while kept and kept[-1] in {",", ":", ".", "and"}:
        kept.pop()
    while kept and kept[0] in {",", ":", ".", "and"}:
        kept.pop(0)
    return " ".join(kept)


def caption_vocabulary() -> list[str]:
    """Every word a generated caption can contain, in a fixed order (for a word tokenizer)."""
    words: set[str] = {"shape", "shapes"}
    for template in _TEMPLATES:
        words.update(w for w in template.split() if not w.startswith("{"))
    for table in (_COLOUR_WORDS, _SIZE_WORDS, _COUNT_WORDS, _POSITION_WORDS):
        for options in table.values():
            for option in options:
                words.update(option.split())
    for options in _SHAPE_WORDS.values():
        for noun in options:
            words.update({noun, _PLURAL.get(noun, noun + "s")})
    words.update(MEDIA)
    return sorted(words)


def scene_batch(n: int, *, seed: int, size: int = 32, completeness: float = 1.0,
                captions_per_image: int = 1) -> tuple[np.ndarray, list[list[str]], list[dict[str, str]]]:
    """``n`` random scenes: pictures ``(n, size, size, 3)`` uint8, their captions and their concepts.

    All of a scene's captions use its ``medium``; the rest (template, synonyms, which concepts are
    named) varies from caption to caption. The same ``seed`` gives the same batch."""
    positive_int("n", n)
    positive_int("captions_per_image", captions_per_image)
    rng = np.random.default_rng(seed)
    scenes = [sample_scene(rng) for _ in range(n)]
    pictures = draw_scenes(scenes, size=size, rng=rng)
    captions = [[caption_scene(s, rng, completeness=completeness) for _ in range(captions_per_image)] for s in scenes]
    return pictures, captions, scenes


def generated_scenes(n: int, *, seed: int = 0, size: int = 32, completeness: float = 1.0,
                     captions_per_image: int = 1) -> ImageCaptionSet:
    """:func:`scene_batch` as an :class:`ImageCaptionSet` of RGB pictures (for embedding with any model)."""
    pictures, captions, scenes = scene_batch(n, seed=seed, size=size, completeness=completeness,
                                             captions_per_image=captions_per_image)
    return ImageCaptionSet([Image.fromarray(p, mode="RGB") for p in pictures], captions, ["scene"] * n, scenes)


# ----------------------------------------------------------------------------- MS-COCO (internet)
def coco_captions(n_images: int, *, split: str = "val") -> ImageCaptionSet:
    """The first ``n_images`` MS-COCO 2017 images of ``split`` with their human captions (five each),
    streamed from the Hugging Face hub (needs internet; raises if the hub cannot be reached)."""
    from datasets import load_dataset

    positive_int("n_images", n_images)
    reason = hub_unreachable_reason()
    if reason is not None:
        raise ConnectionError(f"cannot stream {COCO_DATASET}: {reason}")
    rows = load_dataset(COCO_DATASET, split=split, streaming=True)
    images, captions = [], []
    for row in rows.take(n_images):
        images.append(row["image"].convert("RGB"))
        captions.append([c.strip() for c in row["answer"] if c.strip()])
    if not images:
        raise RuntimeError(f"{COCO_DATASET} ({split}) returned no images")
    return ImageCaptionSet(images, captions, ["coco"] * len(images))

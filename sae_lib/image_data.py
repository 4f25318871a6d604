"""Images with captions for CLIP: offline sets whose content is known, and MS-COCO when online.

Two offline sources, so the CLIP chapter runs anywhere:

* :func:`skimage_photos`: the sample pictures that ship *inside* the scikit-image package (no
  download), each with three captions written for this book, plus random crops for variety.
* :func:`generated_shapes`: pictures drawn by the book (a coloured shape at a position) with
  generated captions. Every image carries its true *concepts* (colour, shape, position), so claims
  about what an embedding or an SAE atom encodes can be checked against ground truth.

With internet, :func:`coco_captions` streams MS-COCO 2017 validation images with their five
human captions each through the ``datasets`` library.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw

from .models import hub_unreachable_reason
from .util import positive_int

COCO_DATASET = "lmms-lab/COCO-Caption2017"  # COCO 2017 val: 5,000 images, 5 captions each, parquet


@dataclass
class ImageCaptionSet:
    """Images, the captions of each image, and what is known about each image.

    ``captions[i]`` are the captions of ``images[i]`` (at least one). ``source[i]`` says where the image
    comes from (``"photo"``, ``"shapes"`` or ``"coco"``) and ``concepts[i]`` holds its known concepts
    (for a generated image ``{"colour": "red", "shape": "circle", "position": "left"}``; for a photo
    ``{"subject": "astronaut"}``; empty for COCO).
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


# ----------------------------------------------------------------------------- scikit-image photographs
# Only pictures stored inside the scikit-image wheel (several others need `pooch` and a download).
PHOTO_CAPTIONS: dict[str, list[str]] = {
    "astronaut": ["an astronaut in an orange suit smiling at the camera",
                  "portrait of a woman astronaut next to her helmet and an american flag",
                  "official photo of an astronaut with a model of the space shuttle"],
    "brick": ["a wall of grey bricks", "black and white close-up of a brick wall",
              "rows of bricks seen at an angle"],
    "camera": ["a man with a camera on a tripod in a field", "black and white photo of a cameraman",
               "a photographer in a dark coat looking through his camera"],
    "chelsea": ["a tabby cat looking to the side", "close-up of a cat's face with green eyes",
                "an orange and brown striped cat"],
    "clock": ["a blurred wall clock", "a clock face smeared by motion blur", "a round clock photographed while moving"],
    "coffee": ["a cup of coffee on a red saucer", "an espresso in a red cup on a wooden table",
               "a red coffee cup with a spoon seen from above"],
    "coins": ["rows of old coins on a dark background", "a collection of ancient coins",
              "black and white photo of coins arranged in a grid"],
    "grass": ["a patch of grass in black and white", "dense blades of grass", "texture of a lawn seen from above"],
    "gravel": ["a close-up of gravel", "grey pebbles covering the ground", "texture of many small stones"],
    "hubble_deep_field": ["the hubble deep field full of distant galaxies", "thousands of galaxies in a dark sky",
                          "a deep space photo with colourful galaxies"],
    "immunohistochemistry": ["a microscope image of stained tissue", "brown and blue stained cells under a microscope",
                             "a histology slide of human tissue"],
    "moon": ["the cratered surface of the moon", "grey lunar surface with craters",
             "a black and white photo of the surface of the moon"],
    "page": ["a scanned page of printed text", "a page of a book about image segmentation", "black text on a white page"],
    "retina": ["a photograph of the back of a human eye", "the retina with its blood vessels and optic disc",
               "an orange fundus image of an eye"],
    "rocket": ["a rocket on a launch pad at night", "a rocket lit up before its launch",
               "a rocket standing between launch towers under a dark blue sky"],
    "stereo_motorcycle": ["a red motorcycle parked in a garage", "a red motorbike in a workshop",
                          "a motorcycle with a red tank indoors"],
    "text": ["handwritten notes on a sheet of paper", "writing on paper seen at an angle",
             "letters and numbers on a page"],
    "cell": ["a single cell under a microscope", "a bright round cell on a grey background",
             "microscopy image of one cell"],
    "horse": ["the black silhouette of a horse", "a horse in silhouette on a white background",
              "a black shape of a standing horse"],
    "checkerboard": ["a black and white checkerboard", "a chess board pattern", "black and white squares in a grid"],
    "colorwheel": ["a colour wheel with every hue", "a rainbow colour circle on black", "a circular colour gradient"],
    "shepp_logan_phantom": ["a phantom used to test ct scanners", "a grey oval with dark ellipses inside, like a head scan",
                            "a synthetic medical scan"],
    "binary_blobs": ["white blobs on a black background", "random black and white blobs",
                     "a black and white pattern of blobs"],
    "microaneurysms": ["a close-up of blood vessels in the retina", "a grey retinal image with dark vessels",
                       "a microscope view of thin blood vessels"],
    "logo": ["the scikit-image logo", "a green and orange round logo", "a circular logo with a snake-like shape"],
}


def _rotate(items: Sequence[str], shift: int) -> list[str]:
    """The same captions starting from number ``shift``: which one comes first varies between images,
    so keeping only the first caption of each (the ci profile) still uses all of them."""
    shift %= len(items)
    return list(items[shift:]) + list(items[:shift])


def _to_rgb(array: np.ndarray) -> Image.Image:
    """Any scikit-image sample (grey, boolean, float, RGBA) as an 8-bit RGB picture."""
    array = np.asarray(array)
    if array.dtype == bool:
        array = np.where(array, 255, 0).astype(np.uint8)
    elif array.dtype != np.uint8:
        array = (255 * (array - array.min()) / max(float(np.ptp(array)), 1e-12)).astype(np.uint8)
    if array.ndim == 2:
        return Image.fromarray(array, mode="L").convert("RGB")
    if array.shape[-1] == 4:  # RGBA: put it on a white background
        rgba = Image.fromarray(array, mode="RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return Image.fromarray(array[..., :3], mode="RGB")


def load_skimage_photo(name: str) -> Image.Image:
    """One scikit-image sample picture as RGB, read from the installed package (never downloaded)."""
    import skimage.data

    if name not in PHOTO_CAPTIONS:
        raise ValueError(f"unknown photo {name!r}; the book captions these: {', '.join(PHOTO_CAPTIONS)}")
    array = getattr(skimage.data, name)()
    if isinstance(array, tuple):  # stereo_motorcycle returns (left, right, disparity)
        array = array[0]
    return _to_rgb(array)


def skimage_photos(*, crops_per_photo: int = 2, min_crop: float = 0.6, seed: int = 0,
                   names: Sequence[str] | None = None) -> ImageCaptionSet:
    """The captioned scikit-image pictures, each whole and as ``crops_per_photo`` random crops.

    A crop keeps between ``min_crop`` and all of each side, so the subject usually stays in view; it
    inherits its photo's captions, rotated so that each view of a photo lists a different one first. ``concepts[i]["subject"]`` is the photo's name.
    """
    if not (isinstance(crops_per_photo, int) and crops_per_photo >= 0):
        raise ValueError(f"crops_per_photo must be a non-negative integer, got {crops_per_photo!r}")
    if not 0 < min_crop <= 1:
        raise ValueError(f"min_crop must lie in (0, 1], got {min_crop!r}")
    rng = np.random.default_rng(seed)
    images, captions, concepts = [], [], []
    for name in names if names is not None else PHOTO_CAPTIONS:
        photo = load_skimage_photo(name)
        views = [photo]
        for _ in range(crops_per_photo):
            w, h = photo.size
            cw, ch = (int(side * rng.uniform(min_crop, 1.0)) for side in (w, h))
            left, top = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
            views.append(photo.crop((left, top, left + cw, top + ch)))
        images += views
        captions += [_rotate(PHOTO_CAPTIONS[name], v) for v in range(len(views))]
        concepts += [{"subject": name} for _ in views]
    return ImageCaptionSet(images, captions, ["photo"] * len(images), concepts)


# ----------------------------------------------------------------------------- generated shapes
COLOURS = {"red": (215, 25, 28), "green": (26, 150, 65), "blue": (43, 87, 214),
           "yellow": (245, 205, 20), "purple": (128, 50, 170), "orange": (245, 125, 20)}
SHAPES = ("circle", "square", "triangle", "star")
POSITIONS = {"left": (0.27, 0.5), "right": (0.73, 0.5), "top": (0.5, 0.27), "bottom": (0.5, 0.73),
             "centre": (0.5, 0.5)}
_POSITION_WORDS = {"left": "on the left", "right": "on the right", "top": "at the top", "bottom": "at the bottom",
                   "centre": "in the centre"}
_TEMPLATES = ("{a} {colour} {shape} {where}", "a picture of {a} {colour} {shape} {where}",
              "a simple drawing: one {colour} {shape} {where} on a light background")


def _shape_outline(shape: str, cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    if shape == "square":
        s = 0.85 * r
        return [(cx - s, cy - s), (cx + s, cy - s), (cx + s, cy + s), (cx - s, cy + s)]
    if shape == "triangle":
        return [(cx, cy - r), (cx + 0.95 * r, cy + 0.75 * r), (cx - 0.95 * r, cy + 0.75 * r)]
    if shape == "star":
        angles = np.pi / 2 + np.arange(10) * np.pi / 5
        radii = np.where(np.arange(10) % 2 == 0, r, 0.45 * r)
        return [(cx + q * np.cos(a), cy - q * np.sin(a)) for a, q in zip(angles, radii)]
    raise ValueError(f"unknown shape {shape!r}; use one of {SHAPES}")


def draw_shape(colour: str, shape: str, position: str, *, size: int = 224,
               rng: np.random.Generator | None = None) -> Image.Image:
    """One ``colour`` ``shape`` at ``position`` on a light background, with a little random jitter."""
    for name, value, allowed in (("colour", colour, COLOURS), ("shape", shape, SHAPES), ("position", position, POSITIONS)):
        if value not in allowed:
            raise ValueError(f"unknown {name} {value!r}; use one of {', '.join(allowed)}")
    rng = rng if rng is not None else np.random.default_rng(0)
    image = Image.new("RGB", (size, size), tuple(int(v) for v in rng.integers(225, 256, size=3)))
    cx, cy = POSITIONS[position]
    cx, cy = cx * size + rng.normal(0, 0.02 * size), cy * size + rng.normal(0, 0.02 * size)
    radius = size * rng.uniform(0.14, 0.2)
    draw = ImageDraw.Draw(image)
    if shape == "circle":
        draw.ellipse([cx - radius, cy - radius, cx + radius, cy + radius], fill=COLOURS[colour])
    else:
        draw.polygon(_shape_outline(shape, cx, cy, radius), fill=COLOURS[colour])
    return image


def shape_captions(colour: str, shape: str, position: str) -> list[str]:
    """The generated captions of one shape picture (each names all three of its concepts)."""
    article = "an" if colour[0] in "aeiou" else "a"
    return [t.format(a=article, colour=colour, shape=shape, where=_POSITION_WORDS[position]) for t in _TEMPLATES]


def generated_shapes(n: int, *, seed: int = 0, size: int = 224) -> ImageCaptionSet:
    """``n`` shape pictures cycling through every (colour, shape, position) in a shuffled order, so each
    concept value appears about equally often; each with its captions and its true concepts."""
    positive_int("n", n)
    rng = np.random.default_rng(seed)
    combos = list(itertools.product(COLOURS, SHAPES, POSITIONS))
    order = rng.permutation(len(combos))
    images, captions, concepts = [], [], []
    for i in range(n):
        colour, shape, position = combos[order[i % len(combos)]]
        images.append(draw_shape(colour, shape, position, size=size, rng=rng))
        captions.append(_rotate(shape_captions(colour, shape, position), i))
        concepts.append({"colour": colour, "shape": shape, "position": position})
    return ImageCaptionSet(images, captions, ["shapes"] * n, concepts)


def offline_image_captions(*, n_shapes: int, crops_per_photo: int, seed: int = 0) -> ImageCaptionSet:
    """The offline set: captioned scikit-image photos (with crops) followed by ``n_shapes`` shapes."""
    return skimage_photos(crops_per_photo=crops_per_photo, seed=seed) + generated_shapes(n_shapes, seed=seed)


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

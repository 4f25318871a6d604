from collections import Counter

import numpy as np
import pytest

from sae_lib.image_data import (COLOURS, PHOTO_CAPTIONS, POSITIONS, SHAPES, ImageCaptionSet, draw_shape,
                                generated_shapes, load_skimage_photo, offline_image_captions, skimage_photos)


def test_generated_shapes_carry_their_concepts_and_captions():
    data = generated_shapes(240, seed=0)
    assert len(data) == 240 and set(data.source) == {"shapes"}
    for image, captions, concepts in zip(data.images, data.captions, data.concepts):
        assert image.mode == "RGB" and image.size == (224, 224)
        assert concepts["colour"] in COLOURS and concepts["shape"] in SHAPES and concepts["position"] in POSITIONS
        assert len(captions) == 3 and all(concepts["colour"] in c and concepts["shape"] in c for c in captions)
    # 240 = two full cycles through the 120 combinations: every value equally often
    for concept, values in (("colour", COLOURS), ("shape", SHAPES), ("position", POSITIONS)):
        counts = Counter(c[concept] for c in data.concepts)
        assert set(counts) == set(values) and len(set(counts.values())) == 1


def test_generated_shapes_are_seeded():
    a, b, c = generated_shapes(5, seed=3), generated_shapes(5, seed=3), generated_shapes(5, seed=4)
    assert all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(a.images, b.images))
    assert a.concepts == b.concepts and a.concepts != c.concepts


def test_the_colour_is_drawn_where_the_caption_says():
    image = np.asarray(draw_shape("blue", "square", "left", rng=np.random.default_rng(0))).astype(int)
    blue = (np.abs(image - np.array(COLOURS["blue"])).sum(-1) < 10)
    ys, xs = blue.nonzero()
    assert blue.sum() > 1000 and xs.mean() < 224 * 0.4 and abs(ys.mean() - 112) < 20


def test_bad_concepts_and_counts():
    with pytest.raises(ValueError, match="unknown colour 'teal'"):
        draw_shape("teal", "circle", "left")
    with pytest.raises(ValueError, match="unknown position"):
        draw_shape("red", "circle", "middle")
    with pytest.raises(ValueError, match="positive integer"):
        generated_shapes(0)


def test_every_captioned_photo_ships_with_scikit_image():
    # These load from the installed package; none may need a download (pooch is not installed here).
    for name in PHOTO_CAPTIONS:
        photo = load_skimage_photo(name)
        assert photo.mode == "RGB" and min(photo.size) >= 100, name
    with pytest.raises(ValueError, match="unknown photo"):
        load_skimage_photo("eagle")


def test_photo_crops_inherit_rotated_captions():
    data = skimage_photos(crops_per_photo=2, seed=0, names=["astronaut", "coffee"])
    assert len(data) == 6 and data.concepts[0] == {"subject": "astronaut"} and data.concepts[3] == {"subject": "coffee"}
    assert data.images[1].size[0] <= data.images[0].size[0] and data.images[1].size[0] >= 0.6 * 512 - 1
    firsts = [c[0] for c in data.captions[:3]]
    assert len(set(firsts)) == 3 and sorted(data.captions[1]) == sorted(PHOTO_CAPTIONS["astronaut"])
    with pytest.raises(ValueError, match="min_crop"):
        skimage_photos(min_crop=0)


def test_offline_set_and_its_consistency_check():
    data = offline_image_captions(n_shapes=10, crops_per_photo=0)
    assert len(data) == len(PHOTO_CAPTIONS) + 10 and data.source.count("shapes") == 10
    with pytest.raises(ValueError, match="one entry per image"):
        ImageCaptionSet(data.images[:2], data.captions[:1], ["photo", "photo"])

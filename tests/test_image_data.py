import numpy as np
import pytest

from sae_lib.image_data import (_COLOUR_WORDS, _COUNT_WORDS, _POSITION_WORDS, _SHAPE_WORDS, _SIZE_WORDS,
                                CONCEPT_KINDS, CONCEPTS, COLOURS, MEDIA, ImageCaptionSet, caption_scene,
                                caption_vocabulary, draw_scene, generated_scenes, sample_scene, scene_batch)

SCENE = {"colour": "blue", "shape": "square", "size": "large", "count": "two", "position": "left",
         "background": "plain", "medium": "photo"}
WORDS = {"colour": _COLOUR_WORDS, "shape": _SHAPE_WORDS, "size": _SIZE_WORDS, "count": _COUNT_WORDS,
         "position": _POSITION_WORDS}


def names(caption: str, concept: str, value: str) -> bool:
    padded = f" {caption} "
    return any(f" {w}" in padded for w in WORDS[concept][value])


def test_full_captions_name_every_shared_concept_and_the_medium_only():
    rng = np.random.default_rng(0)
    for _ in range(200):
        scene = sample_scene(rng)
        caption = caption_scene(scene, rng)
        for concept in WORDS:
            assert names(caption, concept, scene[concept]), (concept, scene, caption)
        assert scene["medium"] in caption.split() and "striped" not in caption and "plain" not in caption
        other = [m for m in MEDIA if m != scene["medium"]][0]
        assert other not in caption.split()


def test_incomplete_captions_leave_concepts_out_and_every_word_is_in_the_vocabulary():
    rng = np.random.default_rng(1)
    vocabulary = set(caption_vocabulary())
    named = {concept: 0 for concept in WORDS}
    for _ in range(400):
        scene = sample_scene(rng)
        caption = caption_scene(scene, rng, completeness=0.5)
        assert set(caption.split()) <= vocabulary, caption
        assert not caption.startswith((",", ":", ".")) and ", ," not in caption
        for concept in WORDS:
            named[concept] += names(caption, concept, scene[concept])
    assert all(120 < count < 280 for count in named.values()), named  # about half of 400
    assert all(not names(caption_scene(SCENE, rng, completeness=0.0), c, SCENE[c]) for c in ("colour", "size"))


def test_scenes_are_seeded_and_balanced():
    a, b, c = scene_batch(64, seed=3), scene_batch(64, seed=3), scene_batch(64, seed=4)
    assert np.array_equal(a[0], b[0]) and a[1] == b[1] and a[2] == b[2]
    assert not np.array_equal(a[0], c[0])
    assert a[0].shape == (64, 32, 32, 3) and a[0].dtype == np.uint8
    _, _, scenes = scene_batch(2000, seed=0)
    for concept, values in CONCEPTS.items():
        counts = [sum(s[concept] == v for s in scenes) for v in values]
        assert min(counts) > 0.7 * 2000 / len(values), (concept, counts)


def test_the_shapes_are_drawn_where_the_caption_says_and_only_stripes_change_the_background():
    picture = draw_scene(SCENE, size=64, rng=np.random.default_rng(0)).astype(int)
    blue = np.abs(picture - np.array(COLOURS["blue"])).sum(-1) < 40
    ys, xs = blue.nonzero()
    assert blue.sum() > 100 and xs.max() < 32  # all of it in the left half
    assert picture[:, 32:].reshape(-1, 3).std(0).max() < 1  # the empty right half of a plain picture is one shade
    striped = draw_scene({**SCENE, "background": "striped"}, size=64, rng=np.random.default_rng(0)).astype(int)
    assert (np.abs(striped - np.array(COLOURS["blue"])).sum(-1) < 40).sum() == blue.sum()  # same shapes
    assert striped[:, 32:].reshape(-1, 3).std(0).min() > 10
    one = draw_scene({**SCENE, "count": "one"}, size=64, rng=np.random.default_rng(0)).astype(int)
    assert 0.3 < (np.abs(one - np.array(COLOURS["blue"])).sum(-1) < 40).sum() / blue.sum() < 0.7


def test_generated_scenes_carry_their_labels():
    data = generated_scenes(12, seed=0)
    assert len(data) == 12 and set(data.source) == {"scene"} and data.images[0].size == (32, 32)
    assert data.labels("colour") == [c["colour"] for c in data.concepts]
    assert set(CONCEPT_KINDS.values()) == {"shared", "image only", "caption only"}
    with pytest.raises(ValueError, match="no concept 'mood'"):
        data.labels("mood")


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match="colour in red"):
        draw_scene({**SCENE, "colour": "teal"})
    with pytest.raises(ValueError, match="completeness must lie in"):
        caption_scene(SCENE, np.random.default_rng(0), completeness=1.5)
    with pytest.raises(ValueError, match="positive integer"):
        scene_batch(0, seed=0)
    with pytest.raises(ValueError, match="one entry per image"):
        ImageCaptionSet([None, None], [["a"]], ["scene", "scene"])

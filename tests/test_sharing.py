"""Sharing measures on codes whose answer we construct."""

import pytest
import torch

from sae_lib.sharing import (atom_concepts, concept_atoms, concept_overlap, sharing_summary, sharing_table,
                             split_and_shared, train_shared_dictionaries)


def test_split_and_shared_counts_alive_atoms_only():
    score = torch.tensor([0.0, 1.0, 0.5, 0.3, 0.8, float("nan")])
    single, shared = split_and_shared(score)
    assert single == pytest.approx(2 / 5) and shared == pytest.approx(2 / 5)
    with pytest.raises(ValueError, match="no atom fired"):
        split_and_shared(torch.tensor([float("nan")]))


def planted_codes():
    """Four pairs. Atom 0 fires for red pictures and red captions (shared concept, shared atom); atom 1
    for red pictures only, atom 2 for red captions only; atom 3 fires on striped pictures (image only)."""
    colour = ["red", "red", "blue", "blue"]
    background = ["striped", "plain", "striped", "plain"]
    img = torch.tensor([[1.0, 1, 0, 1], [1, 1, 0, 0], [0, 0, 0, 1], [0, 0, 0, 0]])
    txt = torch.tensor([[1.0, 0, 1, 0], [1, 0, 1, 0], [0, 0, 0, 0], [0, 0, 0, 0]])
    return img, txt, colour, background


def test_concept_atoms_and_overlap():
    img, txt, colour, background = planted_codes()
    # mean difference 1 over a standard deviation of sqrt(1/3): sqrt(3) standard deviations
    torch.testing.assert_close(concept_atoms(img, colour, "red"), torch.tensor([3**0.5, 3**0.5, 0.0, 0.0]))
    torch.testing.assert_close(concept_atoms(txt, colour, "blue"), -torch.tensor([3**0.5, 0.0, 3**0.5, 0.0]))
    assert concept_overlap(img, txt, colour, colour, "red") == pytest.approx(0.5)  # (1,1,0,0)·(1,0,1,0)/2
    assert concept_overlap(img, txt, background, background, "striped") == 0.0
    with pytest.raises(ValueError, match="some rows but not all"):
        concept_atoms(img, ["red"] * 4, "red")
    with pytest.raises(ValueError, match="one label per row"):
        concept_atoms(img, colour[:3], "red")


def test_sharing_table_and_summary():
    img, txt, colour, background = planted_codes()
    z, is_image = torch.cat([img, txt]), torch.tensor([True] * 4 + [False] * 4)
    labels, kinds = {"colour": colour, "background": background}, {"colour": "shared", "background": "image only"}
    table = sharing_table(z, is_image, labels, kinds)
    assert table.set_index("value").loc["red", "overlap"] == pytest.approx(0.5)
    assert set(table.kind) == {"shared", "image only"}
    summary = sharing_summary(z, is_image, labels, kinds)
    assert summary["overlap, shared concepts"] == pytest.approx(0.5)  # red and blue: 0.5 each
    assert summary["overlap, unshared controls"] == 0.0
    assert summary["single-modality atoms"] == pytest.approx(3 / 4)  # atoms 1, 2, 3; atom 0 scores 0.5
    with pytest.raises(ValueError, match="matched pairs"):
        sharing_table(z[:7], is_image[:7], labels, kinds)


def test_atom_concepts_names_each_atoms_concept_per_modality():
    img, txt, colour, background = planted_codes()
    z, is_image = torch.cat([img, txt]), torch.tensor([True] * 4 + [False] * 4)
    table = atom_concepts(z, is_image, {"colour": colour, "background": background}, [0, 3])
    assert table.loc[0, "image concept"] == "colour=red" and table.loc[0, "caption concept"] == "colour=red"
    assert table.loc[0, "same concept"]
    assert table.loc[3, "image concept"] == "background=striped" and not table.loc[3, "same concept"]


def test_train_shared_dictionaries_gives_both_families():
    x = torch.nn.functional.normalize(torch.randn(128, 8), dim=-1)
    saes = train_shared_dictionaries(x, k=2, n_atoms=16, steps=5, batch_size=32, progress=False)
    assert set(saes) == {"topk", "mp"} and all(s.n_latents == 16 for s in saes.values())

"""SAELens's on-disk format (sae_lib.saelens_format): every family round-trips, files look as SAELens expects,
plain SAELens files load as the family that computes the same function, damaged files are clear errors.
None of this needs SAELens itself; tests/test_saelens_interop.py checks against it."""

import json
import re

import pytest
import torch
from safetensors.torch import load_file, save_file

from sae_lib import BatchTopKSAE, MatryoshkaSAE, MPSAE, ReLUSAE, TopKSAE, save_sae, train_sae
from sae_lib.checkpoint import CheckpointError
from sae_lib.saelens_format import ARCHITECTURES, load_saelens, save_saelens

D, N = 12, 32
FAMILIES = {
    "relu": lambda: ReLUSAE(D, N, l1_coeff=0.01, seed=0),
    "topk": lambda: TopKSAE(D, N, 3, k_aux=6, seed=0),
    "batchtopk": lambda: BatchTopKSAE(D, N, 3, seed=0),
    "matryoshka": lambda: MatryoshkaSAE(D, N, 3, prefixes=(8, 16, N), seed=0),
    "mp": lambda: MPSAE(D, N, 4, seed=0),
}
WHERE = {"hook_name": "blocks.0.hook_resid_post", "model_name": "tiny-lm"}


@pytest.fixture(scope="module")
def trained():
    """One SAE of each family after a short training run (so BatchTopK's threshold and b_dec are set)."""
    from sae_lib import superposition_data

    data = superposition_data(2000, n_features=24, d=D, p_active=0.1, seed=0).x
    saes = {}
    for family, make in FAMILIES.items():
        sae = make()
        train_sae(sae, data, steps=20, batch_size=64, lr=1e-2, seed=0, progress=False)
        saes[family] = sae
    return saes


def inputs(n=200, seed=1):
    return torch.randn(n, D, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_round_trips(family, trained, tmp_path):
    sae = trained[family]
    save_saelens(sae, tmp_path, **WHERE)
    loaded = load_saelens(tmp_path)
    assert type(loaded) is type(sae) and loaded.config() == sae.config() and not loaded.training
    x = inputs()
    (x_hat, z), (x_hat2, z2) = sae(x), loaded(x)
    torch.testing.assert_close(x_hat2, x_hat, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(z2, z, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("family", ["relu", "batchtopk", "mp"])
def test_the_saved_decoder_is_the_unit_atoms_whatever_the_raw_parameter(family, trained, tmp_path):
    sae = FAMILIES[family]()
    sae.load_state_dict(trained[family].state_dict())
    sae.eval()
    with torch.no_grad():
        sae.W_dec.mul_(torch.rand(N, 1, generator=torch.Generator().manual_seed(0)) + 0.5)  # atoms() unchanged
    save_saelens(sae, tmp_path, **WHERE)
    torch.testing.assert_close(load_file(tmp_path / "sae_weights.safetensors")["W_dec"].norm(dim=1), torch.ones(N))
    torch.testing.assert_close(load_saelens(tmp_path)(inputs())[0], sae(inputs())[0], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("family", FAMILIES)
def test_files_are_laid_out_as_saelens_reads_them(family, trained, tmp_path):
    sae = trained[family]
    save_saelens(sae, tmp_path, **WHERE, extra_metadata={"context_size": 128})
    cfg = json.loads((tmp_path / "cfg.json").read_text())
    assert cfg["architecture"] == ARCHITECTURES[family]
    assert (cfg["d_in"], cfg["d_sae"], cfg["dtype"]) == (D, N, "float32")
    assert cfg["apply_b_dec_to_input"] is True and cfg["normalize_activations"] == "none"
    metadata = cfg["metadata"]
    assert metadata["hook_name"] == WHERE["hook_name"] and metadata["model_name"] == WHERE["model_name"]
    assert metadata["context_size"] == 128 and metadata["sae_lens_version"].startswith("6.")
    assert metadata["sae_lib"] == sae.config()
    shapes = {name: tuple(t.shape) for name, t in load_file(tmp_path / "sae_weights.safetensors").items()}
    expected = {"W_dec": (N, D), "b_dec": (D,)}
    if family != "mp":
        expected |= {"W_enc": (D, N), "b_enc": (N,)}
    if family in ("batchtopk", "matryoshka"):
        expected["threshold"] = (N,)
    assert shapes == expected
    if family == "topk":
        assert cfg["k"] == 3
    if family == "mp":
        assert (cfg["max_iterations"], cfg["residual_threshold"], cfg["stop_on_duplicate_support"]) == (4, 0.0, False)
    if family in ("batchtopk", "matryoshka"):
        threshold = load_file(tmp_path / "sae_weights.safetensors")["threshold"]
        assert torch.equal(threshold, sae.threshold.expand(N))


@pytest.mark.parametrize("family", FAMILIES)
def test_half_precision_files_give_close_reconstructions(family, trained, tmp_path):
    sae = trained[family]
    save_saelens(sae, tmp_path / "fp16", **WHERE, dtype="float16")
    save_saelens(sae, tmp_path / "bf16", **WHERE, dtype="bfloat16")
    assert {t.dtype for t in load_file(tmp_path / "fp16" / "sae_weights.safetensors").values()} == {torch.float16}
    assert {t.dtype for t in load_file(tmp_path / "bf16" / "sae_weights.safetensors").values()} == {torch.bfloat16}
    assert load_saelens(tmp_path / "fp16").W_dec.dtype == torch.float16  # the file's dtype by default
    x = inputs()
    reference = sae(x)[0]
    # Rounding the weights moves pre-activations by ~1e-3 (fp16) or ~1e-2 (bf16) of their size, which can flip a
    # latent that sits at the k-th place or at the threshold: close, not equal.
    for name, tolerance in (("fp16", 3e-2), ("bf16", 1.5e-1)):
        x_hat = load_saelens(tmp_path / name, dtype=torch.float32)(x)[0]
        assert ((x_hat - reference).norm() / reference.norm()).item() < tolerance, name


def test_save_sae_dispatches_to_the_saelens_format(trained, tmp_path):
    save_sae(trained["topk"], tmp_path / "lens", format="saelens", **WHERE)
    assert sorted(p.name for p in (tmp_path / "lens").iterdir()) == ["cfg.json", "sae_weights.safetensors"]
    save_sae(trained["topk"], tmp_path / "own")  # the default format is unchanged
    assert sorted(p.name for p in (tmp_path / "own").iterdir()) == ["config.json", "weights.safetensors"]
    with pytest.raises(ValueError, match="format must be 'sae_lib'.*got 'onnx'"):
        save_sae(trained["topk"], tmp_path / "x", format="onnx")
    with pytest.raises(TypeError, match="only format='saelens' takes"):
        save_sae(trained["topk"], tmp_path / "x", **WHERE)


def test_what_saelens_cannot_compute_is_refused_when_saving(trained, tmp_path):
    with pytest.raises(ValueError, match="no inference threshold yet"):
        save_saelens(BatchTopKSAE(D, N, 3), tmp_path, **WHERE)  # never trained
    for options in ({"threshold": 0.1}, {"stop_on_repeat": True}):
        with pytest.raises(ValueError, match="cannot stop where this MPSAE does"):
            save_saelens(MPSAE(D, N, 4, **options), tmp_path, **WHERE)
    with pytest.raises(ValueError, match="dtype must be one of"):
        save_saelens(trained["relu"], tmp_path, **WHERE, dtype="float64")
    with pytest.raises(ValueError, match="may not set \\['hook_name'\\]"):
        save_saelens(trained["relu"], tmp_path, **WHERE, extra_metadata={"hook_name": "other"})
    with pytest.raises(ValueError, match="hook_name must be a non-empty string"):
        save_saelens(trained["relu"], tmp_path, hook_name="", model_name="m")


# ---------------------------------------------------------------- damaged files
def test_a_missing_file_is_an_error_that_names_it(trained, tmp_path):
    with pytest.raises(FileNotFoundError, match="expected cfg.json and sae_weights.safetensors"):
        load_saelens(tmp_path)
    save_saelens(trained["relu"], tmp_path, **WHERE)
    (tmp_path / "sae_weights.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match=re.escape(f"{tmp_path} is not a SAELens SAE")):
        load_saelens(tmp_path)


def test_a_truncated_weights_file_is_a_checkpoint_error(trained, tmp_path):
    save_saelens(trained["relu"], tmp_path, **WHERE)
    weights = tmp_path / "sae_weights.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="sae_weights.safetensors cannot be read as safetensors"):
        load_saelens(tmp_path)


def test_a_corrupt_or_foreign_config_is_a_checkpoint_error(trained, tmp_path):
    save_saelens(trained["relu"], tmp_path, **WHERE)
    cfg_file = tmp_path / "cfg.json"
    cfg = json.loads(cfg_file.read_text())
    cfg_file.write_text("{not json")
    with pytest.raises(CheckpointError, match="cfg.json is not valid JSON"):
        load_saelens(tmp_path)
    cfg_file.write_text(json.dumps({**cfg, "architecture": "gated"}))
    with pytest.raises(CheckpointError, match="cfg.json: architecture 'gated' has no sae_lib family"):
        load_saelens(tmp_path)
    cfg_file.write_text(json.dumps({**cfg, "architecture": "topk", "k": 3}))  # a relu's weights and config
    with pytest.raises(CheckpointError, match="metadata.sae_lib should hold the config of a sae_lib family saved as"):
        load_saelens(tmp_path)
    cfg_file.write_text(json.dumps({**cfg, "d_sae": N + 1}))
    with pytest.raises(CheckpointError, match="tensor 'W_dec' has shape \\(32, 12\\)"):
        load_saelens(tmp_path)
    cfg_file.write_text(json.dumps({**cfg, "normalize_activations": "layer_norm"}))
    with pytest.raises(CheckpointError, match="normalize_activations='layer_norm'"):
        load_saelens(tmp_path)


def test_weights_that_do_not_fit_the_architecture_are_a_checkpoint_error(trained, tmp_path):
    save_saelens(trained["relu"], tmp_path / "relu", **WHERE)
    save_saelens(trained["mp"], tmp_path / "mp", **WHERE)
    (tmp_path / "mp" / "sae_weights.safetensors").replace(tmp_path / "relu" / "sae_weights.safetensors")
    with pytest.raises(CheckpointError, match="does not fit a 'standard' SAE"):
        load_saelens(tmp_path / "relu")
    save_saelens(trained["relu"], tmp_path / "nan", **WHERE)
    tensors = load_file(tmp_path / "nan" / "sae_weights.safetensors")
    tensors["b_enc"][0] = float("nan")
    save_file(tensors, tmp_path / "nan" / "sae_weights.safetensors")
    with pytest.raises(CheckpointError, match="tensor 'b_enc' should hold finite"):
        load_saelens(tmp_path / "nan")


# ---------------------------------------------------------------- plain SAELens files (no metadata.sae_lib)
def write_plain(path, architecture, tensors, **settings):
    """A directory laid out as SAELens 6 itself saves one, with no sae_lib metadata."""
    path.mkdir()
    metadata = settings.pop("metadata", {})
    cfg = {"architecture": architecture, "d_in": D, "d_sae": N, "dtype": "float32", "device": "cpu",
           "apply_b_dec_to_input": True, "normalize_activations": "none", "reshape_activations": "none",
           **settings, "metadata": {"sae_lens_version": "6.54.12", **metadata}}
    (path / "cfg.json").write_text(json.dumps(cfg))
    save_file({name: t.contiguous() for name, t in tensors.items()}, path / "sae_weights.safetensors")
    return path


def random_weights(seed=0):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.rand(N, 1, generator=g) + 0.5  # decoder rows of any length, as SAELens allows
    return {"W_enc": torch.randn(D, N, generator=g) / D**0.5, "b_enc": torch.randn(N, generator=g) * 0.1,
            "W_dec": torch.randn(N, D, generator=g) / D**0.5 * lengths, "b_dec": torch.randn(D, generator=g)}


@pytest.mark.parametrize("apply_b_dec_to_input", [True, False])
def test_a_plain_standard_sae_loads_as_relu_with_the_same_reconstructions(apply_b_dec_to_input, tmp_path):
    w = random_weights()
    write_plain(tmp_path / "std", "standard", w, apply_b_dec_to_input=apply_b_dec_to_input)
    sae = load_saelens(tmp_path / "std")
    assert isinstance(sae, ReLUSAE)
    x = inputs()
    z = torch.relu((x - w["b_dec"] * apply_b_dec_to_input) @ w["W_enc"] + w["b_enc"])  # SAELens's formulas
    torch.testing.assert_close(sae(x)[0], z @ w["W_dec"] + w["b_dec"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(sae.W_dec.norm(dim=1), torch.ones(N))


def test_a_plain_topk_sae_loads_when_its_selection_can_be_reproduced(tmp_path):
    w = random_weights()
    write_plain(tmp_path / "rescaled", "topk", w, k=4, rescale_acts_by_decoder_norm=True)
    x = inputs()
    pre = ((x - w["b_dec"]) @ w["W_enc"] + w["b_enc"]) * w["W_dec"].norm(dim=1)
    values, indices = pre.topk(4, dim=-1)
    z = torch.zeros_like(pre).scatter(-1, indices, values.relu())
    expected = (z / w["W_dec"].norm(dim=1)) @ w["W_dec"] + w["b_dec"]
    torch.testing.assert_close(load_saelens(tmp_path / "rescaled")(x)[0], expected, atol=1e-5, rtol=1e-5)
    write_plain(tmp_path / "raw", "topk", w, k=4, rescale_acts_by_decoder_norm=False)
    with pytest.raises(CheckpointError, match="picks its top k by raw pre-activation"):
        load_saelens(tmp_path / "raw")


def test_a_plain_jumprelu_loads_only_with_one_threshold_and_a_known_training(tmp_path):
    w = random_weights()
    w["W_dec"] = torch.nn.functional.normalize(w["W_dec"], dim=1)  # as SAELens saves a BatchTopK SAE
    w["threshold"] = torch.full((N,), 0.3)
    training = {"training_architecture": "matryoshka_batchtopk",
                "training_architecture_details": {"k": 3, "matryoshka_widths": [8, N]}}
    write_plain(tmp_path / "matryoshka", "jumprelu", w, metadata=training)
    sae = load_saelens(tmp_path / "matryoshka")
    assert isinstance(sae, MatryoshkaSAE) and sae.prefixes == (8, N) and sae.k == 3
    x = inputs()
    pre = (x - w["b_dec"]) @ w["W_enc"] + w["b_enc"]
    expected = (pre.relu() * (pre > 0.3)) @ w["W_dec"] + w["b_dec"]
    torch.testing.assert_close(sae(x)[0], expected, atol=1e-5, rtol=1e-5)

    write_plain(tmp_path / "untold", "jumprelu", w)
    with pytest.raises(CheckpointError, match="JumpReLU SAE not trained as BatchTopK or Matryoshka"):
        load_saelens(tmp_path / "untold")
    w["threshold"] = torch.linspace(0.1, 0.5, N)  # a real JumpReLU: one threshold per latent
    write_plain(tmp_path / "jumprelu", "jumprelu", w, metadata=training)
    with pytest.raises(CheckpointError, match="not one shared non-negative number"):
        load_saelens(tmp_path / "jumprelu")


def test_a_plain_matching_pursuit_sae_loads_only_with_its_stopping_rules_off(tmp_path):
    w = random_weights()
    tied = {"W_dec": torch.nn.functional.normalize(w["W_dec"], dim=1), "b_dec": w["b_dec"]}
    write_plain(tmp_path / "off", "matching_pursuit", tied, residual_threshold=0.0, max_iterations=5,
                stop_on_duplicate_support=False)
    sae = load_saelens(tmp_path / "off")
    assert isinstance(sae, MPSAE) and sae.k == 5 and sae.threshold is None and not sae.stop_on_repeat
    write_plain(tmp_path / "defaults", "matching_pursuit", tied)  # SAELens's defaults: both rules on
    with pytest.raises(CheckpointError, match="cannot reproduce"):
        load_saelens(tmp_path / "defaults")

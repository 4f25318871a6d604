"""sae_lib: the small library behind *The SAE Book*.

Read it in this order: ``saes`` (the SAE families), ``training`` (one loop for all of them),
``synthetic`` (data with known ground truth), ``metrics``, ``checkpoint``, ``plots``, ``profile``.
Real models live in submodules imported on demand (they pull in heavy packages): ``clip`` (CLIP
through open_clip) with ``image_data`` (captioned images), on the contract in ``models``.
"""

from .checkpoint import load_sae, save_sae
from .metrics import (AtomMatch, babel, coactivation, cosine_matrix, effective_rank, evaluate, fvu, l0,
                      linear_probe_accuracy, match_atoms, mean_max_cosine, modality_score, r_squared, support_babel)
from . import plots  # noqa: F401  (sets up plotly so figures show in Jupyter and in the book)
from .models import LoadedModel, StandInForbiddenError, fall_back_to_standin, hub_unreachable_reason, standins_allowed
from .profile import by_profile, current_profile, default_device, describe
from .saes import FAMILIES, SAE, MPSAE, PursuitTrace, ReLUSAE, TopKSAE
from .synthetic import PairedModalities, SyntheticData, paired_modalities, random_dictionary, superposition_data
from .training import History, Objective, Reconstruction, train_sae

__version__ = "0.1.0"

__all__ = [
    "SAE", "ReLUSAE", "TopKSAE", "MPSAE", "PursuitTrace", "FAMILIES",
    "train_sae", "History", "Objective", "Reconstruction",
    "save_sae", "load_sae",
    "l0", "fvu", "r_squared", "evaluate", "cosine_matrix", "match_atoms", "AtomMatch", "mean_max_cosine",
    "modality_score", "effective_rank", "coactivation", "babel", "support_babel", "linear_probe_accuracy",
    "SyntheticData", "superposition_data", "random_dictionary", "PairedModalities", "paired_modalities",
    "LoadedModel", "StandInForbiddenError", "fall_back_to_standin", "standins_allowed", "hub_unreachable_reason",
    "current_profile", "by_profile", "default_device", "describe",
]

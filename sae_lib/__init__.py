"""sae_lib: the small library behind *The SAE Book*.

Read it in this order: ``saes`` (the SAE families), ``training`` (one loop for all of them),
``synthetic`` (data with known ground truth), ``metrics``, ``checkpoint``, ``plots``, ``profile``.
Part III's modules need the ``[models]`` extra and are imported from where they live, so that
``import sae_lib`` stays light: ``gpt2`` (GPT-2 or its stand-in, text), ``splicing`` (harvest and splice
at a hook), ``e2e`` (the end-to-end objectives), ``tiny_lm`` (a synthetic language and its small LM).
"""

from .checkpoint import load_sae, save_sae
from .metrics import AtomMatch, cosine_matrix, evaluate, fvu, l0, match_atoms, mean_max_cosine, r_squared
from . import plots  # noqa: F401  (sets up plotly so figures show in Jupyter and in the book)
from .models import LoadedModel, StandInForbiddenError, fall_back_to_standin, standins_allowed
from .profile import by_profile, current_profile, default_device, describe
from .saes import FAMILIES, SAE, MPSAE, PursuitTrace, ReLUSAE, TopKSAE
from .synthetic import SyntheticData, random_dictionary, superposition_data
from .training import History, Objective, Reconstruction, train_sae

__version__ = "0.1.0"

__all__ = [
    "SAE", "ReLUSAE", "TopKSAE", "MPSAE", "PursuitTrace", "FAMILIES",
    "train_sae", "History", "Objective", "Reconstruction",
    "save_sae", "load_sae",
    "l0", "fvu", "r_squared", "evaluate", "cosine_matrix", "match_atoms", "AtomMatch", "mean_max_cosine",
    "SyntheticData", "superposition_data", "random_dictionary",
    "LoadedModel", "StandInForbiddenError", "fall_back_to_standin", "standins_allowed",
    "current_profile", "by_profile", "default_device", "describe",
]

"""sae_lib: the small library behind *The SAE Book*.

Read it in this order: ``saes`` (the SAE families), ``training`` (one loop for all of them),
``synthetic`` (data with known ground truth), ``hierarchy`` (concept trees and their geometry), ``metrics``,
``checkpoint``, ``plots``, ``profile``.
"""

from .checkpoint import load_sae, save_sae
from .hierarchy import (PAPER_TRAINING, Concept, ConceptTree, HierarchicalData, conditionally_orthogonal_dictionary,
                        hierarchical_data, paper_tree, run_on_tree, train_on_tree, tree_sae, tree_scores, TreeRun)
from .metrics import (AtomMatch, absorption_score, aligned_atoms, cosine_matrix, error_vs_k, evaluate, fvu, gram_errors,
                      l0, match_atoms, mean_max_cosine, r_squared)
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
    "aligned_atoms", "absorption_score", "gram_errors", "error_vs_k",
    "SyntheticData", "superposition_data", "random_dictionary",
    "Concept", "ConceptTree", "HierarchicalData", "paper_tree", "conditionally_orthogonal_dictionary",
    "hierarchical_data", "PAPER_TRAINING", "tree_sae", "train_on_tree", "tree_scores", "run_on_tree", "TreeRun",
    "LoadedModel", "StandInForbiddenError", "fall_back_to_standin", "standins_allowed",
    "current_profile", "by_profile", "default_device", "describe",
]

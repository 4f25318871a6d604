"""sae_lib: the small library behind *The SAE Book*.

Read it in this order: ``saes`` (the SAE families), ``training`` (one loop for all of them),
``synthetic`` (data with known ground truth), ``noisy_world`` (superposition plus noise),
``hierarchy`` (concept trees and their geometry), ``tree_recipes`` (training and scoring SAEs on a tree),
``tree_experiments`` (chapters 4-5's experiments, defined once), ``metrics``, ``checkpoint`` (on
``bundle``, the on-disk layout of every trained model), ``plots``, ``report``, ``profile``, ``full_profile``
(the shipped full-scale results of chapters 4-5).

Part III's modules need the ``[models]`` extra and are imported from where they live, so that
``import sae_lib`` stays light: ``gpt2`` (GPT-2 or its stand-in, text), ``splicing`` (harvest and splice
at a hook), ``e2e`` (the end-to-end objectives), ``tiny_lm`` (a synthetic language and its small LM),
``clip`` (CLIP through open_clip) with ``image_data`` (captioned scenes), ``mini_clip`` (a CLIP in miniature,
shipped) and ``sharing`` (do two modalities share atoms?), all on the contract in ``models``.
"""

from .checkpoint import CheckpointError, load_sae, save_sae
from .hierarchy import (Concept, ConceptTree, HierarchicalData, conditionally_orthogonal_dictionary, hierarchical_data,
                        paper_tree)
from .metrics import (AtomMatch, absorption_score, aligned_atoms, babel, coactivation, cosine_matrix, effective_rank,
                      error_vs_k, evaluate, feature_response, frontier_at, fvu, gram_errors, l0, linear_probe_accuracy,
                      match_atoms, mean_max_cosine, modality_score, r_squared, support_babel)
from .models import (LoadedModel, StandInForbiddenError, fall_back_to_standin, hub_unreachable_reason, mechanics_only,
                     standins_allowed)
from .noisy_world import NOISY_WORLD, noisy_world_sae, run_in_noisy_world
from .profile import by_profile, current_profile, default_device, describe
from .saes import FAMILIES, SAE, MPSAE, BatchTopKSAE, MatryoshkaSAE, PursuitTrace, ReLUSAE, TopKSAE
from .synthetic import (PairedModalities, SyntheticData, held_out_seed, paired_modalities, random_dictionary,
                        superposition_data)
from .training import History, Objective, Reconstruction, train_sae
from .tree_recipes import (PAPER_TRAINING, TreeRun, median_and_range, run_on_tree, runs_table, train_on_tree, tree_sae,
                           tree_scores, tune_l1)

__version__ = "0.1.0"

__all__ = [
    "SAE", "ReLUSAE", "TopKSAE", "MPSAE", "BatchTopKSAE", "MatryoshkaSAE", "PursuitTrace", "FAMILIES",
    "train_sae", "History", "Objective", "Reconstruction",
    "save_sae", "load_sae", "CheckpointError",
    "l0", "fvu", "r_squared", "evaluate", "frontier_at", "feature_response", "cosine_matrix", "match_atoms",
    "AtomMatch", "mean_max_cosine",
    "aligned_atoms", "absorption_score", "gram_errors", "error_vs_k",
    "modality_score", "effective_rank", "coactivation", "babel", "support_babel", "linear_probe_accuracy",
    "NOISY_WORLD", "noisy_world_sae", "run_in_noisy_world",
    "SyntheticData", "superposition_data", "random_dictionary", "held_out_seed", "PairedModalities",
    "paired_modalities",
    "Concept", "ConceptTree", "HierarchicalData", "paper_tree", "conditionally_orthogonal_dictionary",
    "hierarchical_data", "PAPER_TRAINING", "tree_sae", "train_on_tree", "tree_scores", "run_on_tree", "TreeRun",
    "runs_table", "tune_l1", "median_and_range",
    "LoadedModel", "StandInForbiddenError", "fall_back_to_standin", "standins_allowed", "hub_unreachable_reason",
    "mechanics_only",
    "current_profile", "by_profile", "default_device", "describe",
]

"""Building the host models the SAEs are spliced into (GPT-2, SmolLM2, the tiny LM).

Every host is a TransformerLens ``HookedTransformer``, so harvesting and splicing (:mod:`sae_lib.splicing`)
work the same on all of them. This module holds what their loaders share: how one is constructed.
"""

from __future__ import annotations

import warnings

from transformer_lens import HookedTransformer, HookedTransformerConfig


def hooked_transformer(cfg: HookedTransformerConfig, **kwargs) -> HookedTransformer:
    """``HookedTransformer(cfg)``, without the deprecation notice transformer-lens 3.x prints on every
    construction (4.x replaces the class; the book pins ``<4``). Only that one warning is silenced."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"HookedTransformer.*deprecated", category=DeprecationWarning)
        return HookedTransformer(cfg, **kwargs)

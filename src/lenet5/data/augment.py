"""Random distortions of uint8 digit batches (affine and elastic). Placeholder until issue 7 lands."""

from __future__ import annotations

from lenet5.config import AugmentConfig


def make_augmenter(cfg: AugmentConfig):
    """A ``transform(uint8 batch (B,28,28), rng) -> uint8 batch`` for iterate_batches, or None when off."""
    if not cfg.enabled:
        return None
    raise NotImplementedError("augmentation is not implemented yet")

"""The held-out split lives in ``schemas.split``: training (model/) and AVBench must agree on it."""

from schemas.split import DEFAULT_FRACTION, DEFAULT_SALT, HeldOut, heldout_score, heldout_video_ids, is_heldout

__all__ = ["DEFAULT_FRACTION", "DEFAULT_SALT", "HeldOut", "heldout_score", "heldout_video_ids", "is_heldout"]

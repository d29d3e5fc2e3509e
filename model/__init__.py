"""SAVEn-Vid model: frozen encoders (cached features), TLP, AVTS resampler, LoRA LLM; training and inference.

    python -m model.features DATASET --preset smol          # cache encoder features beside the shards
    python -m model.train DATASET OUT --preset smol --stage both   # prints the checkpoint folder
    torchrun --nproc_per_node=8 -m model.train DATASET OUT --preset 7b --stage 1

Public entry points: ``model.train.train``, ``model.generate.generate`` and ``SavenVidPredictor``,
``model.config.preset_config``, ``model.features.compute_features``.
"""

import os

# OpenMP threads that spin while waiting make a CPU training step ~5x slower as soon as anything else runs on a
# 2-core machine (measured: 36-60 s instead of 6-7 s per smol step). Read when torch loads, so set it before; an
# explicit setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

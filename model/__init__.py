"""SAVEn-Vid model: frozen encoders (cached features), TLP, AVTS resampler, LoRA LLM; training and inference.

    python -m model.features DATASET --preset smol          # cache encoder features beside the shards
    python -m model.train DATASET OUT --preset smol --stage both   # prints the checkpoint folder
    torchrun --nproc_per_node=8 -m model.train DATASET OUT --preset 7b --stage 1

Public entry points: ``model.train.train``, ``model.generate.generate`` and ``SavenVidPredictor``,
``model.config.preset_config``, ``model.features.compute_features``.
"""

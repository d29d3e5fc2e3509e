"""Development data, not the product: synthetic sample videos with known truth (``make samples``, the demo's
fallback sources, the tests) and the tiny model-training sample. Nothing under ``tasks/``, ``model/`` or
``benchmark/`` imports it."""

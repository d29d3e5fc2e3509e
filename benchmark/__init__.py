"""AVBench: build (split, filters, letter balance), adapters (model registry), score, report, lmms-eval export.

Entry point: ``benchmark.run.run_avbench`` (CLI: ``python -m benchmark.run``).
"""

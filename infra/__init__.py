"""Shared machinery of the pipeline, the model and the benchmark: stage errors, the worker contract and backend
registries, Ray placement, the LLM client, the model cache, the sqlite store, and media reading helpers.

Nothing here is a pipeline stage (those are ``tasks/``) and nothing here knows a flow (``flows/``).
"""

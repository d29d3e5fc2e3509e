"""AVBench as an lmms-eval task: the YAML template and the hooks; ``benchmark.export`` writes a runnable copy."""

"""The demo's reading of `prefect deployment run` output."""

from flows.demo import flow_run_id

PRINTED = """Creating flow run for deployment 'build-dataset/local'...
Created flow run 'holistic-ferret'.
\u2514\u2500\u2500 UUID: 96a2bfb6-1165-4df3-9984-7392c76ef38e
\u2514\u2500\u2500 Parameters: {'sources': '/x/sources.yaml'}
"""


def test_flow_run_id_is_read_from_the_tree_prefect_prints():
    assert flow_run_id(PRINTED) == "96a2bfb6-1165-4df3-9984-7392c76ef38e"
    assert flow_run_id("Created flow run 'x'.\nno id here") is None

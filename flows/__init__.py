"""Multi-step flows and their traces (flows/README.md): a flow is a YAML file of steps with
policies, run as the ``flow`` job kind through the queue; each agent step is an agent run.

    from flows import api
    api.run("examples/multi_agent/coding_assistant/flow.yaml", {"request": "..."}, tracer="sqlite")
"""

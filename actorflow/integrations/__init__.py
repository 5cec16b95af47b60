"""Optional integrations of actorflow with other libraries, each behind an extra.

`actorflow.integrations.pydantic_ai` (``pip install 'actorflow[pydantic-ai]'``): a pydantic-ai
agent run inside an actor's handler, every model request and tool call a journaled step.
These modules use actorflow's public API only.
"""

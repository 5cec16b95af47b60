"""actorflow: an asyncio actor runtime with an event-sourced journal."""

__version__ = "0.1.0"

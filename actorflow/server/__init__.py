"""`actorflow serve`: the HTTP API over a `Runtime`, and a process that stops gracefully."""

from actorflow.runtime._status import ACTOR_STATES as ACTOR_STATES
from actorflow.server._app import ServerState as ServerState
from actorflow.server._app import create_app as create_app
from actorflow.server._serve import DEFAULT_PORT as DEFAULT_PORT
from actorflow.server._serve import ServeConfig as ServeConfig
from actorflow.server._serve import ServeError as ServeError
from actorflow.server._serve import load_actors as load_actors
from actorflow.server._serve import serve as serve

__all__ = [
    "ACTOR_STATES",
    "DEFAULT_PORT",
    "ServeConfig",
    "ServeError",
    "ServerState",
    "create_app",
    "load_actors",
    "serve",
]

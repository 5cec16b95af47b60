"""The example agents together, for ``actorflow serve examples.agents``.

- ``Researcher``: plan, search, summarise, wait for a human's ``approval`` event.
- ``Checkout``: charge, reserve, ship, compensating on failure.

See the README's walk-through, and `examples/research.py`, `examples/payments.py`.
"""

from examples.payments import Checkout
from examples.research import Researcher

ACTORS = [Researcher, Checkout]

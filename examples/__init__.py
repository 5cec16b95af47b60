"""Example agents, runnable offline.

``python -m examples.research`` and ``python -m examples.payments``; see each module.
"""

"""Behaviour tests of the actor runtime: actors, ctx, replay, recovery, status, snapshots."""

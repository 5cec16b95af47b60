"""actorflow's benchmark suites: where the speed and memory targets live.

Run one suite with ``python -m benchmarks SUITE [--quick] [--json PATH]``; each suite is a
module of this package that measures one question and compares it with a ceiling measured
in the same run on the same machine. Benchmarks use the public API only.

``python -m benchmarks compare SUITE [--base REV] [--rounds N] [--quick] [--json PATH]``
runs SUITE alternately for the working tree and for git revision REV (by default ``HEAD``
when the tree has uncommitted changes, else the merge-base with ``main``, else ``HEAD~1``)
and prints each figure's median on both sides and new / base: on a shared, noisy machine,
a change is judged against the previous code measured in the same time window, never
against figures from another day. See `benchmarks._compare`.
"""

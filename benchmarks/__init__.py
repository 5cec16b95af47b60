"""actorflow's benchmark suites: where the speed and memory targets live.

Run one suite with ``python -m benchmarks SUITE [--quick] [--json PATH]``; each suite is a
module of this package that measures one question and compares it with a ceiling measured
in the same run on the same machine. Benchmarks use the public API only.
"""

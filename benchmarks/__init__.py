"""Benchmarks of :mod:`tnadapt.tt` against the LAPACK floor and the anchor libraries (see ``docs/benchmarks.md``)."""

"""Benchmarks and crash trials comparing pop3s-fetch with mpop, getmail6 and fetchmail.

Run ``python -m benchmarks.run`` (see benchmarks/README.md). This package drives the programs
as subprocesses against a private Dovecot; it imports pop3s_fetch nowhere, so it measures the
command a user runs, not its internals.
"""

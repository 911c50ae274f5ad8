"""The simulator's one root error type and its transient/terminal split."""

from __future__ import annotations


class SimulatorError(Exception):
    """Root of every error the simulator raises on purpose."""


class Rejected(SimulatorError):
    """An operation's preconditions do not hold (nothing to pick, row gone, short stock):
    the transaction is rolled back and nothing changed. Terminal for that attempt."""


class RetriesExhausted(SimulatorError):
    """A transaction kept failing with serialization failures or deadlocks."""


class SeedError(SimulatorError):
    """The target database cannot be seeded (not empty, bad size, ...)."""

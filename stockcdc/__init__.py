"""stockcdc: the CDC stock read model's shared pieces (settings, CLI)."""

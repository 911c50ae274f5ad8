"""read_model."""

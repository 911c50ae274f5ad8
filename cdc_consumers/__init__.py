"""cdc_consumers."""

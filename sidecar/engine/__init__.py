"""The level-triggered loop and its executors (issuer, nginx publisher, status reporter)."""

"""Drivers that run pumlc end to end as a user would (demo, reproduce, voc-mini): they call the CLI itself, so
they sit above it."""

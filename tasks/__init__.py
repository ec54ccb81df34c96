"""Prefect tasks: thin wrappers that load inputs, call one library function and write its output."""

"""Prefect flows, one per DVC stage (`python -m flows.<stage>` is the stage's cmd)."""

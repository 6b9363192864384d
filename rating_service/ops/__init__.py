"""Ops tooling over Temporal: failed invoice runs, their replay, and the determinism guard."""

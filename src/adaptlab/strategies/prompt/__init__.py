"""Prompt strategies (no weight changes): zero-shot, few-shot (random, balanced, kNN retrieval), contextual
calibration and prompt search. Importing a strategy module registers it."""

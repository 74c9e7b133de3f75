"""Evaluation: score answers against held-out questions (learned) for each system."""

"""Continuous learning: click models, their validation, and blue-green deployment."""

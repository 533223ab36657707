"""Losses of the built-in component set."""

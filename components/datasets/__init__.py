"""Training datasets of the built-in component set."""

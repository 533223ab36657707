"""The built-in recipes, shipped as package data so a wheel install finds them too."""

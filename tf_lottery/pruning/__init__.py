"""Masks, the constraint that enforces them, and the rules that choose them."""

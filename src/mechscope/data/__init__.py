"""Prompts and tasks: clean/corrupt pairs with answers and metrics."""

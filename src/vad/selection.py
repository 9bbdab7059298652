"""Choosing without test labels."""

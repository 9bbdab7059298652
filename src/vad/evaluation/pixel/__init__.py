"""Pixel-level evaluation."""

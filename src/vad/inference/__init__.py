"""Scoring any video or stream with a trained detector."""

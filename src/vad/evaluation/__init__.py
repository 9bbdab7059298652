"""The one place a frame's score is computed."""

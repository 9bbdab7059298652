"""Run files, summaries, plots, trackers."""

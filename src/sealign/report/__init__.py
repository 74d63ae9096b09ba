"""Run reports: plots (reward curves, spectrograms) and a self-contained HTML page."""

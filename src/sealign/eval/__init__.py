"""Scoring, statistics and evaluation tables."""

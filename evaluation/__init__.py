"""Scoring of renders and videos: frame quality, landmarks, lip sync."""

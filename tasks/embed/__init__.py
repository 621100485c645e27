"""Embed: views through an image model and pooled per place (models, preprocessing, the
weight-free baseline, precision choice and its quality check)."""

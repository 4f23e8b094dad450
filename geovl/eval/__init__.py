"""Evaluation protocols and metrics (retrieval, zero-shot, linear probe, captioning); lands with the eval issue."""

"""Training: contrastive fine-tuning, captioners and the diffusion model (lands with the training issue).

This package imports the library; the library never imports it.
"""

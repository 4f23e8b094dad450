"""Embedding collections and searching them.

Currently: :func:`embed_images`, the batch embedding of image folders (reader -> decode/preprocess in DataLoader
workers -> model -> writer). The FAISS index and search land with the index issue.
"""

from geovl.index.embed import EmbedResult, embed_images, embed_sources, list_images

__all__ = ["EmbedResult", "embed_images", "embed_sources", "list_images"]

"""Inference pipelines: one object per task with one obvious call, used alike by the CLI, the HTTP API and the demo.

* :mod:`geovl.tasks.embedding`: images (paths, bytes, arrays, records) to embeddings, bad inputs recorded and skipped.
* :mod:`geovl.tasks.zeroshot`: zero-shot classification of images and GeoTIFF scenes (label maps).
* :mod:`geovl.tasks.explain`: why an image matches a query: its per-patch similarity map and a heat-map overlay.
"""

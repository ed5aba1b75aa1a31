"""Data layer: codecs, converters to COCO JSON, readers, targets and generators.

Nothing here imports TensorFlow except `generator`.
"""

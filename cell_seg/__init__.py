"""cell_seg: microscopy images to cell instances with Keras/TensorFlow."""

__version__ = "0.1.0"

"""preforkd: an nginx-style prefork server for Python."""

__version__ = "0.1.0"

"""plainbox-like: run batches of shell jobs into crash-safe, resumable session directories."""

__version__ = "0.1.0"

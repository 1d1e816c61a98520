"""The on-disk format: names, model, codec, locks, io-logs, reading and writing sessions.

The bottom layer: it imports nothing of the package but ``errors`` and ``text``.
"""

"""The SQLite index of a repository and the watcher that keeps it fresh.

Beside ``maintain`` and ``exports`` (none imports another), above ``read``.
"""

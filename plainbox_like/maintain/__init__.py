"""Maintenance of a repository: delete, rename, tag, gc, cleanup; check, salvage, repair.

Beside ``index`` and ``exports`` (none imports another), above ``read``.
"""

"""Running jobs: the batch loop, the executors and workers, control of a live run.

Imports ``define`` and ``store``, never ``read``, ``index``, ``maintain``, ``exports`` or ``cli``.
"""

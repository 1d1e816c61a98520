#!/usr/bin/env python3
"""Provider definition, in the style of a Checkbox provider's manage.py.

plainbox-like never runs this file: it reads the namespace from the
``setup(...)`` call below with the ``ast`` module.
"""
from plainbox.provider_manager import setup, N_  # noqa: F401 - not installed here; never imported

setup(
    name="com.canonical.certification:tutorial",
    namespace="com.canonical.certification",
    version="1.0",
    description=N_("A tutorial provider: one job of each kind, for learning and for tests"),
)

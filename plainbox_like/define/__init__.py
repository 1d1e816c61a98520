"""What to run: unit files, providers, resources and requirements, test plans.

Imports only ``store`` (and ``errors``, ``text``).
"""

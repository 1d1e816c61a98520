"""Lets the test modules import their helpers (``strategies``) however pytest imports them."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

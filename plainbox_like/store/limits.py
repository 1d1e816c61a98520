"""How much reading a session may take, whatever its files hold (a gzip bomb, a huge log)."""

from __future__ import annotations

import os

from plainbox_like.errors import PlainboxLikeError
from plainbox_like.text import parse_size

#: The most a state file (``session``, ``session.bak``) may inflate to; also the longest
#: line read from an io-log. Past it the file is reported as corrupt, and the rest of it
#: is never inflated: a small gzip bomb cannot take the memory of whoever reads it.
MAX_STATE_SIZE = 512 << 20
#: The most of a resource job's output read for its records: the records past it are left out,
#: with a warning naming the job, so a runaway resource job cannot take the runner's memory.
MAX_RESOURCE_OUTPUT = 64 << 20
#: Environment variable that sets another limit (a size: ``64M``, ``2G``).
MAX_STATE_SIZE_ENV = "PLAINBOX_LIKE_MAX_STATE_SIZE"


def max_state_size() -> int:
    """:data:`MAX_STATE_SIZE`, or the size given by ``$PLAINBOX_LIKE_MAX_STATE_SIZE``."""
    text = os.environ.get(MAX_STATE_SIZE_ENV)
    if not text:
        return MAX_STATE_SIZE
    try:
        return parse_size(text)
    except ValueError as exc:
        raise PlainboxLikeError(f"${MAX_STATE_SIZE_ENV}: {exc}") from None

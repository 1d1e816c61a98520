"""The names of the on-disk contract, in one place: file names, session flags, job outcomes, statuses.

Every module that needs one of these imports it from here (the older homes,
``model``, ``codec``, ``locks``, ``paths``, ``summary``, re-export
them). This module imports nothing, so the index, which must start fast, can
use the same names as the library instead of copies.
"""

#: Name of the format of our own sessions (``"format"`` in the state, a session's origin).
FORMAT = "plainbox-like"

# -- files of a session directory ---------------------------------------------------
SESSION_SUFFIX = ".session"


def is_session_name(name: str) -> bool:
    """Whether an entry of ``sessions/`` named *name* is a session's, should it be a directory.

    A session directory is such an entry that is a directory, or a symbolic link to one (a session
    moved to another disk and linked back): every lister follows the link to see that, so ``list``,
    ``check`` and ``gc`` agree on what the repository holds. Hidden names are imports being staged.
    """
    return name.endswith(SESSION_SUFFIX) and not name.startswith(".")
#: Hidden staging directories of ``import`` inside the sessions directory.
IMPORT_STAGING_PREFIX = ".importing-"
STATE_FILE = "session"
#: The snapshot before the current one, kept until the next successful snapshot.
BACKUP_FILE = "session.bak"
JOURNAL_FILE = "journal"
LOCK_FILE = "lock"
IO_LOGS = "io-logs"
#: The record file of a log; its raw files are the same stem with ``.stdout`` and ``.stderr``.
RECORD_SUFFIX = ".record.gz"
SHARE_DIR = "session-share"

# -- job outcomes -------------------------------------------------------------------
#: Outcomes that count as "the job ran and did what it should".
OUTCOME_PASS = "pass"
OUTCOME_FAIL = "fail"
OUTCOME_CRASH = "crash"
OUTCOME_SKIP = "skip"
OUTCOME_SKIPPED_DEPENDENCY = "skipped-dependency"
OUTCOME_SKIPPED_RESOURCE = "skipped-resource"
#: Outcomes of a job that did not run because of how the batch is defined.
SKIP_OUTCOMES = frozenset(
    {OUTCOME_SKIP, OUTCOME_SKIPPED_DEPENDENCY, OUTCOME_SKIPPED_RESOURCE, "not-supported", "not-implemented"}
)
FAILED_OUTCOMES = frozenset({OUTCOME_FAIL, OUTCOME_CRASH})

# -- session flags ------------------------------------------------------------------
#: Session flags, as in Plainbox.
FLAG_INCOMPLETE = "incomplete"
FLAG_SUBMITTED = "submitted"
#: Ours: the runner waits between jobs until asked to continue.
FLAG_PAUSED = "paused"
#: Ours: the runner waits for ``plainbox-like answer`` on the job named by ``running_job_name``.
FLAG_WAITING = "waiting-for-person"

# -- statuses of a session as listed --------------------------------------------------
STATUS_RUNNING = "running"
#: A runner is alive but waits between jobs (``plainbox-like pause``).
STATUS_PAUSED = "paused"
STATUS_INCOMPLETE = "incomplete"
STATUS_COMPLETE = "complete"
STATUS_CORRUPT = "corrupt"
STATUSES = (STATUS_RUNNING, STATUS_PAUSED, STATUS_INCOMPLETE, STATUS_COMPLETE, STATUS_CORRUPT)
#: Fields of a session summary that hold epoch seconds.
TIME_FIELDS = ("created", "updated", "finished")

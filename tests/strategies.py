"""Hypothesis strategies for the persisted model and for io-log records."""

from __future__ import annotations

from hypothesis import strategies as st

from plainbox_like.store.iolog import STREAMS
from plainbox_like.store.model import Attempt, Runner, RunningJob, SessionMetadata, SessionState

#: Arbitrary text (Hypothesis leaves out lone surrogates, which JSON cannot carry as UTF-8).
texts = st.text(max_size=24)
optional_texts = st.none() | texts
finite_floats = st.floats(allow_nan=False, allow_infinity=False)
optional_floats = st.none() | finite_floats
#: Integers as the state can hold them: signed 64-bit (exit codes, pids and sequence numbers fit easily).
big_ints = st.integers(min_value=-(2**63), max_value=2**63 - 1)

attempts = st.builds(
    Attempt,
    outcome=texts,
    return_code=st.none() | big_ints,
    execution_duration=optional_floats,
    comments=optional_texts,
    io_log_filename=optional_texts,
    attempt=st.integers(min_value=1, max_value=10_000),
    started=optional_floats,
    skip_reason=optional_texts,
)

running_jobs = st.builds(
    RunningJob,
    attempt=st.integers(min_value=1, max_value=10_000),
    started=finite_floats,
    io_log_filename=optional_texts,
)

runners = st.builds(Runner, pid=st.integers(min_value=1, max_value=2**31), host=texts)

session_metadata = st.builds(
    SessionMetadata,
    title=optional_texts,
    flags=st.lists(texts, max_size=4),
    running_job_name=optional_texts,
    app_id=optional_texts,
    app_blob=optional_texts,
    created=optional_floats,
    updated=optional_floats,
    finished=optional_floats,
    tags=st.lists(texts, max_size=4),
    parent_session=optional_texts,
    parent_job=optional_texts,
    runner=st.none() | runners,
)

session_states = st.builds(
    SessionState,
    jobs=st.dictionaries(texts, texts, max_size=5),
    results=st.dictionaries(texts, st.lists(attempts, max_size=3), max_size=5),
    desired_job_list=st.lists(texts, max_size=5),
    mandatory_job_list=st.lists(texts, max_size=3),
    metadata=session_metadata,
    running_jobs=st.dictionaries(texts, running_jobs, max_size=3),
    journal_seq=st.integers(min_value=0, max_value=2**63 - 1),
)

#: io-log chunks: (stream, non-empty raw bytes, seconds the fake clock advances before the chunk).
io_chunks = st.lists(
    st.tuples(
        st.sampled_from(STREAMS),
        st.binary(min_size=1, max_size=300),
        st.floats(min_value=0, max_value=5, allow_nan=False, allow_infinity=False),
    ),
    max_size=25,
)

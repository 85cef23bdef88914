"""The pfntrace recording file (``.pft``): one file ``pfntrace record`` writes
and ``report``/``check``/exports read.  See format.py for the on-disk layout.
"""

from pfntrace.recording.format import (  # noqa: F401
    BLOCK_EVENTS, BLOCK_HEADER, BLOCK_LOST, BLOCK_META, BLOCK_TRAILER,
    DEFAULT_NAME, EXTENSION, FORMAT_VERSION, RecordingError,
)
from pfntrace.recording.reader import Recording  # noqa: F401
from pfntrace.recording.writer import RecordingWriter  # noqa: F401

__all__ = [
    "Recording", "RecordingWriter", "RecordingError",
    "DEFAULT_NAME", "EXTENSION", "FORMAT_VERSION",
    "BLOCK_HEADER", "BLOCK_EVENTS", "BLOCK_META", "BLOCK_LOST", "BLOCK_TRAILER",
]

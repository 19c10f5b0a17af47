"""The plain-RQ baseline's job: does nothing, like data_processing with duration_ms 0."""


def noop() -> None:
    return None

"""The plain-RQ baseline's job: does nothing, like data_processing with duration_ms 0."""


def noop() -> None:
    return None


def sleep(ms: int) -> None:
    """The plain-RQ baseline's job for a task of `duration_ms` = ms."""
    import time

    time.sleep(ms / 1000)


def stamp() -> float:
    """The plain-RQ baseline's `stamp` (bench.tasks)."""
    import time

    return time.time()

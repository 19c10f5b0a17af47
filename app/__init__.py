"""rqflow: a distributed task scheduler on RQ."""

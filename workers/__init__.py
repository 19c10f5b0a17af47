"""What runs tasks: the allow-listed entry point, built-in task types and the RQ worker class."""

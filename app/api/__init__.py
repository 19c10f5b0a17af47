"""The HTTP face of rqflow (Starlette). Only its entry point imports it."""

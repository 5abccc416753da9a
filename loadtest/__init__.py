"""Load test (Locust) and side-by-side relay benchmark of the realtime gateway.

See loadtest/README.md for the commands.
"""

"""Temporal workflows and activities of the rating service; the worker registers `registry`'s.

Workflows orchestrate and do no I/O; activities act and are idempotent on business keys. This
package's `__init__` imports nothing: Temporal's sandbox imports it for every workflow module.
"""

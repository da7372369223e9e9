"""Test-only code: builders of small synthetic inputs and the constants that describe them.

Plain functions, imported by full name; fixtures that several modules share live in the nearest
``conftest.py``.
"""

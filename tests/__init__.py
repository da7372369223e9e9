"""The test suite; its folders mirror ``auditor/``.

Every folder is a package so that same-named modules in different folders
(``tests/cli/test_evaluate.py``, ``tests/training/test_evaluate.py``) import as distinct modules
for pytest and mypy, and so that test-only code imports by its full name
(``from tests.helpers.scan_world import make_scan_world``), never off ``sys.path``.
"""

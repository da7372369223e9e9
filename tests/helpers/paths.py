"""Where the files the suite reads live, so that a test module can move without its paths."""

from __future__ import annotations

from pathlib import Path

TESTS_DIR = Path(__file__).resolve().parents[1]
REPO_DIR = TESTS_DIR.parent
#: small real DICOMs copied from the corpus, with their licence notices (docs/development.md)
DICOM_DATA = TESTS_DIR / "data" / "dicom"
#: the sample archive shipped at the top of the repository
SAMPLE_DATA = REPO_DIR / "sample_data"

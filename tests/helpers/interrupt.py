"""A scan killed part-way, for the tests of ``--resume``."""

from __future__ import annotations

from collections.abc import Callable

from auditor.scan.config import ScanEvent


def stop_after_batches(count: int = 1) -> Callable[[ScanEvent], None]:
    """A progress callback that raises KeyboardInterrupt (a simulated kill) once the scan has
    committed ``count`` batches, so the journal holds exactly those batches' images."""
    seen = 0

    def on_event(event: ScanEvent) -> None:
        nonlocal seen
        if event.kind == "batch":
            seen += 1
            if seen == count:
                raise KeyboardInterrupt("simulated kill")

    return on_event

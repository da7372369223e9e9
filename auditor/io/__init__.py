"""Reading radiographs: one entry point, :func:`auditor.io.radiograph.read_radiograph`."""

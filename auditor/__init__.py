"""tlaudit: audit archived lateral thoracolumbar radiographs for missed fractures."""

__version__ = "0.1.0"

"""Walking an archive and deciding, per file, whether it is a lateral thoracolumbar view."""

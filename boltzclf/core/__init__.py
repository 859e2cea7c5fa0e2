"""Project-wide plumbing: errors, config validation, atomic I/O, run directories, provenance."""

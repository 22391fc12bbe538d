"""The ``ferry`` command line: one module per command, loaded on first use."""

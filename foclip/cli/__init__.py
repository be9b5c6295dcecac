"""Command-line interface: one module per command; rich lives here, not in the library."""

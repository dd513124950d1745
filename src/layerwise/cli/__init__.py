"""Command-line interface: `layerwise <command>`; each command module is thin."""

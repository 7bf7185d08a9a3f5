"""The bottom layer: errors, the typed config tree, settings, schema and constants, starting Ray."""

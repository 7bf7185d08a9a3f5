"""Files to validated rows: layouts, validation, splits, the leak guard, Ray Data reading."""

"""MLflow: the tracking store, the registry and its champion rule, the pyfunc."""

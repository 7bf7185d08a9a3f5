"""The model and what travels with it: preprocessing, the MLP, bundles, scoring, metrics, drift."""

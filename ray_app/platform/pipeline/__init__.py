"""The Kubeflow pipeline: its steps, its definition, and a local run."""

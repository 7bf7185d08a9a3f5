"""Kubernetes and Kubeflow: manifests, the operator's admission rules, checks, launchers,
the pipeline, releases."""

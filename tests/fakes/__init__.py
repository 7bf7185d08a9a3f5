"""Stand-ins for the pieces of Kubernetes that the tests' fake API server is built from."""

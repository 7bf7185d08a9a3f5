"""Answering requests: the HTTP API, the Ray Serve graph, the plain server, batch scoring."""

"""The `ray-app` command line: parse, build the config, call one function."""

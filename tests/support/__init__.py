"""Helpers shared by the tests: paths, envs, the command line."""

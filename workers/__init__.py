"""The code that runs inside a model's environment.

Imports only what every environment has (stdlib, pyzmq, msgpack, numpy) plus `models`.
"""

"""The model layer: the trained prompt format, the tool-call grammar, model files, speed, the backends.

Owns everything between a conversation and a model's tokens. May import only the base (config, errors,
interfaces, logs); never the explorer, the sandbox or a front door.
"""

"""The MCP server: the explore_codebase tool, transports, the model pool, bearer tokens, client installs.

A front door. May import the explorer, the model layer, the sandbox and the base; nothing imports it
but the command line.
"""

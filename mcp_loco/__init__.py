"""mcp-loco: a local code explorer for MCP clients, run by LocoOperator-4B on llama.cpp."""

from mcp_loco import logs

__version__ = "0.1.0"

# Before anything logs: structlog's default writes to stdout, which is the MCP stdio channel.
logs.configure()

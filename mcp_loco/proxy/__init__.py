"""`mcp-loco proxy`: an Anthropic Messages endpoint that runs Claude Code's subagents on the local model.

wire.py: request models, ids and error bodies; convert.py: Anthropic messages to the trained ChatML and
back, with the memory that keeps prompts append-only; grammars.py: the lazy tool-call grammar per tool
set; local.py: the model instances and the generation thread; stream.py: server-sent events;
upstream.py: forwarding; app.py: routing, fallback and the HTTP server.
"""

from mcp_loco.proxy.app import create_app, serve

__all__ = ["create_app", "serve"]

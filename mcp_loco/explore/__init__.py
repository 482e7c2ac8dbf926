"""The explorer: the agent loop, its turns, the report and the checks of its citations and quotes.

Owns one exploration from question to verified report. May import the model layer (`mcp_loco.model`),
the sandbox and the base (config, errors, interfaces, logs); never a front door (serve, proxy, evals,
batch, doctor, cli).
"""

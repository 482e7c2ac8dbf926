"""`python -m mcp_loco` runs the command line."""

from mcp_loco.cli import main

raise SystemExit(main())

"""Transports that put the guard in front of an MCP server. stdio first."""

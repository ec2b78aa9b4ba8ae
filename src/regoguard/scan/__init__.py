"""``regoguard scan``: list an MCP server's tools (:mod:`.command`), sort them into risk groups
(:mod:`.classify`), and render a starter policy (:mod:`.render`)."""

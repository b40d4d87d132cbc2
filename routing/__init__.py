"""Region codes, circle registry, catalog index and route resolution (see docs)."""

"""A vendored stand-in for six (the test only asks where it came from)."""
VENDORED = True

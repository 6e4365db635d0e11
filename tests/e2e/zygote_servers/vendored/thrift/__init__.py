"""A vendored stand-in for the thrift package."""
VENDORED = True

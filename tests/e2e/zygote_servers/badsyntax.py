"""A server that does not compile (issue 18's comparison suite): python3 prints the
SyntaxError without a traceback header and exits 1."""
import os

PORT = int(os.environ["PORT"]
print(PORT)

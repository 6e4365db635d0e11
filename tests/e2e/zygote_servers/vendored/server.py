"""A function that ships its own copies of modules next to its script (as `pip install
-t .` leaves them): python3 SCRIPT puts the script's directory first on sys.path, so
these win over the system's. GET /modules answers which file each import came from."""
import json
import os
from http.server import BaseHTTPRequestHandler, HTTPServer

import six
import thrift


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        data = json.dumps({"six": [os.path.basename(six.__file__), getattr(six, "VENDORED", False)],
                           "thrift": [os.path.relpath(thrift.__file__), getattr(thrift, "VENDORED", False)]}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *a):
        pass


if __name__ == "__main__":
    HTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()

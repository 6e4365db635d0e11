"""A server that crashes at import (issue 18's comparison suite): an exception from a
function of its own, so the traceback has two frames of this file. RAISE=KeyboardInterrupt
raises that instead (python3 then dies of SIGINT)."""
import os


def load_config(path):
    if os.environ.get("RAISE") == "KeyboardInterrupt":
        raise KeyboardInterrupt
    with open(path) as f:
        return f.read()


CONFIG = load_config(os.path.join(os.path.dirname(os.path.abspath(__file__)), "missing.conf"))

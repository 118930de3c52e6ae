#!/usr/bin/env python3
"""Container HEALTHCHECK: exit 0 when the service answers ``GET /readyz`` with 200, else 1.

Python rather than curl because the slim runtime image has Python and no curl; standard library
only, so it runs with any interpreter in the image.
"""

import os
import sys
import urllib.error
import urllib.request

port = os.environ.get("OODSERVE_PORT", "8000")
url = f"http://127.0.0.1:{port}/readyz"
try:
    with urllib.request.urlopen(url, timeout=2.5) as response:
        sys.exit(0 if response.status == 200 else 1)
except (urllib.error.URLError, OSError) as e:  # HTTPError (e.g. 503 while loading) is a URLError
    print(f"{url}: {e}", file=sys.stderr)
    sys.exit(1)

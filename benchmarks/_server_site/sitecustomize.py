"""
Imported at start-up by the bundled server's process when benchmarks ask for TCP_NODELAY.

The bundled server (``http.server``) writes a response's headers and body in two sends with
Nagle's algorithm on; on a keep-alive connection the body then waits for the client's delayed
ACK, about 40 ms per request on Linux. The real script-runner (Node.js) disables Nagle on every
connection (``http.createServer`` ``noDelay`` defaults to true since Node 18), so benchmarks of
the provider run the bundled server that way too. The fix for the server itself is one line:
``disable_nagle_algorithm = True`` on its request handler.
"""

from __future__ import annotations

import socketserver

socketserver.StreamRequestHandler.disable_nagle_algorithm = True

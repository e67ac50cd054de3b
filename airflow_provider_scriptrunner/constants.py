"""Names and defaults of the provider and limits of the script-runner API, defined once (no imports)."""

from __future__ import annotations

DEFAULT_CONN_ID = "scriptrunner_default"
CONN_TYPE = "scriptrunner"
DEFAULT_PORT = 8080
#: Seconds to wait for each HTTP response (connection extra ``timeout``).
DEFAULT_TIMEOUT = 30.0
#: Extra attempts for transient errors (connection extra ``retries``).
DEFAULT_RETRIES = 3
#: HTTP statuses worth another try of a request that does not start a script.
TRANSIENT_STATUS_CODES = frozenset({429, 502, 503, 504})
#: Bytes per log request; the server's default page size.
DEFAULT_LOG_PAGE_BYTES = 65536
#: The server caps a log page at this many bytes.
MAX_LOG_PAGE_BYTES = 1048576
#: A page must hold one whole UTF-8 character (up to 4 bytes).
MIN_LOG_PAGE_BYTES = 4
LOG_STREAMS = ("stdout", "stderr")
#: Connections per shared async client (one per event loop and connection settings, used by every
#: trigger in a triggerer): enough for thousands of triggers polling, bounded for the server.
ASYNC_POOL_CONNECTIONS = 64

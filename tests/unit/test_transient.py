"""Which failures the orchestrator retries: network reads, not bad data or missing files."""
import socket
from urllib.error import HTTPError, URLError

from tasks.stage import is_transient


def test_network_failures_are_transient_and_others_are_not():
    assert is_transient(ConnectionResetError())
    assert is_transient(TimeoutError())
    assert is_transient(URLError(socket.gaierror("Name or service not known")))
    assert is_transient(HTTPError("https://x", 503, "Service Unavailable", {}, None))
    assert not is_transient(HTTPError("https://x", 403, "Forbidden", {}, None))
    assert not is_transient(FileNotFoundError("x.warc.gz"))
    assert not is_transient(PermissionError("x.warc.gz"))

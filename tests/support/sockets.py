"""Raw TCP: a free port, and what a server answers to bytes sent as they are."""

import re
import socket


def free_port() -> int:
    """A port nothing listens on now (nor, most likely, a moment later)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def received_until_closed(port: int, data: bytes, timeout: float = 5.0) -> tuple[bytes, bool]:
    """Send `data`; return what came back and whether the server closed the connection within `timeout`."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        received = b""
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except TimeoutError:
            return received, False
        except ConnectionResetError:
            pass
    return received, True


def statuses(received: bytes) -> list[int]:
    """The status codes of every HTTP response in `received`, in order."""
    return [int(status) for status in re.findall(rb"HTTP/1\.[01] (\d{3}) ", received)]

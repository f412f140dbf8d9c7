"""Hand a small byte string (the NCCL unique id) from rank 0 to the others over MASTER_ADDR:MASTER_PORT.

Only for launches without MPI (RANK/WORLD_SIZE variables); the tensors themselves never go
through this socket.
"""
from __future__ import annotations

import socket
import time


def share_from_rank0(payload: bytes | None, rank: int, world_size: int, addr: str, port: int,
                     timeout: float) -> bytes:
    deadline = time.monotonic() + timeout
    if rank == 0:
        with socket.create_server(("", port), reuse_port=False) as server:
            server.settimeout(timeout)
            for _ in range(world_size - 1):
                try:
                    conn, _ = server.accept()
                except socket.timeout:
                    raise TimeoutError(f"rendezvous: not every one of {world_size} ranks connected to "
                                       f"port {port} within {timeout:g} s") from None
                with conn:
                    conn.sendall(len(payload).to_bytes(4, "little") + payload)
        return payload
    while True:  # rank 0 may not listen yet: retry until the deadline
        try:
            with socket.create_connection((addr, port), timeout=max(0.1, deadline - time.monotonic())) as conn:
                return _receive(conn)
        except OSError as error:
            if time.monotonic() > deadline:
                raise TimeoutError(f"rendezvous: rank {rank} could not reach rank 0 at {addr}:{port} "
                                   f"within {timeout:g} s ({error})") from None
            time.sleep(0.2)


def _receive(conn) -> bytes:
    data = b""
    while len(data) < 4 or len(data) < 4 + int.from_bytes(data[:4], "little"):
        chunk = conn.recv(4096)
        if not chunk:
            raise ConnectionError("rendezvous: rank 0 closed the connection early")
        data += chunk
    return data[4:]

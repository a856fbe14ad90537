"""The gRPC floor: a grpcio server whose handlers do nothing but answer a fixed reply.

``python -m bench.empty_server PORT PATH=REPLY_BYTES ...`` serves each method PATH with a
reply of that many bytes, on the same thread pool size as the services, until SIGTERM.
"""

from __future__ import annotations

import signal
import sys
import threading
from concurrent import futures
from typing import Any

import grpc

# The services' pool size (services/common/grpc_server.py).
MAX_WORKERS = 32


def _identity(data: bytes) -> bytes:
    return data


def _handler(reply: bytes) -> grpc.RpcMethodHandler[bytes, bytes]:
    def answer(request: bytes, context: Any) -> bytes:
        return reply

    return grpc.unary_unary_rpc_method_handler(
        answer, request_deserializer=_identity, response_serializer=_identity
    )


def serve(port: int, replies: dict[str, int]) -> None:
    by_service: dict[str, dict[str, grpc.RpcMethodHandler[bytes, bytes]]] = {}
    for path, size in replies.items():
        service, method = path.strip("/").split("/")
        by_service.setdefault(service, {})[method] = _handler(b"\x01" * size)
    serve_until_terminated(port, by_service)


def serve_until_terminated(
    port: int, by_service: dict[str, dict[str, grpc.RpcMethodHandler[bytes, bytes]]]
) -> None:
    """Serve these handlers on the services' pool size, say "serving", stop on SIGTERM."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=MAX_WORKERS))
    for service, handlers in by_service.items():
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, handlers),))
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    print("serving", flush=True)
    stopped.wait()
    server.stop(1).wait()


def main(argv: list[str]) -> int:
    port = int(argv[0])
    replies = {path: int(size) for path, size in (arg.rsplit("=", 1) for arg in argv[1:])}
    serve(port, replies)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

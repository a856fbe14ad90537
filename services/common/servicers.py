"""Registration of servicers on a gRPC server, by their generated descriptors."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
from google.protobuf.descriptor import FileDescriptor


def register(
    server: grpc.Server,
    file_descriptor: FileDescriptor,
    service: str,
    add_to_server: Callable[[Any, grpc.Server], None],
    servicer: Any,
) -> str:
    """Add ``servicer`` to ``server``; returns the service's full name for health and reflection.

    Passing the generated base servicer is honest for an API not built yet: every method
    answers UNIMPLEMENTED.
    """
    add_to_server(servicer, server)
    full_name: str = file_descriptor.services_by_name[service].full_name
    return full_name


def unimplemented(servicer_type: type[Any]) -> object:
    """The generated servicer base itself, whose every method answers UNIMPLEMENTED.

    The generated stubs mark its methods abstract, hence ``type[Any]``.
    """
    return servicer_type()

"""plexsync's Python client: typed stubs for every service, token and TLS options, retries, paging, watches.

For asyncio: `plexsync_client.aio.AsyncPlexsyncClient`, the same client over grpc.aio.

Generated protobuf code is in `plexsync_client.v1` (built from the repository's protos when the package is
installed; see clients/python/README.md).
"""

from plexsync_client.channel import ChannelOptions, RetryPolicy, TlsOptions, open_channel
from plexsync_client.client import Addresses, ChangeFeed, PlexsyncClient, pages, paginate
from plexsync_client.errors import (
    AbortedError,
    AlreadyExistsError,
    CancelledError,
    DeadlineExceededError,
    ErrorDetails,
    FailedPreconditionError,
    FieldViolation,
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
    PlexsyncError,
    Resource,
    ResourceExhaustedError,
    ServerError,
    UnauthenticatedError,
    UnavailableError,
)

__all__ = [
    "AbortedError",
    "Addresses",
    "AlreadyExistsError",
    "CancelledError",
    "ChangeFeed",
    "ChannelOptions",
    "DeadlineExceededError",
    "ErrorDetails",
    "FailedPreconditionError",
    "FieldViolation",
    "InvalidArgumentError",
    "NotFoundError",
    "PermissionDeniedError",
    "PlexsyncClient",
    "PlexsyncError",
    "Resource",
    "ResourceExhaustedError",
    "RetryPolicy",
    "ServerError",
    "TlsOptions",
    "UnauthenticatedError",
    "UnavailableError",
    "open_channel",
    "pages",
    "paginate",
]

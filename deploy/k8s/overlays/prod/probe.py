"""Health probe for TLS pods: the kubelet's gRPC probe speaks only plain TCP, so this calls grpc.health.v1
over the pod's own mTLS certificate. `python /etc/plexsync/probe/probe.py [liveness]`: exit 0 when SERVING."""

import os
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def _read(variable: str) -> bytes:
    with open(os.environ[variable], "rb") as f:
        return f.read()


def main() -> int:
    service = sys.argv[1] if len(sys.argv) > 1 else ""
    credentials = grpc.ssl_channel_credentials(
        _read("PLEXSYNC_TLS_CA_FILE"), _read("PLEXSYNC_TLS_KEY_FILE"), _read("PLEXSYNC_TLS_CERT_FILE")
    )
    with grpc.secure_channel(f"localhost:{os.environ['PLEXSYNC_GRPC_PORT']}", credentials) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service), timeout=4)
        except grpc.RpcError as exc:
            print(f"health check failed: {exc.code().name}", file=sys.stderr)
            return 1
    return 0 if reply.status == health_pb2.HealthCheckResponse.SERVING else 1


if __name__ == "__main__":
    sys.exit(main())

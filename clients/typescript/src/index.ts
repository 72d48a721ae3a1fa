// plexsync's TypeScript client: connect-es clients for every service over gRPC (HTTP/2), with a bearer token,
// TLS (or plain TCP only when asked), paging iterators and decoded google.rpc error details.
// The code in ./gen is generated from protos/ by `buf generate` (buf.gen.yaml at the repository root).
import { readFileSync } from "node:fs";
import { type DescMessage, type DescService, type MessageShape, create, toBinary } from "@bufbuild/protobuf";
import { Code, ConnectError, type Client, type Interceptor, type Transport, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import {
  BadRequestSchema,
  ErrorInfoSchema,
  ResourceInfoSchema,
  RetryInfoSchema,
} from "./gen/google/rpc/error_details_pb.js";
import { AuditService } from "./gen/plexsync/v1/audit_pb.js";
import { AuthService } from "./gen/plexsync/v1/auth_pb.js";
import { CatalogService } from "./gen/plexsync/v1/catalog_pb.js";
import { ScannerService } from "./gen/plexsync/v1/scanner_pb.js";
import { SchedulerService } from "./gen/plexsync/v1/scheduler_pb.js";
import { VersionService } from "./gen/plexsync/v1/version_pb.js";

export * from "./gen/plexsync/v1/audit_pb.js";
export * from "./gen/plexsync/v1/auth_pb.js";
export * from "./gen/plexsync/v1/catalog_pb.js";
export * from "./gen/plexsync/v1/common_pb.js";
export * from "./gen/plexsync/v1/events_pb.js";
export * from "./gen/plexsync/v1/scanner_pb.js";
export * from "./gen/plexsync/v1/scheduler_pb.js";
export * from "./gen/plexsync/v1/version_pb.js";
export { create, toBinary, Code, ConnectError, createClient };
export { timestampFromDate, timestampDate } from "@bufbuild/protobuf/wkt";
export type { Client, DescMessage, DescService, MessageShape, Transport };

/** TLS to the service: verify it against `caFile` (Node's roots when absent), present `certFile`/`keyFile` (mTLS). */
export interface TlsOptions {
  caFile?: string;
  certFile?: string;
  keyFile?: string;
}

export interface ConnectOptions {
  /** "host:port" */
  address: string;
  /** Sent as `authorization: Bearer <token>`. */
  token?: string;
  /** TLS options; without them, `insecure: true` must say plain TCP is meant (never a silent downgrade). */
  tls?: TlsOptions;
  insecure?: boolean;
  /** Default deadline of every call, in milliseconds. */
  timeoutMs?: number;
}

/** A gRPC-over-HTTP/2 transport to one plexsync service. */
export function plexsyncTransport(options: ConnectOptions): Transport {
  if (!options.tls && !options.insecure) {
    throw new Error("no TLS options given: pass tls: {...}, or insecure: true for plain TCP");
  }
  const interceptors: Interceptor[] = [];
  const token = options.token;
  if (token) {
    interceptors.push((next) => (req) => {
      req.header.set("authorization", `Bearer ${token}`);
      return next(req);
    });
  }
  const tls = options.tls;
  return createGrpcTransport({
    baseUrl: `${tls ? "https" : "http"}://${options.address}`,
    interceptors,
    defaultTimeoutMs: options.timeoutMs,
    nodeOptions: tls
      ? {
          ca: tls.caFile ? readFileSync(tls.caFile) : undefined,
          cert: tls.certFile ? readFileSync(tls.certFile) : undefined,
          key: tls.keyFile ? readFileSync(tls.keyFile) : undefined,
        }
      : {},
  });
}

export const SERVICES = { AuditService, AuthService, CatalogService, ScannerService, SchedulerService, VersionService };

export interface PlexsyncClients {
  catalog: Client<typeof CatalogService>;
  auth: Client<typeof AuthService>;
  scanner: Client<typeof ScannerService>;
  scheduler: Client<typeof SchedulerService>;
}

/** Clients of the four services, sharing token and TLS options (`addresses` names each one's "host:port"). */
export function plexsyncClients(
  addresses: { catalog: string; auth: string; scanner: string; scheduler: string },
  options: Omit<ConnectOptions, "address">,
): PlexsyncClients {
  const t = (address: string) => plexsyncTransport({ ...options, address });
  return {
    catalog: createClient(CatalogService, t(addresses.catalog)),
    auth: createClient(AuthService, t(addresses.auth)),
    scanner: createClient(ScannerService, t(addresses.scanner)),
    scheduler: createClient(SchedulerService, t(addresses.scheduler)),
  };
}

/** Every element of a List call across pages (AIP-158: follows next_page_token until it is empty). */
export async function* paginate<Req extends { pageToken: string }, Res extends { nextPageToken: string }, T>(
  call: (request: Req) => Promise<Res>,
  request: Req,
  elements: (response: Res) => T[],
): AsyncGenerator<T> {
  let current = { ...request };
  for (;;) {
    const response = await call(current);
    yield* elements(response);
    if (!response.nextPageToken) return;
    current = { ...current, pageToken: response.nextPageToken };
  }
}

/** What a plexsync error says: the code, the message, and its google.rpc details decoded. */
export interface ErrorDetails {
  /** gRPC's canonical name, e.g. "NOT_FOUND". */
  code: string;
  message: string;
  reason?: string;
  domain?: string;
  fieldViolations: { field: string; description: string }[];
  resource?: { type: string; name: string };
  retryDelayMs?: number;
}

/** gRPC's canonical name of a code ("INVALID_ARGUMENT"), as the other languages' clients and docs say it. */
export function codeName(code: Code | 0): string {
  return code === 0 ? "OK" : Code[code].replace(/([a-z])([A-Z])/g, "$1_$2").toUpperCase().replace("CANCELED", "CANCELLED");
}

/** The details of an error a call raised (a ConnectError; anything else is reported as UNKNOWN). */
export function errorDetails(error: unknown): ErrorDetails {
  const err = ConnectError.from(error);
  const info = err.findDetails(ErrorInfoSchema)[0];
  const resource = err.findDetails(ResourceInfoSchema)[0];
  const retry = err.findDetails(RetryInfoSchema)[0];
  return {
    code: codeName(err.code),
    message: err.rawMessage,
    reason: info?.reason,
    domain: info?.domain,
    fieldViolations: err
      .findDetails(BadRequestSchema)
      .flatMap((b) => b.fieldViolations.map((v) => ({ field: v.field, description: v.description }))),
    resource: resource ? { type: resource.resourceType, name: resource.resourceName } : undefined,
    retryDelayMs: retry?.retryDelay
      ? Number(retry.retryDelay.seconds) * 1000 + Math.round(retry.retryDelay.nanos / 1e6)
      : undefined,
  };
}

/** A message of `schema` whose wire bytes are `tag` followed by `raw` (for sending malformed requests). */
export function rawMessage<D extends DescMessage>(
  schema: D,
  no: number,
  wireType: number,
  raw: Uint8Array,
): MessageShape<D> {
  const message = create(schema) as MessageShape<D> & { $unknown?: { no: number; wireType: number; data: Uint8Array }[] };
  message.$unknown = [{ no, wireType, data: raw }];
  return message;
}

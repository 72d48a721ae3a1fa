// The TypeScript client (clients/typescript, connect-es over gRPC/HTTP2) against a real plexsync stack: every public
// RPC gets malformed bytes, a wrong-typed field, a missing field, absurd sizes and, where it has one, a valid request
// and a NOT_FOUND one; each answer's code and google.rpc details are checked. tests/contract/test_typescript_client.py
// starts the stack, passes the methods it derived from the descriptors in CONTRACT_CONTEXT and asserts on the JSON
// report this prints (a method without a case here is reported as such, and fails there).
import {
  Code,
  ConnectError,
  type DescMessage,
  type DescService,
  SERVICES,
  create,
  errorDetails,
  plexsyncTransport,
  rawMessage,
  type ErrorDetails,
  type Transport,
} from "../../../clients/typescript/src/index.js";

interface Context {
  addresses: Record<string, string>;
  tokens: Record<string, string>;
  ids: { serverId: string; libraryId: string; itemId: string; scanId: string; jobId: string };
  methods: { service: string; method: string; identity: string; processes: string[]; adminOnly: boolean }[];
}

type Init = Record<string, unknown>;
type CodeName = string; // gRPC's canonical names: "OK", "INVALID_ARGUMENT"...
type Ids = Context["ids"];

/** What a method must answer. `missing`: the empty request; `absurd`: huge strings and extreme numbers. */
interface Case {
  missing: CodeName;
  missingField?: string;
  absurd?: CodeName[];
  valid?: (ids: Ids) => Init;
  notFound?: (ids: Ids) => Init;
}

const NIL = "00000000-0000-4000-8000-000000000000";
const INVALID = "INVALID_ARGUMENT";
const byId = (field: string) => (): Init => ({ [field]: NIL });

const CASES: Record<string, Case> = {
  "AuditService.ListAuditEvents": { missing: "OK", absurd: [INVALID], valid: () => ({ pageSize: 5 }) },
  "AuthService.StartPinLogin": { missing: "OK", absurd: ["OK"] },
  "AuthService.CompletePinLogin": { missing: INVALID, missingField: "pin_id" },
  "AuthService.CancelPinLogin": { missing: INVALID, missingField: "pin_id" },
  "AuthService.AddServer": { missing: INVALID, missingField: "url" },
  "AuthService.DiscoverServers": { missing: "FAILED_PRECONDITION" },
  "AuthService.ListServers": { missing: "OK", absurd: [INVALID], valid: () => ({ pageSize: 1 }) },
  "AuthService.GetServer": {
    missing: INVALID,
    missingField: "server_id",
    valid: (ids) => ({ serverId: ids.serverId }),
    notFound: byId("serverId"),
  },
  "AuthService.RemoveServer": { missing: INVALID, missingField: "server_id", notFound: byId("serverId") },
  "AuthService.CheckServer": { missing: INVALID, missingField: "server_id", notFound: byId("serverId") },
  "AuthService.CheckToken": { missing: "OK" },
  "CatalogService.ListLibraries": { missing: "OK", valid: (ids) => ({ serverId: ids.serverId }) },
  "CatalogService.GetLibrary": {
    missing: INVALID,
    missingField: "library_id",
    valid: (ids) => ({ libraryId: ids.libraryId }),
    notFound: byId("libraryId"),
  },
  "CatalogService.UpdateLibrary": { missing: INVALID, missingField: "library.id" },
  "CatalogService.SetPathReplacements": { missing: INVALID, missingField: "server_id" },
  "CatalogService.ListPathReplacements": {
    missing: INVALID,
    missingField: "server_id",
    valid: (ids) => ({ serverId: ids.serverId }),
  },
  "CatalogService.ListItems": {
    missing: "OK",
    valid: (ids) => ({ libraryId: ids.libraryId, pageSize: 5 }),
  },
  "CatalogService.GetItem": {
    missing: INVALID,
    missingField: "item_id",
    valid: (ids) => ({ itemId: ids.itemId }),
    notFound: byId("itemId"),
  },
  "CatalogService.SearchItems": { missing: INVALID, missingField: "query", valid: () => ({ query: "the" }) },
  "CatalogService.ListCollections": { missing: "OK", valid: (ids) => ({ libraryId: ids.libraryId }) },
  "CatalogService.ListNetworks": { missing: "OK", valid: (ids) => ({ libraryId: ids.libraryId }) },
  "CatalogService.GetLibraryStats": { missing: "OK", valid: (ids) => ({ libraryId: ids.libraryId }) },
  "CatalogService.WatchChanges": { missing: "OK", valid: (ids) => ({ libraryId: ids.libraryId, fromOldest: true }) },
  "CatalogService.SetLibraryRules": { missing: INVALID, missingField: "library_id", notFound: byId("libraryId") },
  "ScannerService.SyncServer": { missing: INVALID, missingField: "server_id", notFound: byId("serverId") },
  "ScannerService.ScanLibrary": { missing: INVALID, missingField: "library_id", notFound: byId("libraryId") },
  "ScannerService.GetScan": {
    missing: INVALID,
    missingField: "scan_id",
    valid: (ids) => ({ scanId: ids.scanId }),
    notFound: byId("scanId"),
  },
  "ScannerService.ListScans": { missing: "OK", valid: (ids) => ({ libraryId: ids.libraryId }) },
  "ScannerService.CancelScan": { missing: INVALID, missingField: "scan_id", notFound: byId("scanId") },
  "ScannerService.WatchScan": { missing: INVALID, missingField: "scan_id", notFound: byId("scanId") },
  "ScannerService.ListWatchers": { missing: "OK", valid: (ids) => ({ serverId: ids.serverId }) },
  "ScannerService.TestPaths": { missing: INVALID, missingField: "library_id", notFound: byId("libraryId") },
  "ScannerService.TestRules": { missing: INVALID, missingField: "library_id", notFound: byId("libraryId") },
  "SchedulerService.TriggerSync": { missing: INVALID },
  "SchedulerService.GetJob": {
    missing: INVALID,
    missingField: "job_id",
    valid: (ids) => ({ jobId: ids.jobId }),
    notFound: byId("jobId"),
  },
  "SchedulerService.ListJobs": { missing: "OK", valid: (ids) => ({ libraryId: ids.libraryId }) },
  "SchedulerService.CancelJob": { missing: INVALID, missingField: "job_id", notFound: byId("jobId") },
  "SchedulerService.WatchJobs": { missing: "OK" },
  "SchedulerService.GetSchedule": {
    missing: INVALID,
    missingField: "library_id",
    valid: (ids) => ({ libraryId: ids.libraryId }),
    notFound: byId("libraryId"),
  },
  "SchedulerService.ListSchedules": { missing: "OK", valid: (ids) => ({ serverId: ids.serverId }) },
  "SchedulerService.UpdateSchedule": { missing: INVALID },
  "SchedulerService.GetSchedulerStatus": { missing: "OK", absurd: ["OK"] },
  "VersionService.GetVersion": { missing: "OK", absurd: ["OK"] },
};

const STREAM_WINDOW_MS = 1500; // a response stream still open after this answered OK: it is cancelled
const CALL_TIMEOUT_MS = 30_000;
const WIRE_VARINT = 0;
const WIRE_LEN = 2;
const CORRUPT = new Uint8Array(Array(11).fill(0xff)); // a varint that never ends
const TRUNCATED = new Uint8Array([0x10, 0x61, 0x62]); // announces 16 bytes, two follow
const HUGE = "x".repeat(100_000);

interface Outcome extends ErrorDetails {
  check: string;
  process: string;
  problems: string[];
}

async function call(
  transport: Transport,
  service: DescService,
  name: string,
  message: unknown,
): Promise<ErrorDetails> {
  const method = service.methods.find((m) => m.name === name)!;
  const input = message as never;
  const anyMethod = method as never;
  try {
    if (method.methodKind === "unary") {
      await transport.unary(anyMethod, undefined, CALL_TIMEOUT_MS, undefined, input);
    } else if (method.methodKind === "server_streaming") {
      const abort = new AbortController();
      const timer = setTimeout(() => abort.abort(), STREAM_WINDOW_MS);
      try {
        const response = await transport.stream(anyMethod, abort.signal, undefined, undefined, once(input));
        for await (const _ of response.message) break;
      } catch (error) {
        if (abort.signal.aborted && ConnectError.from(error).code === Code.Canceled) return ok();
        throw error;
      } finally {
        clearTimeout(timer);
        abort.abort();
      }
    } else {
      throw new Error(`${name}: client-streaming methods are internal; no public case exists`);
    }
    return ok();
  } catch (error) {
    return errorDetails(error);
  }
}

function ok(): ErrorDetails {
  return { code: "OK", message: "", fieldViolations: [] };
}

async function* once<T>(value: T): AsyncIterable<T> {
  yield value;
}

function absurd(schema: DescMessage): Init {
  const init: Init = {};
  for (const field of schema.fields) {
    if (field.fieldKind === "scalar" && field.scalar === 9) init[field.localName] = HUGE; // string
    if (field.fieldKind === "scalar" && field.scalar === 5) init[field.localName] = 2 ** 31 - 1; // int32
    if (field.fieldKind === "list" && field.listKind === "scalar" && field.scalar === 9) {
      init[field.localName] = Array(5000).fill("y");
    }
  }
  return init;
}

function check(outcome: Outcome, expect: CodeName[], domain: string): void {
  const got = outcome.code;
  if (!expect.includes(got)) outcome.problems.push(`expected ${expect.join(" or ")}, got ${got}`);
  if (got === "UNKNOWN" || got === "INTERNAL") outcome.problems.push(`answered ${got}`);
  if (got !== "OK") {
    if (!outcome.reason) outcome.problems.push("no ErrorInfo reason");
    if (outcome.domain !== domain) outcome.problems.push(`ErrorInfo domain ${outcome.domain}, expected ${domain}`);
    if (/Traceback|<class|Error:/.test(outcome.message)) outcome.problems.push("exception text in the message");
  }
  if (got === INVALID && outcome.fieldViolations.length === 0 && outcome.check !== "malformed") {
    outcome.problems.push("INVALID_ARGUMENT without field violations");
  }
}

async function run(ctx: Context): Promise<Record<string, Outcome[] | string>> {
  const report: Record<string, Outcome[] | string> = {};
  for (const m of ctx.methods) {
    const key = `${m.service}.${m.method}`;
    const spec = CASES[key];
    const service = (SERVICES as Record<string, DescService>)[m.service];
    if (!spec || !service) {
      report[key] = `no TypeScript case for ${key}: add one to tests/contract/ts/contract.ts`;
      continue;
    }
    const method = service.methods.find((d) => d.name === m.method)!;
    const schema = method.input;
    const outcomes: Outcome[] = [];
    for (const process of m.processes) {
      const domain = `${process}.plexsync.dev`;
      const transport = plexsyncTransport({ address: ctx.addresses[process], token: ctx.tokens[m.identity], insecure: true });
      const attempt = async (checkName: string, message: unknown, expect: CodeName[]): Promise<Outcome> => {
        const outcome: Outcome = { ...(await call(transport, service, m.method, message)), check: checkName, process, problems: [] };
        check(outcome, expect, domain);
        outcomes.push(outcome);
        return outcome;
      };
      const prefix = `the request is not a valid ${schema.typeName}: `;
      for (const [name, bytes, wire] of [
        ["corrupt", CORRUPT, WIRE_VARINT],
        ["truncated", TRUNCATED, WIRE_LEN],
      ] as const) {
        const o = await attempt("malformed", rawMessage(schema, 1, wire, bytes), [INVALID]);
        o.check = `malformed:${name}`;
        if (!o.message.startsWith(prefix)) o.problems.push(`message ${JSON.stringify(o.message)} does not start with ${prefix}`);
      }
      const text = schema.fields.find((f) => f.fieldKind === "scalar" && f.scalar === 9);
      if (text) {
        const o = await attempt("malformed", rawMessage(schema, text.number, WIRE_LEN, new Uint8Array([2, 0xff, 0xfe])), [INVALID]);
        o.check = "malformed:utf8";
        if (!o.message.startsWith(prefix)) o.problems.push(`message ${JSON.stringify(o.message)} does not start with ${prefix}`);
        // A string field sent as a varint: INVALID_ARGUMENT naming the field (not read as "unset").
        const wrong = await attempt("wrong-type", rawMessage(schema, text.number, WIRE_VARINT, new Uint8Array([1])), [INVALID]);
        if (!wrong.fieldViolations.some((v) => v.field === text.name)) {
          wrong.problems.push(`no violation of ${text.name}: ${JSON.stringify(wrong.fieldViolations)}`);
        }
      }
      const missing = await attempt("missing", create(schema), [spec.missing]);
      if (spec.missingField && !missing.fieldViolations.some((v) => v.field === spec.missingField)) {
        missing.problems.push(`no violation of ${spec.missingField}: ${JSON.stringify(missing.fieldViolations)}`);
      }
      await attempt("absurd", create(schema, absurd(schema) as never), spec.absurd ?? [INVALID]);
      if (spec.valid) await attempt("valid", create(schema, spec.valid(ctx.ids) as never), ["OK"]);
      if (spec.notFound) {
        const o = await attempt("not-found", create(schema, spec.notFound(ctx.ids) as never), ["NOT_FOUND"]);
        if (!o.resource?.type || o.resource.name !== NIL) o.problems.push(`ResourceInfo ${JSON.stringify(o.resource)}`);
      }
      if (m.adminOnly) {
        const reader = plexsyncTransport({ address: ctx.addresses[process], token: ctx.tokens.reader, insecure: true });
        const outcome: Outcome = { ...(await call(reader, service, m.method, create(schema))), check: "reader-denied", process, problems: [] };
        check(outcome, ["PERMISSION_DENIED"], domain);
        outcomes.push(outcome);
      }
    }
    report[key] = outcomes;
  }
  return report;
}

const ctx = JSON.parse(process.env.CONTRACT_CONTEXT ?? "{}") as Context;
run(ctx).then(
  (report) => process.stdout.write(JSON.stringify(report) + "\n"),
  (error: unknown) => {
    process.stderr.write(`${error instanceof Error ? error.stack : String(error)}\n`);
    process.exit(1);
  },
);

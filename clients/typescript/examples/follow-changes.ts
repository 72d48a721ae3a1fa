// Follow the catalog's item changes, one JSON line each, resuming where a previous run stopped.
//   PLEXSYNC_TOKEN=... npx tsx examples/follow-changes.ts --catalog catalog:50051 --ca-file ca.pem --state token.txt
// The last change's resume token is written to --state after each change; the next run continues right after it.
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { parseArgs } from "node:util";
import { CatalogService, ChangeKind, createClient, plexsyncTransport } from "../src/index.js";

const { values: args } = parseArgs({
  options: {
    catalog: { type: "string" },
    state: { type: "string" },
    library: { type: "string", default: "" },
    "from-oldest": { type: "boolean", default: false },
    max: { type: "string", default: "0" },
    "ca-file": { type: "string" },
    insecure: { type: "boolean", default: false },
  },
});

const state = args.state!;
const resumeToken = existsSync(state) ? readFileSync(state, "utf8").trim() : "";
const catalog = createClient(
  CatalogService,
  plexsyncTransport({
    address: args.catalog!,
    token: process.env.PLEXSYNC_TOKEN,
    tls: args.insecure ? undefined : { caFile: args["ca-file"] },
    insecure: args.insecure,
  }),
);
const stop = new AbortController();
let seen = 0;
try {
  const stream = catalog.watchChanges(
    { resumeToken, libraryId: args.library, fromOldest: args["from-oldest"] && !resumeToken },
    { signal: stop.signal },
  );
  for await (const batch of stream) {
    for (const change of batch.changes) {
      console.log(JSON.stringify({ kind: ChangeKind[change.kind], itemId: change.itemId, title: change.title }));
      writeFileSync(state, change.resumeToken);
      if (++seen === Number(args.max)) stop.abort();
      if (stop.signal.aborted) break;
    }
    if (stop.signal.aborted) break;
  }
} catch (error) {
  if (!stop.signal.aborted) throw error;
}

// List the items of a library added or changed since a time (plexsync's TypeScript client).
//   PLEXSYNC_TOKEN=... npx tsx examples/new-items.ts --catalog catalog:50051 --ca-file ca.pem \
//       --library 5f0c... --since 2026-12-01T00:00:00Z
import { parseArgs } from "node:util";
import { CatalogService, createClient, paginate, plexsyncTransport, timestampFromDate } from "../src/index.js";

const { values: args } = parseArgs({
  options: {
    catalog: { type: "string" },
    library: { type: "string" },
    since: { type: "string" },
    "ca-file": { type: "string" },
    insecure: { type: "boolean", default: false },
    "page-size": { type: "string", default: "100" },
  },
});

const transport = plexsyncTransport({
  address: args.catalog!,
  token: process.env.PLEXSYNC_TOKEN,
  tls: args.insecure ? undefined : { caFile: args["ca-file"] },
  insecure: args.insecure,
});
const catalog = createClient(CatalogService, transport);
const request = {
  libraryId: args.library!,
  updatedSince: timestampFromDate(new Date(args.since!)),
  pageSize: Number(args["page-size"]),
  pageToken: "",
};
for await (const item of paginate((r: typeof request) => catalog.listItems(r), request, (page) => page.items)) {
  console.log(`${item.id}\t${item.ratingKey}\t${item.title}`);
}

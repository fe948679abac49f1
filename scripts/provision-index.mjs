#!/usr/bin/env node
// Provisions a dedicated Vectorize index for one tenant with wrangler, then prints the binding to add to
// wrangler.toml and the VECTOR_PLACEMENT entry that points the tenant at it. Placement is server configuration:
// nothing a client sends can choose an index.
//   npm run provision-index -- --tenant acme [--dimensions 384] [--metric cosine] [--env production] [--dry-run]
import { execFileSync } from "node:child_process";
import { parseArgs } from "node:util";

const { values } = parseArgs({
  options: {
    tenant: { type: "string" },
    dimensions: { type: "string", default: "384" },
    metric: { type: "string", default: "cosine" },
    env: { type: "string" },
    "dry-run": { type: "boolean", default: false },
  },
});
const tenant = values.tenant ?? "";
if (!/^[a-z0-9][a-z0-9-]{1,62}$/.test(tenant)) {
  console.error("provision-index: --tenant must match ^[a-z0-9][a-z0-9-]{1,62}$");
  process.exit(2);
}
const dimensions = Number(values.dimensions);
if (!Number.isInteger(dimensions) || dimensions < 1 || dimensions > 1536) {
  console.error("provision-index: --dimensions must be 1..1536 (Vectorize limit)");
  process.exit(2);
}
if (!["cosine", "euclidean", "dot-product"].includes(values.metric)) {
  console.error("provision-index: --metric must be cosine, euclidean or dot-product");
  process.exit(2);
}
// Index names are at most 64 bytes; tenant ids are at most 63, so "kb-" + tenant can exceed: trim and keep unique.
const name = `kb-${tenant}`.slice(0, 63);
const binding = `VECTORIZE_${tenant.toUpperCase().replace(/-/g, "_")}`;
const args = ["vectorize", "create", name, `--dimensions=${dimensions}`, `--metric=${values.metric}`];
if (values["dry-run"]) {
  console.log(`would run: wrangler ${args.join(" ")}`);
} else {
  execFileSync("node_modules/.bin/wrangler", args, { stdio: "inherit" });
}
const section = values.env ? `env.${values.env}.` : "";
console.log(`
Add to wrangler.toml:

[[${section}vectorize]]
binding = "${binding}"
index_name = "${name}"

and to VECTOR_PLACEMENT (in [${section}vars]):

  "tenants": { "${tenant}": { "dedicated": "${binding}" } }
`);

#!/usr/bin/env node
// Child process of the demo: wrangler's own dev server (`unstable_startWorker`, the engine behind `wrangler dev`)
// for the Worker in DEMO_HOST.root, persisted to DEMO_HOST.persist. It is a separate process (its own process group)
// so that the demo can stop it, touch the persisted files while nothing holds them, and start it again.
//
// Wrangler's CLI has no outbound hook; this entry point uses `dev.outboundService`, which receives every fetch() the
// Worker makes. Requests are forwarded, unchanged but for the target, to the demo's loopback downstream recorder, so
// the demo sees exactly what the Worker sent (the Worker itself still applies its egress policy and address guard
// to the URL it was asked to fetch; only the transport below it is redirected).
import { writeFileSync } from "node:fs";
import { join } from "node:path";

const options = JSON.parse(process.env.DEMO_HOST ?? "{}");
const { unstable_startWorker } = await import(join(options.root, "node_modules/wrangler/wrangler-dist/cli.js"));

// An explicit, empty env file: the project's .dev.vars is never read.
const emptyEnv = join(options.workDir, "empty.env");
writeFileSync(emptyEnv, "");

const recorder = `http://127.0.0.1:${options.recorderPort}`;

async function outbound(request) {
  const headers = new Headers(request.headers);
  headers.set("x-demo-original-url", request.url);
  const body = request.method === "GET" || request.method === "HEAD" ? undefined : await request.arrayBuffer();
  const target = new URL(request.url);
  return fetch(`${recorder}${target.pathname}${target.search}`, {
    method: request.method,
    headers,
    body,
    redirect: "manual",
  });
}

const worker = await unstable_startWorker({
  config: join(options.root, options.config ?? "wrangler.toml"),
  envFiles: [emptyEnv],
  // Master key secrets are bound as secrets, so wrangler never prints their values (its binding table is logged).
  bindings: Object.fromEntries(
    Object.entries(options.vars ?? {}).map(([name, value]) => [
      name,
      { type: /^MASTER_KEY_(?!EPOCH$)/.test(name) ? "secret_text" : "plain_text", value },
    ]),
  ),
  dev: {
    server: { hostname: "127.0.0.1", port: options.port },
    inspector: { port: options.inspectorPort },
    persist: options.persist,
    watch: false,
    outboundService: outbound,
  },
});
await worker.ready;
console.log(`demo host: ready on 127.0.0.1:${options.port}`);

for (const signal of ["SIGTERM", "SIGINT"]) {
  process.once(signal, async () => {
    await worker.dispose().catch(() => {});
    process.exit(0);
  });
}

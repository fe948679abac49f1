// `npm start -- --port N` as a developer runs it (scripts/start.mjs, its own dev-keys folder): the server's resource,
// allowed hosts and origins follow the port, `npm run token` mints for that audience, and a token minted for the
// default port is told which audience this server expects.
import { execFile } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { promisify } from "node:util";
import { freePort } from "./ports.mjs";
import { startProcess } from "./processes.mjs";
import { waitForHealthy } from "./wrangler.mjs";

const run = promisify(execFile);
const HEALTHY_TIMEOUT_MS = 120_000;

export async function startPortChecks({ report, root, workDir, publicKeys, keysDir }) {
  const port = await freePort();
  const inspectorPort = await freePort([port]);
  const base = `http://127.0.0.1:${port}`;
  const emptyEnv = join(workDir, "start-empty.env");
  writeFileSync(emptyEnv, "");
  const env = { ...process.env, DEV_KEYS_DIR: keysDir, WRANGLER_SEND_METRICS: "false", NO_COLOR: "1" };
  delete env.CLOUDFLARE_INCLUDE_PROCESS_ENV;
  const server = startProcess(
    process.execPath,
    [
      join(root, "scripts/start.mjs"),
      "--port",
      String(port),
      "--host",
      "127.0.0.1",
      // Passed through to wrangler dev as they are.
      "--ip",
      "127.0.0.1",
      "--inspector-port",
      String(inspectorPort),
      "--persist-to",
      join(workDir, "start-state"),
      "--show-interactive-dev-session=false",
      "--env-file",
      emptyEnv,
      "--var",
      `AUTH_JWKS:${readFileSync(publicKeys, "utf8").trim()}`,
      "--var",
      "MASTER_KEY_EPOCH:start1",
      "--var",
      `MASTER_KEY_START1:${Buffer.from(crypto.getRandomValues(new Uint8Array(32))).toString("base64")}`,
    ],
    { logFile: join(root, ".e2e", "start-port.log"), env, cwd: root },
  );
  const token = async (...args) =>
    (await run(process.execPath, [join(root, "scripts/token.mjs"), ...args], { env, timeout: 30_000 })).stdout.trim();
  try {
    const up = await report.check(
      "npm start --port",
      `npm start -- --port ${port} --host 127.0.0.1 answers /healthz`,
      async () => {
        await waitForHealthy(base, server, HEALTHY_TIMEOUT_MS);
        return base;
      },
      { timeoutMs: HEALTHY_TIMEOUT_MS + 5000 },
    );
    if (!up) return;
    await report.check("npm start --port", "npm run token mints for that port's resource: initialize 200", async () => {
      // A browser-based client on this origin sends it: the allowed origins followed the port too.
      const response = await initialize(base, await token("--tenant", "e2e-port", "--sub", "dev"), { origin: base });
      await response.body?.cancel();
      if (response.status !== 200) throw new Error(`initialize answered ${response.status}`);
      return `audience ${base}/mcp`;
    });
    await report.check(
      "npm start --port",
      "a token for the default port: 401 naming the expected audience",
      async () => {
        const stale = await token("--tenant", "e2e-port", "--sub", "dev", "--aud", "http://localhost:8787/mcp");
        const response = await initialize(base, stale);
        const body = await response.json();
        if (response.status !== 401 || !String(body.error_description).includes(`${base}/mcp`)) {
          throw new Error(`${response.status} ${JSON.stringify(body)}`);
        }
        return body.error_description;
      },
    );
  } finally {
    await server.stop();
  }
}

function initialize(base, token, headers = {}) {
  return fetch(`${base}/mcp`, {
    method: "POST",
    headers: {
      authorization: `Bearer ${token}`,
      "content-type": "application/json",
      accept: "application/json, text/event-stream",
      ...headers,
    },
    body: JSON.stringify({
      jsonrpc: "2.0",
      id: 1,
      method: "initialize",
      params: { protocolVersion: "2025-11-25", capabilities: {}, clientInfo: { name: "e2e-start", version: "1" } },
    }),
    signal: AbortSignal.timeout(15_000),
  });
}

#!/usr/bin/env node
// End-to-end test over real HTTP (`npm run test:e2e`; CI runs it on a fresh machine). It starts `wrangler dev` on a
// free loopback port with a throwaway dev issuer key, drives real MCP clients for two tenants (v2 client pinned to
// 2026-07-28, v1 SDK client on 2025-11-25 sessions), probes the session boundary, runs the MCP conformance
// runner through an auth-adding proxy, signs in by OAuth with the SDK's own OAuth client against the built-in
// authorization server (scripts/e2e/oauth.mjs), and then runs the storage forensics (scripts/e2e/forensics.mjs, its
// own wrangler dev restarted on one folder and on a copy of it). `--only oauth` or `--only forensics`
// (`--forensics-only`) runs just that group. Every process it starts is stopped, also on failure, timeout and signals.
// Output: a summary ending in the line `N passed, M failed`, .e2e/summary.json, logs under .e2e/; exit 0 only if
// every check passed.
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { ensureDevKeys } from "./dev-keys.mjs";
import { expectStatus, legacyClientFlow, modernClientFlow, postWithSession } from "./e2e/clients.mjs";
import { listServerScenarios, planScenarios, runScenario, verdict } from "./e2e/conformance.mjs";
import { forensicsChecks } from "./e2e/forensics.mjs";
import { oauthChecks, startMetadataDocumentServer } from "./e2e/oauth.mjs";
import { freePort } from "./e2e/ports.mjs";
import { runBounded, stopAll } from "./e2e/processes.mjs";
import { startAuthProxy } from "./e2e/proxy.mjs";
import { Report } from "./e2e/report.mjs";
import { startPortChecks } from "./e2e/start-port.mjs";
import { tenantCliChecks } from "./e2e/tenant-cli.mjs";
import { startOidcProvider } from "./e2e/upstream.mjs";
import { startWranglerDev, tail, waitForHealthy } from "./e2e/wrangler.mjs";
import { mintDevToken } from "./token.mjs";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const outDir = join(root, ".e2e");
const wranglerLog = join(outDir, "wrangler.log");
// --only oauth | forensics (--forensics-only) runs one group; the forensics run on their own wrangler dev.
const only = process.argv.includes("--forensics-only")
  ? "forensics"
  : process.argv.includes("--only")
    ? process.argv[process.argv.indexOf("--only") + 1]
    : null;
if (only !== null && only !== "oauth" && only !== "forensics") throw new Error("--only takes oauth or forensics");
const HARD_TIMEOUT_MS = (only === "forensics" ? 5 : 12) * 60_000;
const HEALTHY_TIMEOUT_MS = 120_000; // first start on a fresh machine bundles with esbuild and boots workerd
const SCENARIO_TIMEOUT_MS = 60_000;

const report = new Report();
const state = { workDir: null, proxy: null, metadataDocument: null, oidc: null, meta: {} };

async function main() {
  rmSync(wranglerLog, { force: true });
  rmSync(join(outDir, "forensics-wrangler.log"), { force: true });
  rmSync(join(outDir, "conformance"), { recursive: true, force: true });
  mkdirSync(outDir, { recursive: true });
  state.workDir = mkdtempSync(join(tmpdir(), "tenant-mcp-e2e-"));
  const keysDir = join(state.workDir, "keys");
  const { publicKeys } = await ensureDevKeys(keysDir);
  const forensics = () =>
    forensicsChecks({
      root,
      report,
      logFile: join(outDir, "forensics-wrangler.log"),
      jwks: readFileSync(publicKeys, "utf8").trim(),
      keysDir,
    });
  if (only === "forensics") return forensics();

  const port = await freePort();
  const inspectorPort = await freePort([port]);
  const base = `http://127.0.0.1:${port}`;
  const resource = `${base}/mcp`;
  // The token audience is the canonical resource URL the server is configured with (RFC 8707).
  const mint = (tenant, sub) =>
    mintDevToken({ tenant, sub, scope: "mcp kb.read kb.write", ttl: 900, aud: resource, keysDir });

  state.proxy = await startAuthProxy({ upstreamPort: port, token: await mint("e2e-conf", "conformance") });
  const proxyOrigin = `http://127.0.0.1:${state.proxy.port}`;
  state.meta = { server: resource, conformanceProxy: `${proxyOrigin}/mcp`, logs: ".e2e/" };
  // The metadata-document client's "website": its document on loopback, reached through the dev-only allowance.
  state.metadataDocument = await startMetadataDocumentServer("http://127.0.0.1:1/callback");
  // A real OpenID Connect provider on loopback: the upstream sign-in of the built-in authorization server.
  state.oidc = await startOidcProvider({ redirectUri: `${base}/authorize/callback` });

  const wrangler = startWranglerDev({
    root,
    workDir: state.workDir,
    port,
    inspectorPort,
    logFile: wranglerLog,
    vars: {
      MCP_RESOURCE: resource,
      ALLOWED_HOSTS: "127.0.0.1,localhost",
      // The conformance runner reaches the server through the proxy; its dns-rebinding scenario expects the proxy's
      // own origin (Origin: http://127.0.0.1:<proxy port>) to be accepted.
      ALLOWED_ORIGINS: `${base},${proxyOrigin}`,
      AUTH_JWKS: readFileSync(publicKeys, "utf8").trim(),
      // A throwaway master key epoch for this run only.
      MASTER_KEY_EPOCH: "e2e1",
      MASTER_KEY_E2E1: Buffer.from(crypto.getRandomValues(new Uint8Array(32))).toString("base64"),
      // Dev only (refused in production): the CIMD client's https origin is served from loopback (docs/auth.md).
      OAUTH_DEV_METADATA_ORIGINS: `${new URL(state.metadataDocument.clientId).origin}=${state.metadataDocument.origin}`,
      OAUTH_UPSTREAM_ISSUER: state.oidc.issuer,
      OAUTH_UPSTREAM_CLIENT_ID: state.oidc.clientId,
      OAUTH_UPSTREAM_CLIENT_SECRET: state.oidc.clientSecret,
    },
  });
  const healthy = await report.check(
    "setup",
    "wrangler dev answers /healthz",
    async () => {
      await waitForHealthy(base, wrangler, HEALTHY_TIMEOUT_MS);
      return base;
    },
    { timeoutMs: HEALTHY_TIMEOUT_MS + 5000 },
  );
  if (!healthy) return;
  await report.check("setup", "project .dev.vars is not read", async () => {
    if (/\.dev\.vars/.test(readFileSync(wranglerLog, "utf8"))) throw new Error("wrangler dev loaded .dev.vars");
    return "only the empty --env-file and --var overrides";
  });

  const adminToken = await mintDevToken({ admin: true, sub: "e2e-operator", ttl: 900, aud: `${base}/admin`, keysDir });
  if (only === null) {
    const capabilities = await clientChecks(resource, mint);
    await tenantCliChecks({ report, root, base, adminToken, tenant: "e2e-a" });
    await conformanceChecks(`${proxyOrigin}/mcp`, capabilities);
  }
  await oauthChecks({
    report,
    base,
    url: resource,
    metadataDocument: state.metadataDocument,
    upstream: state.oidc,
    adminToken,
  });
  if (only === "oauth") return;
  // The same dev issuer key as the rest of the run (the server trusts publicKeys).
  await startPortChecks({ report, root, workDir: state.workDir, publicKeys, keysDir: join(state.workDir, "keys") });
  // Its own wrangler dev (restarted on the same folder, then on a copy of it); the others are stopped first.
  await stopAll();
  await forensics();
}

/** Both client generations for two tenants, then the session boundary. Returns the server's capabilities. */
async function clientChecks(url, mint) {
  const tenants = [
    { tenant: "e2e-a", subject: "alice" },
    { tenant: "e2e-b", subject: "bob" },
  ];
  const tokens = {};
  for (const { tenant, subject } of tenants) tokens[tenant] = await mint(tenant, subject);

  for (const who of tenants) {
    await report.check("clients", `v2 client pinned to 2026-07-28, tenant ${who.tenant}`, () =>
      modernClientFlow({ url, token: tokens[who.tenant], ...who }),
    );
  }
  const sessions = {};
  for (const who of tenants) {
    await report.check("clients", `v1 SDK client (2025-11-25, sessionful), tenant ${who.tenant}`, async () => {
      sessions[who.tenant] = await legacyClientFlow({ url, token: tokens[who.tenant], ...who });
      return sessions[who.tenant].detail;
    });
  }
  // Only e2e-a's session is probed below; ending e2e-b's is housekeeping (its DELETE is checked with e2e-a's).
  await sessions["e2e-b"]?.end().catch(() => {});

  const victim = sessions["e2e-a"];
  const probe = (name, token, expected) =>
    report.check("sessions and auth", name, () => {
      if (!victim) throw new Error("no session to probe: the v1 client for e2e-a failed");
      return expectStatus(postWithSession({ url, token, sessionId: victim.sessionId }), expected);
    });
  await report.check("sessions and auth", "no token: 401 with a resource_metadata challenge", async () => {
    const { status, wwwAuthenticate } = await postWithSession({ url });
    if (status !== 401 || !/resource_metadata="/.test(wwwAuthenticate ?? "")) {
      throw new Error(`HTTP ${status}, WWW-Authenticate: ${wwwAuthenticate}`);
    }
    return `HTTP 401, ${wwwAuthenticate}`;
  });
  await probe("e2e-a session with e2e-a's token: 200 (control)", tokens["e2e-a"], 200);
  await probe("e2e-a session with e2e-b's token (cross-tenant hijack): 404", tokens["e2e-b"], 404);
  await probe("e2e-a session with another e2e-a subject's token: 404", await mint("e2e-a", "mallory"), 404);
  await report.check("sessions and auth", "session ended with DELETE, then used: 404", async () => {
    if (!victim) throw new Error("no session: the v1 client for e2e-a failed");
    await victim.end();
    return expectStatus(postWithSession({ url, token: tokens["e2e-a"], sessionId: victim.sessionId }), 404);
  });
  return victim?.capabilities ?? null;
}

async function conformanceChecks(url, capabilities) {
  const { run, skipped } = planScenarios(listServerScenarios(root), capabilities);
  state.meta.conformance = { run, skipped };
  for (const name of run) {
    const started = Date.now();
    const result = await runScenario({
      root,
      url,
      name,
      outDir: join(outDir, "conformance"),
      timeoutMs: SCENARIO_TIMEOUT_MS,
    });
    const { status, detail } = verdict(result);
    const log = result.logFile.slice(root.length + 1);
    report.add({
      group: "conformance",
      name,
      status,
      detail: status === "passed" ? detail : `${detail} (log: ${log})`,
      started,
      extra: { checks: result.checks },
    });
  }
  for (const { name, reason } of skipped) report.skip("conformance", name, reason);
}

let finishing = false;
async function finish(code) {
  if (finishing) return;
  finishing = true;
  report.close(); // work still in flight when the time limit hits must not change the verdict being reported
  await state.proxy?.close().catch(() => {});
  await state.metadataDocument?.close().catch(() => {});
  await state.oidc?.close().catch(() => {});
  await stopAll();
  if (report.counts().failed > 0 || code !== 0) {
    console.log(`\n---- wrangler dev log (tail of ${wranglerLog}) ----\n${tail(wranglerLog)}`);
  }
  if (state.workDir) rmSync(state.workDir, { recursive: true, force: true });
  report.write(join(outDir, "summary.json"), state.meta);
  report.print();
  process.exit(code !== 0 ? code : report.counts().failed === 0 ? 0 : 1);
}

await runBounded(main, {
  timeoutMs: HARD_TIMEOUT_MS,
  fail: (name, detail) => report.add({ group: "setup", name, status: "failed", detail }),
  finish,
});

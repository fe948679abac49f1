#!/usr/bin/env node
// Cross-tenant containment demonstration (`npm run demo`; docs/demo.md). Starts its own wrangler dev engine on a
// free loopback port with a throwaway persisted folder (or, with --url, targets a deployment with operator-supplied
// tokens), plays the story with real MCP clients of both protocol eras, and writes demo/out/containment.{md,html,json}.
// Every cell is a real request and a real check; the exit code is 1 if any cell fails.
//   npm run demo                          local run
//   npm run demo -- --url https://kb.example.com   against a deployment (tokens from the environment, docs/demo.md)
//   --out DIR        report folder (default demo/out)
//   --server-root D  serve the Worker from another checkout (the negative control serves a patched copy)
//   --steps 1,2      play only these steps (setup is always played first)
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { Matrix } from "./demo/cells.mjs";
import { createContext } from "./demo/context.mjs";
import { startDownstream } from "./demo/downstream.mjs";
import { localIdentities, suppliedIdentities } from "./demo/identities.mjs";
import { printTable, versionsOf, writeReport } from "./demo/report.mjs";
import { DemoServer } from "./demo/server.mjs";
import { caches } from "./demo/steps/caches.mjs";
import { extraction } from "./demo/steps/extraction.mjs";
import { keysAndOffboarding } from "./demo/steps/keys.mjs";
import { mcpServer } from "./demo/steps/mcp-server.mjs";
import { setup } from "./demo/steps/setup.mjs";
import { tokens } from "./demo/steps/tokens.mjs";
import { vectorIndex } from "./demo/steps/vector-index.mjs";
import { storyFor } from "./demo/story.mjs";
import { ensureDevKeys } from "./dev-keys.mjs";
import { freePort } from "./e2e/ports.mjs";
import { runBounded, stopAll } from "./e2e/processes.mjs";
import { tail } from "./e2e/wrangler.mjs";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const HARD_TIMEOUT_MS = 8 * 60_000;

const { values } = parseArgs({
  options: {
    url: { type: "string" },
    out: { type: "string", default: join(root, "demo/out") },
    "server-root": { type: "string" },
    steps: { type: "string" },
  },
});

const matrix = new Matrix();
const startedAt = new Date().toISOString();
const state = { workDir: null, server: null, downstream: null, ctx: null, logFile: null };

async function localTarget() {
  state.workDir = mkdtempSync(join(tmpdir(), "tenant-mcp-demo-"));
  const keysDir = join(state.workDir, "keys");
  const { publicKeys } = await ensureDevKeys(keysDir);
  const port = await freePort();
  const base = `http://127.0.0.1:${port}`;
  state.downstream = await startDownstream();
  state.logFile = join(state.workDir, "server.log");
  const master = () => Buffer.from(crypto.getRandomValues(new Uint8Array(32))).toString("base64");
  const epochs = { d1: master(), d2: master() };
  state.server = new DemoServer({
    root: values["server-root"] ? resolve(values["server-root"]) : root,
    workDir: state.workDir,
    persist: join(state.workDir, "state"),
    port,
    recorderPort: state.downstream.port,
    logFile: state.logFile,
    vars: {
      MCP_RESOURCE: `${base}/mcp`,
      ALLOWED_HOSTS: "127.0.0.1,localhost",
      ALLOWED_ORIGINS: base,
      AUTH_JWKS: readFileSync(publicKeys, "utf8").trim(),
      // A throwaway master key epoch for this run only (step 7 rotates to d2 and retires d1).
      MASTER_KEY_EPOCH: "d1",
      MASTER_KEY_D1: epochs.d1,
      // The local embedder through the embedding cache, so that step 5 counts real cache hits and misses.
      EMBEDDER: "local-cached",
    },
  });
  matrix.note(`demo: starting the server on ${base} (state in ${state.workDir})`);
  await state.server.start();
  const runId = Math.random().toString(36).slice(2, 8);
  const identities = await localIdentities({ keysDir, resource: `${base}/mcp`, adminAudience: `${base}/admin`, runId });
  return {
    base,
    identities,
    local: {
      server: state.server,
      downstream: state.downstream,
      persist: join(state.workDir, "state"),
      epochs,
      logFile: state.logFile,
    },
  };
}

async function main() {
  const remote = values.url ? values.url.replace(/\/+$/, "") : null;
  const target = remote ? { base: remote, identities: suppliedIdentities(), local: null } : await localTarget();
  const story = storyFor(target.identities.tenants);
  const ctx = createContext({
    mode: remote ? "deployment" : "local",
    base: target.base,
    identities: target.identities,
    story,
    matrix,
    local: target.local,
  });
  state.ctx = ctx;
  ctx.notes.push(
    remote
      ? "Against a deployment: the steps that need the server's storage files, master secrets or a loopback downstream are skipped (each says so); the probe tenants are offboarded at the end."
      : "Local run: the demo's own wrangler dev engine (wrangler's startWorker, with an outbound hook to a loopback recorder), a throwaway dev issuer, master key epochs d1 then d2, EMBEDDER=local-cached.",
  );
  const steps = [
    [1, "setup", "setup", setup],
    [2, "vector index", "vector index", vectorIndex],
    [3, "MCP server", "MCP server", mcpServer],
    [4, "extraction run", "extraction run", extraction],
    [5, "caches", "caches", caches],
    [6, "tokens", "tokens", tokens],
    [7, "keys", "keys and offboarding", keysAndOffboarding],
  ];
  const chosen = values.steps ? new Set(["1", ...values.steps.split(",").map((n) => n.trim())]) : null;
  for (const [number, channel, title, run] of steps) {
    if (chosen && !chosen.has(String(number))) continue;
    await matrix.step(number, channel, title, () => run(ctx));
  }
  if (chosen) ctx.notes.push(`Only steps ${[...chosen].sort().join(", ")} were played (--steps).`);
}

let finishing = false;
async function finish(code) {
  if (finishing) return;
  finishing = true;
  await state.ctx?.close().catch(() => {});
  await state.server?.stop().catch(() => {});
  await state.downstream?.close().catch(() => {});
  await stopAll();
  const failed = matrix.tally().fail > 0 || code !== 0;
  if (failed && state.logFile) process.stderr.write(`\n---- server log (tail) ----\n${tail(state.logFile)}\n`);
  const ctx = state.ctx;
  const summary = writeReport(values.out, {
    matrix,
    meta: {
      mode: ctx?.mode ?? (values.url ? "deployment" : "local"),
      target: ctx?.base ?? values.url ?? "local",
      tenants: ctx?.tenants ?? {},
      startedAt,
      durationMs: Date.now() - matrix.started,
      versions: versionsOf(root),
      notes: ctx?.notes ?? [],
      serverStarts: state.server?.startMs ?? [],
    },
  });
  printTable(matrix);
  process.stdout.write(`report: ${join(values.out, "containment.html")} (also .md, .json)\n`);
  if (state.workDir) rmSync(state.workDir, { recursive: true, force: true });
  process.exit(code !== 0 ? code : summary.ok ? 0 : 1);
}

await runBounded(main, {
  timeoutMs: HARD_TIMEOUT_MS,
  fail: (attack, observed) => matrix.add({ channel: "setup", attack, expected: "runs", verdict: "fail", observed }),
  finish,
});

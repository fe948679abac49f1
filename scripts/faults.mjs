#!/usr/bin/env node
// Fault-injection suite (`npm run test:faults`; issue 9). Starts `wrangler dev` on a free loopback port with
// --persist-to a temporary folder, drives scenarios over plain HTTP, SIGKILLs the whole wrangler process group at
// seeded random moments, restarts on the same persisted state and checks custody invariants (see each scenario).
//   --seed N          replay a run's schedule (printed at the start)
//   --full            at least 10 kill points per scenario (default: the short CI form)
//   --kills N         kill points per scenario (overrides the form's default)
//   --doc-mb N        size of the ingest scenarios' document (default 2, full form 4), e.g. 14 for the neighbour
//   --scenario NAME   run only this scenario (repeatable): writes documents rotation offboard sync-ingest
//                     queued-ingest neighbour
//   --memory          instead: workerd RSS at warm start and after 10k and 30k mixed requests (.faults/memory.json)
// Output: one line per check, the final line `N passed, M failed`, figures in .faults/summary.json, the wrangler
// log in .faults/wrangler.log. Exit 0 only if every check passed. Every child is stopped on every exit path.
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { ensureDevKeys } from "./dev-keys.mjs";
import { freePort } from "./e2e/ports.mjs";
import { runBounded, stopAll } from "./e2e/processes.mjs";
import { tail } from "./e2e/wrangler.mjs";
import { adminClient, toolClient } from "./faults/client.mjs";
import { memoryRun } from "./faults/memory.mjs";
import { FaultReport } from "./faults/report.mjs";
import { createRng } from "./faults/rng.mjs";
import { documentOverwrites } from "./faults/scenarios/documents.mjs";
import { queuedIngest, syncIngest } from "./faults/scenarios/ingest.mjs";
import { noisyNeighbour } from "./faults/scenarios/neighbour.mjs";
import { offboardingPurge } from "./faults/scenarios/offboard.mjs";
import { keyRotation } from "./faults/scenarios/rotation.mjs";
import { sustainedWrites } from "./faults/scenarios/writes.mjs";
import { Server } from "./faults/server.mjs";
import { mintDevToken } from "./token.mjs";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const outDir = join(root, ".faults");
const wranglerLog = join(outDir, "wrangler.log");

const SCENARIOS = {
  writes: sustainedWrites,
  documents: documentOverwrites,
  rotation: keyRotation,
  offboard: offboardingPurge,
  "sync-ingest": syncIngest,
  "queued-ingest": queuedIngest,
  neighbour: noisyNeighbour,
};

const { values: args } = parseArgs({
  options: {
    seed: { type: "string" },
    full: { type: "boolean", default: false },
    kills: { type: "string" },
    scenario: { type: "string", multiple: true },
    memory: { type: "boolean", default: false },
    "doc-mb": { type: "string" },
  },
});
const seed = args.seed !== undefined ? Number(args.seed) : Math.floor(Math.random() * 2 ** 31);
if (!Number.isInteger(seed) || seed < 0) throw new Error("--seed must be a non-negative integer");
const selected = args.scenario ?? Object.keys(SCENARIOS);
for (const name of selected) {
  if (!SCENARIOS[name]) throw new Error(`unknown scenario ${name}; one of: ${Object.keys(SCENARIOS).join(" ")}`);
}
const killPoints = args.kills !== undefined ? Number(args.kills) : args.full ? 10 : 2;
// Bounded whatever happens: the short form fits CI, the full form a long local run.
const HARD_TIMEOUT_MS = (args.memory ? 45 : args.full ? 90 : 12) * 60_000;
// The ingest scenarios' document (and so the noisy neighbour's load): 2 MB short, 4 MB full, or --doc-mb N (1–16).
const docBytes = args["doc-mb"] !== undefined ? Number(args["doc-mb"]) * 1e6 : args.full ? 4e6 : 2e6;
if (!(docBytes >= 1e6 && docBytes <= 16e6)) throw new Error("--doc-mb must be between 1 and 16");
const SCENARIO_TIMEOUT_MS = (args.full ? 30 : 5) * 60_000;

const report = new FaultReport();
const figures = {
  seed,
  form: args.memory ? "memory" : args.full ? "full" : "short",
  scenarios: selected,
  killPointsPerScenario: killPoints,
  killPoints: [],
  acknowledgedWrites: { atoms: 0, documents: 0 },
  acknowledgedChecked: 0,
  lost: 0,
  duplicated: 0,
  scenarioMs: {},
};
const state = { workDir: null, server: null };

async function main() {
  rmSync(wranglerLog, { force: true });
  mkdirSync(outDir, { recursive: true });
  state.workDir = mkdtempSync(join(tmpdir(), "tenant-mcp-faults-"));
  const keysDir = join(state.workDir, "keys");
  const { publicKeys } = await ensureDevKeys(keysDir);
  const port = await freePort();
  const base = `http://127.0.0.1:${port}`;
  const resource = `${base}/mcp`;
  console.log(
    `faults: seed ${seed} (replay with --seed ${seed}), ${figures.form} form${args.memory ? "" : `, ${killPoints} kill points per scenario`}`,
  );

  const server = new Server({
    root,
    workDir: state.workDir, // its state/ subfolder is the --persist-to folder, kept across restarts
    port,
    logFile: wranglerLog,
    vars: {
      MCP_RESOURCE: resource,
      ALLOWED_HOSTS: "127.0.0.1,localhost",
      ALLOWED_ORIGINS: base,
      AUTH_JWKS: readFileSync(publicKeys, "utf8").trim(),
      // A throwaway master key epoch for this run only; the same on every restart (the state depends on it).
      MASTER_KEY_EPOCH: "faults1",
      MASTER_KEY_FAULTS1: Buffer.from(crypto.getRandomValues(new Uint8Array(32))).toString("base64"),
    },
  });
  state.server = server;
  const booted = await report.check("setup", "wrangler dev answers /healthz", () => server.start().then(() => base), {
    timeoutMs: 130_000,
  });
  if (!booted) return;

  const ttl = 4 * 3600;
  const adminToken = await mintDevToken({ admin: true, sub: "faults-operator", ttl, aud: `${base}/admin`, keysDir });
  const ctx = {
    seed,
    full: args.full,
    killPoints,
    rng: createRng(seed),
    server,
    base,
    report,
    figures,
    shared: {},
    outDir,
    docBytes,
    admin: adminClient(base, adminToken),
    tenantClient: async (tenant, sub = "faults") =>
      toolClient(base, await mintDevToken({ tenant, sub, scope: "mcp kb.read kb.write", ttl, aud: resource, keysDir })),
  };

  if (args.memory) {
    await memoryRun(ctx, join(outDir, "memory.json"));
    return;
  }
  for (const name of selected) {
    const started = Date.now();
    await report.check("scenario", `${name} ran to the end`, () => SCENARIOS[name](ctx).then(() => undefined), {
      timeoutMs: SCENARIO_TIMEOUT_MS,
    });
    figures.scenarioMs[name] = Date.now() - started;
    // A scenario cut short by its time limit may have left the server down or mid-restart.
    if (!(await healthy(base))) await server.restart().catch(() => {});
  }
  figures.restartMs = server.restartMs;
}

async function healthy(base) {
  try {
    const response = await fetch(`${base}/healthz`, { signal: AbortSignal.timeout(5000) });
    return response.status === 200;
  } catch {
    return false;
  }
}

let finishing = false;
async function finish(code) {
  if (finishing) return;
  finishing = true;
  report.close();
  await stopAll();
  // Quiet on purpose: the server's own errors (ERR_DECRYPT stacks and the like) stay in the log file.
  if (code !== 0) console.log(`\n---- wrangler dev log (tail of ${wranglerLog}) ----\n${tail(wranglerLog, 20)}`);
  else if (report.counts().failed > 0) console.log(`wrangler dev log: ${wranglerLog}`);
  if (state.workDir) rmSync(state.workDir, { recursive: true, force: true });
  figures.kills = state.server?.kills ?? 0;
  report.write(join(outDir, "summary.json"), figures);
  report.print();
  process.exit(code !== 0 ? code : report.counts().failed === 0 ? 0 : 1);
}

await runBounded(main, {
  timeoutMs: HARD_TIMEOUT_MS,
  fail: (name, detail) => report.add({ group: "setup", name, status: "failed", detail }),
  finish,
});

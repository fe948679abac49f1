// `npm run bench -- --suite=edge [--rounds=3] [--sequential=200] [--concurrent=800] [--cold=2]`: the request path
// against Cloudflare's stateless remote-MCP template, side by side in one run. Three targets, each under its own
// `wrangler dev` on free loopback ports: the template (bench/edge/template-worker.ts: stateless createMcpHandler,
// one tool, no auth), the same handler behind a bare Durable Object hop, and this server (real tokens, one
// tenant). Per round and target (the order rotates every round): warm-up, sequential latency (p50/p95), then
// throughput with 16 requests in flight. Ratios are taken per round (server / template in the same round, so
// machine load hits both alike) and reported as medians over rounds. Cold paths: after the rounds, each target is
// restarted on its persisted state (every object evicted, isolate fresh) and its first request timed. Results go
// to bench/results.json (`edge`) and the edge section of BENCHMARKS.md. Called by scripts/bench.mjs.
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import os from "node:os";
import { join } from "node:path";
import { SEARCH_ATOMS, SEARCH_QUERY, searchAtom } from "../bench/edge/atoms.mjs";
import { ensureDevKeys } from "./dev-keys.mjs";
import { freePort } from "./e2e/ports.mjs";
import { stopAll } from "./e2e/processes.mjs";
import { startWranglerDev, tail, waitForHealthy } from "./e2e/wrangler.mjs";
import { mintDevToken } from "./token.mjs";

const MODERN = "2026-07-28";
const LEGACY = "2025-11-25";
const IN_FLIGHT = 16;
/** What a 2026-07-28 client sends with every request instead of an initialize handshake. */
const MODERN_META = {
  "io.modelcontextprotocol/protocolVersion": MODERN,
  "io.modelcontextprotocol/clientInfo": { name: "bench-edge", version: "0" },
  "io.modelcontextprotocol/clientCapabilities": {},
};
const HEALTHY_TIMEOUT_MS = 180_000;

export async function runEdgeBench({ root, options }) {
  const rounds = Number(options.rounds ?? 3);
  const sequential = Number(options.sequential ?? 200);
  const concurrent = Number(options.concurrent ?? 800);
  const coldRestarts = Number(options.cold ?? 2);
  const workDir = mkdtempSync(join(os.tmpdir(), "bench-edge-"));
  const keysDir = join(workDir, "keys");
  const { publicKeys } = await ensureDevKeys(keysDir);
  const masterKey = Buffer.from(crypto.getRandomValues(new Uint8Array(32))).toString("base64");
  const taken = [];
  const port = async () => {
    const p = await freePort(taken);
    taken.push(p);
    return p;
  };

  const targets = [];
  for (const spec of [
    { name: "template", mode: "stateless" },
    { name: "template+DO", mode: "do" },
    { name: "server", mode: "server" },
  ]) {
    const p = await port();
    const inspector = await port();
    const base = `http://127.0.0.1:${p}`;
    const target = { ...spec, base, port: p, inspector, persist: join(workDir, `state-${spec.mode}`) };
    target.log = join(workDir, `${spec.mode}.log`);
    target.vars =
      spec.mode === "server"
        ? {
            MCP_RESOURCE: `${base}/mcp`,
            ALLOWED_HOSTS: "127.0.0.1,localhost",
            ALLOWED_ORIGINS: base,
            AUTH_JWKS: readFileSync(publicKeys, "utf8").trim(),
            MASTER_KEY_EPOCH: "bench1",
            MASTER_KEY_BENCH1: masterKey,
            // The bench sends thousands of requests a minute from one subject: quotas are not what is measured.
            RATE_LIMIT_PER_MINUTE: "10000000",
            RATE_LIMIT_SUBJECT_PER_MINUTE: "10000000",
          }
        : { MODE: spec.mode };
    targets.push(target);
  }
  const start = (target) => {
    target.process = startWranglerDev({
      root,
      workDir,
      port: target.port,
      inspectorPort: target.inspector,
      logFile: target.log,
      persistTo: target.persist,
      vars: target.vars,
      ...(target.mode === "server" ? {} : { config: join(root, "bench/edge/wrangler.toml") }),
    });
    return waitForHealthy(target.base, target.process, HEALTHY_TIMEOUT_MS).catch((error) => {
      throw new Error(`${target.name}: ${error.message}\n${tail(target.log)}`);
    });
  };

  const server = targets[2];
  const token = await mintDevToken({
    tenant: "bench-edge",
    sub: "bench",
    scope: "mcp kb.read kb.write",
    ttl: 3 * 3600,
    aud: `${server.base}/mcp`,
    keysDir,
  });
  const auth = (target) => (target.mode === "server" ? { authorization: `Bearer ${token}` } : {});

  const loadSamples = [os.loadavg()[0]];
  const sampler = setInterval(() => loadSamples.push(os.loadavg()[0]), 5_000);
  try {
    // Started one after the other: three bundlings at once on two loaded cores only slow each other down.
    for (const target of targets) await start(target);
    for (const target of targets) target.ops = await prepareOps(target, auth(target));

    const perRound = [];
    for (let round = 0; round < rounds; round++) {
      const order = targets.map((_, i) => targets[(i + round) % targets.length]);
      const results = {};
      for (const op of Object.keys(targets[0].ops)) {
        for (const target of order) {
          const send = target.ops[op];
          for (let i = 0; i < 30; i++) await send();
          const latencies = [];
          for (let i = 0; i < sequential; i++) {
            const t0 = performance.now();
            await send();
            latencies.push(performance.now() - t0);
          }
          const t0 = performance.now();
          let next = 0;
          await Promise.all(
            Array.from({ length: IN_FLIGHT }, async () => {
              while (next < concurrent) {
                next++;
                await send();
              }
            }),
          );
          const seconds = (performance.now() - t0) / 1000;
          results[op] ??= {};
          results[op][target.name] = {
            p50Ms: quantile(latencies, 0.5),
            p95Ms: quantile(latencies, 0.95),
            rps: concurrent / seconds,
          };
        }
      }
      perRound.push(results);
      console.log(`bench: edge round ${round + 1}/${rounds}: ${roundLine(results)}`);
    }

    // Cold: restart a target on its persisted state (objects evicted, new isolate), wait for /healthz (which the
    // worker answers without touching any object), then time the first MCP request.
    const cold = {};
    for (let i = 0; i < coldRestarts; i++) {
      for (const target of targets) {
        await target.process.stop();
        await start(target);
        const t0 = performance.now();
        await target.ops["tools/call whoami"]();
        cold[target.name] = [...(cold[target.name] ?? []), performance.now() - t0];
      }
    }
    // The first request to a tenant object that never existed (creates its data key): fresh tenant names.
    const firstEver = [];
    for (let i = 0; i < 5; i++) {
      const fresh = await mintDevToken({
        tenant: `bench-new-${i}-${Date.now() % 100000}`,
        sub: "bench",
        scope: "mcp kb.read kb.write",
        ttl: 600,
        aud: `${server.base}/mcp`,
        keysDir,
      });
      const ops = await prepareOps(server, { authorization: `Bearer ${fresh}` }, { check: false });
      const t0 = performance.now();
      await ops["tools/call whoami"]();
      firstEver.push(performance.now() - t0);
    }
    clearInterval(sampler);
    loadSamples.push(os.loadavg()[0]);
    return summarize({ perRound, cold, firstEver, rounds, sequential, concurrent, loadSamples });
  } finally {
    clearInterval(sampler);
    await stopAll();
    rmSync(workDir, { recursive: true, force: true });
  }
}

/** The requests measured, per target; each is checked once for a real result before it is timed. */
export async function prepareOps(target, headers, { check = true } = {}) {
  const url = `${target.base}/mcp`;
  const base = { "content-type": "application/json", accept: "application/json, text/event-stream", ...headers };
  const modern = (method, params) => {
    const h = { ...base, "mcp-method": method, "mcp-protocol-version": MODERN };
    if (typeof params.name === "string") h["mcp-name"] = params.name;
    const body = JSON.stringify({ jsonrpc: "2.0", id: 1, method, params: { ...params, _meta: MODERN_META } });
    return () => post(url, h, body);
  };
  const ops = {
    "tools/call whoami": modern("tools/call", { name: "whoami", arguments: {} }),
    "tools/call search": modern("tools/call", { name: "search", arguments: { query: SEARCH_QUERY, top_k: 10 } }),
    "tools/list": modern("tools/list", {}),
  };
  if (target.mode === "server" && check) await seedSearchAtoms(url, base);
  // 2025-11-25: this server keeps a session (initialize first); the template serves the era statelessly.
  const legacyHeaders = { ...base, "mcp-protocol-version": LEGACY };
  if (target.mode === "server") {
    const init = await fetch(url, {
      method: "POST",
      headers: legacyHeaders,
      body: JSON.stringify({
        jsonrpc: "2.0",
        id: 0,
        method: "initialize",
        params: { protocolVersion: LEGACY, capabilities: {}, clientInfo: { name: "bench-edge", version: "0" } },
      }),
    });
    await init.text();
    const session = init.headers.get("mcp-session-id");
    if (!session) throw new Error(`server: initialize gave no session (HTTP ${init.status})`);
    legacyHeaders["mcp-session-id"] = session;
    await post(url, legacyHeaders, JSON.stringify({ jsonrpc: "2.0", method: "notifications/initialized" }), false);
  }
  const legacyBody = JSON.stringify({
    jsonrpc: "2.0",
    id: 1,
    method: "tools/call",
    params: { name: "whoami", arguments: {} },
  });
  ops["tools/call whoami (2025-11-25)"] = () => post(url, legacyHeaders, legacyBody);
  const legacySearch = JSON.stringify({
    jsonrpc: "2.0",
    id: 2,
    method: "tools/call",
    params: { name: "search", arguments: { query: SEARCH_QUERY, top_k: 10 } },
  });
  ops["tools/call search (2025-11-25)"] = () => post(url, legacyHeaders, legacySearch);
  if (check) {
    for (const [name, send] of Object.entries(ops)) {
      const text = await send();
      if (!text.includes('"result"')) throw new Error(`${target.name} ${name}: no result: ${text.slice(0, 300)}`);
    }
  }
  return ops;
}

/** Stores the bench's 1,000 atoms in this server's tenant (add_atoms replaces by id, so a re-run stores the same). */
async function seedSearchAtoms(url, base) {
  const headers = { ...base, "mcp-method": "tools/call", "mcp-name": "add_atoms", "mcp-protocol-version": MODERN };
  for (let first = 0; first < SEARCH_ATOMS; first += 100) {
    const atoms = Array.from({ length: 100 }, (_, i) => searchAtom(first + i));
    const text = await post(
      url,
      headers,
      JSON.stringify({
        jsonrpc: "2.0",
        id: 1,
        method: "tools/call",
        params: { name: "add_atoms", arguments: { atoms }, _meta: MODERN_META },
      }),
    );
    if (!text.includes('"added"') || text.includes('"isError":true')) {
      throw new Error(`server add_atoms: ${text.slice(0, 300)}`);
    }
  }
}

async function post(url, headers, body, expectOk = true) {
  const response = await fetch(url, { method: "POST", headers, body });
  const text = await response.text();
  if (expectOk && response.status !== 200) throw new Error(`HTTP ${response.status}: ${text.slice(0, 300)}`);
  return text;
}

function summarize({ perRound, cold, firstEver, rounds, sequential, concurrent, loadSamples }) {
  const ops = {};
  for (const op of Object.keys(perRound[0])) {
    ops[op] = {};
    for (const name of Object.keys(perRound[0][op])) {
      const series = perRound.map((r) => r[op][name]);
      const template = perRound.map((r) => r[op].template);
      ops[op][name] = {
        p50Ms: round2(median(series.map((s) => s.p50Ms))),
        p95Ms: round2(median(series.map((s) => s.p95Ms))),
        rps: Math.round(median(series.map((s) => s.rps))),
        p50Ratio: round2(median(series.map((s, i) => s.p50Ms / template[i].p50Ms))),
        rpsRatio: round2(median(series.map((s, i) => s.rps / template[i].rps))),
        p50RatioRange: minMax(series.map((s, i) => s.p50Ms / template[i].p50Ms)),
        rpsRatioRange: minMax(series.map((s, i) => s.rps / template[i].rps)),
      };
    }
  }
  const coldOut = {};
  for (const [name, values] of Object.entries(cold)) coldOut[name] = { firstRequestMs: values.map(round2) };
  return {
    suite: "edge",
    rounds,
    sequentialPerRound: sequential,
    concurrentPerRound: concurrent,
    inFlight: IN_FLIGHT,
    ops,
    cold: coldOut,
    coldRatio: round2(median(cold.server) / median(cold.template)),
    firstRequestNewTenantMs: firstEver.map(round2),
    load: {
      mean: round1(loadSamples.reduce((a, b) => a + b, 0) / loadSamples.length),
      max: round1(Math.max(...loadSamples)),
    },
  };
}

function roundLine(results) {
  return Object.entries(results)
    .map(([op, byTarget]) => {
      const t = byTarget.template;
      const parts = Object.entries(byTarget)
        .filter(([name]) => name !== "template")
        .map(([name, r]) => `${name} ${round2(r.p50Ms / t.p50Ms)}x p50 / ${round2(r.rps / t.rps)}x rps`);
      return `${op}: template p50 ${round2(t.p50Ms)} ms ${Math.round(t.rps)} rps; ${parts.join(", ")}`;
    })
    .join(" | ");
}

function quantile(values, q) {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
}
function median(values) {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}
function minMax(values) {
  return [round2(Math.min(...values)), round2(Math.max(...values))];
}
function round2(value) {
  return Math.round(value * 100) / 100;
}
function round1(value) {
  return Math.round(value * 10) / 10;
}

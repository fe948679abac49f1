// --memory: resident memory (VmRSS) of the two workerd processes of the wrangler group at warm start and after 10k
// and 30k mixed requests (whoami, add_atoms, search, get_atom, list_atoms, and 2025-11-25 session initialize + call
// + DELETE) across a few tenants. The data set is kept flat (atom ids cycle), so growth is the server's, not data.
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { isolateHeap } from "./inspector.mjs";
import { words } from "./rng.mjs";
import { pool } from "./verify.mjs";

const LEGACY = "2025-11-25";
const TENANTS = 3;
const CONCURRENCY = 4;
const IDS_PER_TENANT = 2000;
const MARKS = (process.env.FAULTS_MEMORY_MARKS ?? "10000,30000").split(",").map(Number);

export async function memoryRun(ctx, outFile) {
  const rng = ctx.rng.fork("memory");
  const tenants = [];
  for (let i = 0; i < TENANTS; i++) {
    const tenant = `f-mem-${ctx.seed}-${i}`;
    tenants.push({ tenant, client: await ctx.tenantClient(tenant), n: 0, written: 0 });
  }
  let requests = 0;
  let errors = 0;
  const firstErrors = [];
  const one = async (k) => {
    // Every tenant gets every kind of request (k % 6 picks the kind, k / 6 the tenant).
    const t = tenants[Math.floor(k / 6) % TENANTS];
    const kind = k % 6;
    try {
      if (kind === 0) await t.client.call("whoami", {});
      else if (kind === 1) {
        const atoms = Array.from({ length: 5 }, () => {
          const id = `m-${t.n++ % IDS_PER_TENANT}`;
          return { id, text: `${words(rng, rng.int(5, 40))} ${id}` };
        });
        await t.client.call("add_atoms", { atoms });
        t.written = Math.max(t.written, Math.min(t.n, IDS_PER_TENANT));
      } else if (kind === 2) await t.client.call("search", { query: words(rng, 3), top_k: 10 });
      else if (kind === 3) await t.client.call("get_atom", { id: `m-${rng.int(0, Math.max(0, t.written - 25))}` });
      else if (kind === 4) await t.client.call("list_atoms", { limit: 50 });
      else {
        await legacySession(ctx.base, t.client.token);
        requests += 2; // initialize, call and DELETE are three requests
      }
    } catch (error) {
      // get_atom of an id not written yet is ERR_NOT_FOUND: counted, not fatal.
      errors++;
      if (firstErrors.length < 5) firstErrors.push(error.message.slice(0, 160));
    }
    requests++;
  };

  const sample = async (label) => {
    let heap = null;
    // FAULTS_HEAP=0 leaves the inspector alone (reading the heap through wrangler's inspector proxy costs it
    // descriptors, see BENCHMARKS.md).
    if (process.env.FAULTS_HEAP !== "0")
      try {
        const snapshotFile = process.env.FAULTS_HEAP_SNAPSHOTS
          ? join(ctx.outDir, `heap-${label}.heapsnapshot`)
          : undefined;
        heap = await isolateHeap(ctx.server.inspectorPort, { snapshotFile });
      } catch (error) {
        heap = { error: error.message };
      }
    const processes = ctx.server.workerdRss();
    const point = {
      label,
      requests,
      at: new Date().toISOString(),
      processes,
      totalMb: Math.round(processes.reduce((sum, p) => sum + p.rssKb, 0) / 1024),
      heap,
      heapMb: heap?.usedBytes ? Math.round((heap.usedBytes / 2 ** 20) * 10) / 10 : null,
    };
    console.log(
      `memory: ${label}: ${processes.map((p) => `workerd ${p.role} ${Math.round(p.rssKb / 1024)} MB, ${p.fds} fds`).join(", ")}; isolate heap ${point.heapMb ?? "?"} MB${heap?.error ? ` (${heap.error})` : ""} (${requests} requests)`,
    );
    return point;
  };

  const started = Date.now();
  let k = 0;
  const runUntil = async (target) => {
    // A session exchange (k % 6 === 5) is three requests.
    const batch = [];
    let planned = requests;
    while (planned < target) {
      planned += k % 6 === 5 ? 3 : 1;
      batch.push(k++);
    }
    await pool(batch, CONCURRENCY, one);
  };
  await runUntil(300); // warm: every tenant object exists, code paths compiled
  const points = [await sample("warm")];
  for (const mark of MARKS) {
    await runUntil(mark);
    points.push(await sample(`${mark / 1000}k`));
  }
  const warm = points[0].totalMb;
  const warmHeap = points[0].heapMb;
  const growth = points.map((p) => ({
    label: p.label,
    totalMb: p.totalMb,
    vsWarm: `${(((p.totalMb - warm) / warm) * 100).toFixed(0)}%`,
    heapMb: p.heapMb,
    heapVsWarm: p.heapMb && warmHeap ? `${(((p.heapMb - warmHeap) / warmHeap) * 100).toFixed(0)}%` : null,
  }));
  const result = {
    seed: ctx.seed,
    durationMs: Date.now() - started,
    concurrency: CONCURRENCY,
    errors,
    firstErrors,
    points,
    growth,
  };
  writeFileSync(outFile, `${JSON.stringify(result, null, 2)}\n`);
  ctx.figures.memory = result;
  ctx.report.verdict(
    "memory",
    `RSS measured at warm start and after ${MARKS.map((m) => `${m / 1000}k`).join(" and ")} mixed requests`,
    points.some((p) => p.processes.length === 0) ? ["no workerd process found in the wrangler group"] : [],
    growth
      .map((g) => `${g.label} ${g.totalMb} MB (${g.vsWarm}), heap ${g.heapMb ?? "?"} MB (${g.heapVsWarm ?? "?"})`)
      .join(", "),
    started,
  );
}

/** One 2025-11-25 session: initialize, notifications/initialized, tools/call whoami, DELETE. */
async function legacySession(base, token) {
  const headers = {
    authorization: `Bearer ${token}`,
    "content-type": "application/json",
    accept: "application/json, text/event-stream",
  };
  const post = async (body, extra = {}) => {
    const response = await fetch(`${base}/mcp`, {
      method: "POST",
      headers: { ...headers, ...extra },
      body: JSON.stringify(body),
      signal: AbortSignal.timeout(30_000),
    });
    await response.arrayBuffer();
    if (response.status >= 300) throw new Error(`${body.method}: HTTP ${response.status}`);
    return response;
  };
  const init = await post({
    jsonrpc: "2.0",
    id: 1,
    method: "initialize",
    params: { protocolVersion: LEGACY, capabilities: {}, clientInfo: { name: "faults-memory", version: "1" } },
  });
  const session = init.headers.get("mcp-session-id");
  if (!session) throw new Error("initialize: no Mcp-Session-Id");
  const sessionHeaders = { "mcp-session-id": session, "mcp-protocol-version": LEGACY };
  await post({ jsonrpc: "2.0", method: "notifications/initialized" }, sessionHeaders);
  await post(
    { jsonrpc: "2.0", id: 2, method: "tools/call", params: { name: "whoami", arguments: {} } },
    sessionHeaders,
  );
  const response = await fetch(`${base}/mcp`, {
    method: "DELETE",
    headers: { authorization: `Bearer ${token}`, ...sessionHeaders },
    signal: AbortSignal.timeout(30_000),
  });
  await response.arrayBuffer();
  if (response.status >= 300) throw new Error(`DELETE: HTTP ${response.status}`);
}

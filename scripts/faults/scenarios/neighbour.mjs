// Scenario 7, noisy neighbour. While tenant A runs a large synchronous ingest, tenant B's whoami and GET /healthz
// are timed back to back. Invariant (generous on purpose; the benchmark measures precisely): every one answered
// within NEIGHBOUR_BOUND_MS. Latencies (p50/p99/max, and idle) go to the summary.
import { putDocument } from "../client.mjs";
import { percentile } from "../verify.mjs";
import { reference } from "./ingest.mjs";

const GROUP = "7 noisy neighbour";
const NEIGHBOUR_BOUND_MS = 2000;
const MAX_PROBES = 5000;

export async function noisyNeighbour(ctx) {
  const ref = await reference(ctx);
  const a = await ctx.tenantClient(`f-nb-a-${ctx.seed}`);
  const b = await ctx.tenantClient(`f-nb-b-${ctx.seed}`);
  await putDocument(ctx.base, a.token, "big", ref.document, "text/markdown");
  const idle = await probe(ctx, b, () => false, 10);
  let done = false;
  const started = Date.now();
  const ingest = a.call("ingest_document", { document_id: "big" }, { timeoutMs: 180_000 }).finally(() => {
    done = true;
  });
  const busy = await probe(ctx, b, () => done, MAX_PROBES);
  const result = await ingest.catch((error) => ({ status: `error ${error.message}` }));
  const stats = (values) => ({
    n: values.length,
    p50: percentile(values, 50),
    p99: percentile(values, 99),
    max: values.length ? Math.max(...values) : null,
  });
  const figures = {
    ingestMs: Date.now() - started,
    ingestStatus: result.status,
    idle: { whoami: stats(idle.whoami), healthz: stats(idle.healthz) },
    busy: { whoami: stats(busy.whoami), healthz: stats(busy.healthz) },
  };
  ctx.figures.neighbour = figures;
  for (const kind of ["whoami", "healthz"]) {
    const s = figures.busy[kind];
    ctx.report.verdict(
      GROUP,
      `B's ${kind} during A's ${(ref.document.length / 1e6).toFixed(1)} MB synchronous ingest within ${NEIGHBOUR_BOUND_MS} ms`,
      [
        ...(s.n === 0 ? ["no probe completed during the ingest"] : []),
        ...(s.max > NEIGHBOUR_BOUND_MS ? [`max ${s.max} ms (p50 ${s.p50}, p99 ${s.p99}, n ${s.n})`] : []),
        ...(busy.errors.length ? [`${busy.errors.length} probes failed: ${busy.errors[0]}`] : []),
      ],
      `p50 ${s.p50} ms, p99 ${s.p99} ms, max ${s.max} ms, n ${s.n} (idle p50 ${figures.idle[kind].p50} ms)`,
      started,
    );
  }
}

/**
 * whoami and /healthz in two independent loops (one request at a time each), until `stop()` or `limit` probes per
 * loop. A probe still in flight when `stop()` turns true is waited for and counted: it was sent during the load.
 */
async function probe(ctx, client, stop, limit) {
  const out = { whoami: [], healthz: [], errors: [] };
  const loop = async (kind, send) => {
    for (let i = 0; i < limit && !stop(); i++) {
      const t0 = performance.now();
      try {
        await send();
        out[kind].push(Math.round(performance.now() - t0));
      } catch (error) {
        out.errors.push(`${kind}: ${error.message}`);
      }
    }
  };
  await Promise.all([
    loop("whoami", () => client.call("whoami", {}, { timeoutMs: 30_000 })),
    loop("healthz", async () => {
      const response = await fetch(`${ctx.base}/healthz`, { signal: AbortSignal.timeout(30_000) });
      await response.arrayBuffer();
      if (response.status !== 200) throw new Error(`HTTP ${response.status}`);
    }),
  ]);
  return out;
}

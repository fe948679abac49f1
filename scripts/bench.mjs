#!/usr/bin/env node
// `npm run bench [-- --sizes=1000,10000,100000 --queries=200] [-- --suite=index|crypto|edge]` (or `-- --report-only` to
// regenerate BENCHMARKS.md from bench/results.json without running anything): runs the benchmarks
// (bench/**/*.bench.test.ts, vitest.bench.config.ts) inside workerd, collects the `BENCH_RESULT {json}` lines they
// print (code in workerd cannot write files), merges them into bench/results.json (the vector index per size under
// `sizes`, the crypto suite per part under `crypto`) and regenerates BENCHMARKS.md from that file. Suites: `index`
// (bench/local-index.bench.test.ts; --sizes, --queries), `crypto` (bench/crypto.bench.test.ts: Cobblestone-256
// throughput and streaming memory, offboarding) and `edge` (scripts/bench-edge.mjs, under `edge`: three `wrangler
// dev` targets over loopback, the request path against the stateless template; --rounds, --sequential,
// --concurrent, --cold); without --suite the two vitest suites run. While the crypto suite runs, the RSS of the
// workerd process is sampled from outside (Linux /proc) between the `BENCH_MARK` lines the suite prints, as a
// cross-check of its in-pipeline memory accounting. Not part of `npm test`. Exits non-zero when the run fails or
// prints no result.
import { execFileSync, spawn } from "node:child_process";
import { existsSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import os from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const RESULTS = join(root, "bench/results.json");
const REPORT = join(root, "BENCHMARKS.md");
const MARKER = "BENCH_RESULT ";
const PHASE_MARKER = "BENCH_MARK ";
const NOTES_START = "<!-- notes:start -->";
const NOTES_END = "<!-- notes:end -->";
const CRYPTO_NOTES_START = "<!-- crypto-notes:start -->";
const CRYPTO_NOTES_END = "<!-- crypto-notes:end -->";
const SUITES = {
  index: "bench/local-index.bench.test.ts",
  crypto: "bench/crypto.bench.test.ts",
  // Not a vitest suite: scripts/bench-edge.mjs drives three `wrangler dev` targets over loopback HTTP.
  edge: null,
};
// The fault suite's figures (npm run test:faults) are written by hand between these markers and kept as they are.
const FAULTS_START = "<!-- faults-report:start -->";
const FAULTS_END = "<!-- faults-report:end -->";
const EDGE_START = "<!-- edge-report:start -->";
const EDGE_END = "<!-- edge-report:end -->";

const options = Object.fromEntries(
  process.argv
    .slice(2)
    .filter((arg) => arg.startsWith("--"))
    .map((arg) => {
      const [key, ...value] = arg.slice(2).split("=");
      return [key, value.join("=") || "true"];
    }),
);
if (options["report-only"]) {
  writeReport(readResults());
  console.log(`bench: wrote ${REPORT} from ${RESULTS}`);
  process.exit(0);
}
const sizes = options.sizes ?? "1000,10000,100000";
const queries = options.queries ?? "200";
const suite = options.suite ?? "all";
if (suite !== "all" && !Object.hasOwn(SUITES, suite)) {
  console.error(`bench: unknown --suite=${suite} (use ${Object.keys(SUITES).join(", ")}, or omit it for all)`);
  process.exit(2);
}
if (suite === "edge") {
  const { runEdgeBench } = await import("./bench-edge.mjs");
  const startedAt = new Date();
  console.log(`bench: suite edge; load average ${os.loadavg().map(fmt1).join(" ")}`);
  const result = await runEdgeBench({ root, options });
  const results = readResults();
  results.edge = {
    result,
    run: {
      startedAt: startedAt.toISOString(),
      finishedAt: new Date().toISOString(),
      source: source(),
      machine: machine(),
    },
  };
  results.updatedAt = results.edge.run.finishedAt;
  writeFileSync(RESULTS, `${JSON.stringify(results, null, 2)}\n`);
  writeReport(results);
  console.log(`bench: edge done; wrote ${RESULTS} and ${REPORT}`);
  process.exit(0);
}
const files = suite === "all" ? Object.values(SUITES).filter(Boolean) : [SUITES[suite]];

const startedAt = new Date();
const loadSamples = [os.loadavg()[0]];
const sampler = setInterval(() => loadSamples.push(os.loadavg()[0]), 5_000);
const collected = [];
const rss = rssSampler();

console.log(
  `bench: suite ${suite}${suite === "crypto" ? "" : `, sizes ${sizes}, ${queries} queries per size`}; load average ` +
    os.loadavg().map(fmt1).join(" "),
);
const code = await new Promise((resolve) => {
  const child = spawn(
    process.execPath,
    [join(root, "node_modules/vitest/vitest.mjs"), "run", "--config", "vitest.bench.config.ts", ...files],
    {
      cwd: root,
      env: { ...process.env, BENCH_SIZES: sizes, BENCH_QUERIES: queries, NO_COLOR: "1", FORCE_COLOR: "0" },
      stdio: ["ignore", "pipe", "inherit"],
    },
  );
  rss.start(child.pid);
  let buffered = "";
  child.stdout.setEncoding("utf8");
  child.stdout.on("data", (chunk) => {
    buffered += chunk;
    let newline = buffered.indexOf("\n");
    while (newline >= 0) {
      onLine(buffered.slice(0, newline));
      buffered = buffered.slice(newline + 1);
      newline = buffered.indexOf("\n");
    }
  });
  child.on("close", (status) => {
    if (buffered) onLine(buffered);
    resolve(status ?? 1);
  });
});
clearInterval(sampler);
rss.stop();
loadSamples.push(os.loadavg()[0]);

const finishedAt = new Date();
const run = {
  startedAt: startedAt.toISOString(),
  finishedAt: finishedAt.toISOString(),
  durationS: Math.round((finishedAt - startedAt) / 1000),
  suite,
  sizesRequested: sizes,
  source: source(),
  machine: machine(),
  loadAverage1m: {
    atStart: fmt1(loadSamples[0]),
    mean: fmt1(loadSamples.reduce((a, b) => a + b, 0) / loadSamples.length),
    max: fmt1(Math.max(...loadSamples)),
  },
};
if (collected.length) {
  const results = readResults();
  for (const result of collected) {
    if (result.suite === "crypto") {
      results.crypto ??= {};
      results.crypto[result.part] = { result, run };
    } else results.sizes[String(result.n)] = { result, run };
  }
  results.updatedAt = run.finishedAt;
  writeFileSync(RESULTS, `${JSON.stringify(results, null, 2)}\n`);
  writeReport(results);
  console.log(`bench: ${collected.length} result(s) in ${run.durationS} s; wrote ${RESULTS} and ${REPORT}`);
}
if (code !== 0 || collected.length === 0) {
  console.error(`bench: failed (vitest exit ${code}, ${collected.length} result(s))`);
  process.exit(code || 1);
}

function onLine(line) {
  const phase = line.indexOf(PHASE_MARKER);
  if (phase >= 0) {
    try {
      rss.mark(JSON.parse(line.slice(phase + PHASE_MARKER.length)).mark);
    } catch {}
    return;
  }
  const at = line.indexOf(MARKER);
  if (at < 0) {
    process.stdout.write(`${line}\n`);
    return;
  }
  try {
    const result = JSON.parse(line.slice(at + MARKER.length));
    if (result.suite === "crypto") {
      if (result.part === "memory") {
        result.rss = rss.phase("memory-stream");
        result.rssAllVariants = rss.phase("memory-all");
      }
      collected.push(result);
      console.log(`bench: crypto ${result.part}: ${cryptoLine(result)}`);
      return;
    }
    collected.push(result);
    const l = result.latency;
    console.log(
      `bench: N=${result.n}: ingest ${result.ingest.atomsPerSecond} atoms/s; index p50 ${l.index.p50Ms} ms ` +
        `(exact scan ${l.exactFloat32Scan.p50Ms} ms); search p50 ${l.knowledgeBaseSearch.p50Ms} ms; ` +
        `recall@10 ${result.recall.strict.mean} (gaussian ${result.gaussian.recall.strict.mean})`,
    );
  } catch (error) {
    console.error(`bench: could not parse a result line: ${error}`);
  }
}

function cryptoLine(r) {
  if (r.part === "memory") {
    return `worst accounted peak ${kib(r.worstAccountedPeakBytes)} (goal ${mib(r.goalPeakBytes)})`;
  }
  if (r.part === "throughput") {
    return r.sizes
      .map(
        (s) =>
          `${mib(s.bytes)}: encrypt stream/floor ${s.encrypt.ratios.streamVsFloor} (/single-shot ` +
          `${s.encrypt.ratios.streamVsRaw}), decrypt stream/floor ${s.decrypt.ratios.streamVsFloor} (/single-shot ` +
          `${s.decrypt.ratios.streamVsRaw})`,
      )
      .join("; ");
  }
  if (r.part === "offboarding") {
    return (
      `adminOffboard RPC ${r.alarmDriven.offboardRpcMs} ms; purge ${r.alarmDriven.atomsPerSecond} atoms/s by alarm, ` +
      `${r.direct.atomsPerSecond} atoms/s stepping purgeStep`
    );
  }
  return "";
}

/**
 * RSS of the workerd process(es) under the vitest child, sampled every 100 ms from /proc (Linux only; otherwise
 * nothing is reported). `phase(name)` summarizes the samples between the `<name>:start` and `<name>:end` marks.
 */
function rssSampler() {
  const samples = [];
  const marks = [];
  let timer = null;
  let root = null;
  let pids = [];
  const descendants = () => {
    const children = new Map();
    for (const entry of readdirSync("/proc")) {
      if (!/^\d+$/.test(entry)) continue;
      try {
        const stat = readFileSync(`/proc/${entry}/stat`, "utf8");
        const close = stat.lastIndexOf(")");
        const ppid = Number(stat.slice(close + 2).split(" ")[1]);
        const comm = stat.slice(stat.indexOf("(") + 1, close);
        if (!children.has(ppid)) children.set(ppid, []);
        children.get(ppid).push({ pid: Number(entry), comm });
      } catch {}
    }
    const out = [];
    const queue = [root];
    while (queue.length) {
      for (const child of children.get(queue.shift()) ?? []) {
        out.push(child);
        queue.push(child.pid);
      }
    }
    return out.filter((p) => p.comm.includes("workerd")).map((p) => p.pid);
  };
  const read = () => {
    let total = 0;
    for (const pid of pids) {
      try {
        const kb = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"))?.[1];
        total += Number(kb ?? 0) * 1024;
      } catch {}
    }
    return total;
  };
  const tick = () => {
    try {
      if (!pids.length || read() === 0) pids = descendants();
      if (pids.length) samples.push({ t: Date.now(), rss: read() });
    } catch {}
  };
  return {
    start(pid) {
      if (!existsSync("/proc/self/status")) return;
      root = pid;
      timer = setInterval(tick, 100);
    },
    stop() {
      if (timer) clearInterval(timer);
    },
    mark(name) {
      tick();
      marks.push({ name, t: Date.now(), rss: samples.at(-1)?.rss ?? null });
    },
    phase(name) {
      const start = marks.find((m) => m.name === `${name}:start`);
      const end = marks.find((m) => m.name === `${name}:end`);
      if (!start || !end || start.rss === null) return null;
      const within = samples.filter((s) => s.t >= start.t && s.t <= end.t);
      const peak = Math.max(start.rss, ...within.map((s) => s.rss));
      return {
        processes: pids.length,
        baselineBytes: start.rss,
        peakBytes: peak,
        growthBytes: peak - start.rss,
        samples: within.length,
        durationMs: end.t - start.t,
        /** MiB above the baseline, every 100 ms sample (does it plateau, or grow with the bytes streamed?). */
        seriesMiB: within.map((s) => Math.round(((s.rss - start.rss) / 2 ** 20) * 10) / 10),
      };
    },
  };
}

function readResults() {
  if (!existsSync(RESULTS)) return { updatedAt: null, sizes: {} };
  return JSON.parse(readFileSync(RESULTS, "utf8"));
}

/** The commit measured, and whether src/ had uncommitted changes (the bench measures the working tree). */
function source() {
  const git = (...args) => {
    try {
      return execFileSync("git", args, { cwd: root, encoding: "utf8" }).trim();
    } catch {
      return null;
    }
  };
  const dirty = git("status", "--porcelain", "--", "src");
  return { commit: git("rev-parse", "--short", "HEAD"), srcChangedFiles: dirty ? dirty.split("\n").length : 0 };
}

function machine() {
  const cpus = os.cpus();
  const version = (pkg) => {
    try {
      return JSON.parse(readFileSync(join(root, "node_modules", pkg, "package.json"), "utf8")).version;
    } catch {
      return "?";
    }
  };
  return {
    cpus: cpus.length,
    cpuModel: cpus[0]?.model ?? "?",
    memoryGiB: Math.round(os.totalmem() / 2 ** 30),
    os: `${os.type()} ${os.release()} ${os.arch()}`,
    node: process.version,
    workerd: version("workerd"),
    vitestPlugin: version("@cloudflare/vitest-plugin"),
  };
}

// ---------------------------------------------------------------------------------------------------------------
// BENCHMARKS.md

function writeReport(results) {
  const previous = existsSync(REPORT) ? readFileSync(REPORT, "utf8") : "";
  const start = previous.indexOf(NOTES_START);
  const end = previous.indexOf(NOTES_END);
  const notes =
    start >= 0 && end > start
      ? previous.slice(start + NOTES_START.length, end).trim()
      : "_Hand-written analysis goes here; scripts/bench.mjs keeps this block when it regenerates the file._";
  const entries = Object.values(results.sizes).sort((a, b) => a.result.n - b.result.n);
  const out = [];
  out.push("# Benchmarks: local vector index");
  out.push("");
  out.push(
    "Generated sections: the local vector index (this one, `npm run bench -- --suite=index`), " +
      "[at-rest crypto and offboarding](#benchmarks-at-rest-crypto-and-offboarding) (`npm run bench -- --suite=crypto`) " +
      "and [the request path against the template](#benchmarks-request-path-against-the-template-edge) " +
      "(`npm run bench -- --suite=edge`).",
  );
  out.push("");
  out.push(
    "Generated by `npm run bench` (scripts/bench.mjs, bench/local-index.bench.test.ts, vitest.bench.config.ts) from " +
      "bench/results.json; edit only the notes block. The benchmark is not part of `npm test`: speed targets are " +
      "measured here, never by timed tests.",
  );
  out.push("");
  out.push("## Verdict against the goals");
  out.push("");
  out.push(...verdict(entries));
  out.push("");
  out.push("## Notes and analysis");
  out.push("");
  out.push(NOTES_START);
  out.push(notes);
  out.push(NOTES_END);
  out.push("");
  out.push("## Summary");
  out.push("");
  out.push(...summary(entries));
  out.push("");
  for (const entry of entries) {
    out.push(...perSize(entry));
    out.push("");
  }
  out.push(...method());
  out.push("");
  out.push(...cryptoReport(results.crypto ?? {}, previous));
  out.push("");
  const faultsStart = previous.indexOf(FAULTS_START);
  const faultsEnd = previous.indexOf(FAULTS_END);
  if (faultsStart >= 0 && faultsEnd > faultsStart) {
    out.push(previous.slice(faultsStart, faultsEnd + FAULTS_END.length), "");
  }
  out.push(...edgeReport(results.edge ?? null, previous));
  writeFileSync(REPORT, `${out.join("\n")}\n`);
}

function verdict(entries) {
  const big = entries.find((e) => e.result.n === 100_000);
  if (!big) return ["No result for N = 100,000 yet: run `npm run bench` (all sizes)."];
  const r = big.result;
  const grown = r.gaussian.grown;
  const grownWorst = grown ? Math.max(grown.memoryBytesAfterInserts, grown.memoryBytesAfterLoad) : null;
  // The isolate's own heap before any index (11-12 MiB, measured by the faults suite; BENCHMARKS.md).
  const isolateBaseline = 12 * 2 ** 20;
  const sameShare = (d) => d?.sameAsFullInt8Scan;
  // Sub-millisecond goals are judged on the repeated-timing p50; single shots tick in whole milliseconds locally.
  const rows = [
    ["Goal (N = 100,000)", "Measured", "Met?"],
    [
      "first query after eviction ≤ 100 ms (moonshot 50 ms)",
      `${ms(r.cold.firstQueryMs)} (median of ${r.cold.firstQueryRunsMs?.map(ms).join(", ") ?? "one run"}: key unwrap, ` +
        "reading and opening every sealed page, wasm instance, the query)",
      yes(r.cold.firstQueryMs <= 100) + (r.cold.firstQueryMs <= 50 ? " (moonshot too)" : ""),
    ],
    ["warm LocalVectorIndex.query (top 10) p50 ≤ 3 ms", latencyCell(r.latency.index), yes(r.latency.index.p50Ms <= 3)],
    [
      "warm KnowledgeBase.search (embed + index + rows) p50 ≤ 3.5 ms",
      latencyCell(r.latency.knowledgeBaseSearch),
      yes(r.latency.knowledgeBaseSearch.p50Ms <= 3.5),
    ],
    [
      "recall@10 ≥ 0.99 (hash-embedder data, mean over queries)",
      `${r.recall.strict.mean} (min ${r.recall.strict.min}); Gaussian worst case ${r.gaussian.recall.strict.mean}`,
      yes(r.recall.strict.mean >= 0.99),
    ],
    [
      "results identical to the index before the pre-scan (full int8 scan, top 40 re-ranked): same ids and scores",
      `share of identical queries: ${sameShare(r.recall.int8Shortlist) ?? "n/a"} (hash-embedder data), ` +
        `${sameShare(r.gaussian.recall.int8Shortlist) ?? "n/a"} (Gaussian)`,
      yes(sameShare(r.recall.int8Shortlist) === 1 && sameShare(r.gaussian.recall.int8Shortlist) === 1),
    ],
    [
      "ingest ≥ 5,000 atoms/s (KnowledgeBase.add, batches of 100)",
      `${r.ingest.atomsPerSecond.toLocaleString("en-US")} atoms/s`,
      yes(r.ingest.atomsPerSecond >= 5000),
    ],
    [
      "index memory at 120k ≤ 64 MiB",
      grown
        ? `${mib(grown.memoryBytesAfterInserts)} after growing to ${grown.rows.toLocaleString("en-US")} rows, ` +
          `${mib(grown.memoryBytesAfterLoad)} after a cold load of them; ` +
          `${fits(Math.floor((128 * 2 ** 20 - isolateBaseline) / grownWorst))} one 128 MiB isolate ` +
          "(after its ~12 MiB baseline)"
        : "not measured",
      grown ? yes(grownWorst <= 64 * 2 ** 20) : "—",
    ],
  ];
  return [
    ...table(rows),
    "",
    `Measured ${big.run.finishedAt.slice(0, 16).replace("T", " ")} UTC on ${big.run.machine.cpus} cores ` +
      `(load average during the run: mean ${big.run.loadAverage1m.mean}, max ${big.run.loadAverage1m.max}), ` +
      "with other jobs sharing the machine: latencies are upper bounds for an idle machine of this kind, and " +
      "workerd on a laptop is not the Cloudflare edge.",
  ];
}

function summary(entries) {
  const rows = [["N", ...entries.map((e) => e.result.n.toLocaleString("en-US"))]];
  const add = (label, f) => rows.push([label, ...entries.map((e) => f(e.result))]);
  add("ingest, atoms/s (KnowledgeBase.add)", (r) => r.ingest.atomsPerSecond.toLocaleString("en-US"));
  add("index query p50 / p95 (ms)", (r) => `${num(r.latency.index.p50Ms)} / ${num(r.latency.index.p95Ms)}`);
  add(
    "exact float32 scan p50 / p95 (ms)",
    (r) => `${num(r.latency.exactFloat32Scan.p50Ms)} / ${num(r.latency.exactFloat32Scan.p95Ms)}`,
  );
  add("index / exact, p50", (r) => fixed(r.latency.ratioP50, 2));
  add(
    "KnowledgeBase.search p50 / p95 (ms)",
    (r) => `${num(r.latency.knowledgeBaseSearch.p50Ms)} / ${num(r.latency.knowledgeBaseSearch.p95Ms)}`,
  );
  add("recall@10, hash-embedder data", (r) => String(r.recall.strict.mean));
  add("recall@10, random Gaussian (worst case)", (r) => String(r.gaussian.recall.strict.mean));
  add("index memory (memoryBytes)", (r) => mib(r.memory.indexMemoryBytes));
  add("float32 equivalent", (r) => mib(r.memory.float32EquivalentBytes));
  add("cold: first query after eviction", (r) => ms(r.cold.firstQueryMs));
  rows.push(["load average during run (mean / max)", ...entries.map((e) => loadOf(e))]);
  return table(rows);
}

function perSize({ result: r, run }) {
  const l = r.latency;
  const lat = (s) =>
    `${num(s.p50Ms)} / ${num(s.p95Ms)} / ${num(s.p99Ms)} (mean ${num(s.meanMs)}, max ${num(s.maxMs)}; ` +
    `${s.samples} queries × ${s.reps} reps). Single shot: mean ${num(s.singleShotMeanMs)}` +
    (s.singleShotP50Ms === undefined ? "" : `, p50 ${num(s.singleShotP50Ms)}, p95 ${num(s.singleShotP95Ms)}`);
  const rec = (x) => `${x.mean} (min ${x.min}, p5 ${x.p5}, ${pct(x.perfectShare)} of queries perfect)`;
  const ing = r.ingest;
  const rows = [
    ["Measure", "Value"],
    [
      `ingest: KnowledgeBase.add, batches of ${ing.batchSizeUsed}`,
      `${ing.atomsPerSecond.toLocaleString("en-US")} atoms/s (${ing.addMsTotal} ms in add; batch p50 ${ms(ing.batchP50Ms)}, ` +
        `p95 ${ms(ing.batchP95Ms)}; wall with text generation ${ing.wallMsIncludingTextGeneration} ms)`,
    ],
    ["LocalVectorIndex.query, top 10, no filter: p50 / p95 / p99 ms", lat(l.index)],
    ["exact float32 brute-force scan (JS, Float32Array): p50 / p95 / p99 ms", lat(l.exactFloat32Scan)],
    ["ratio index / exact", `p50 ${fixed(l.ratioP50, 3)}, mean ${fixed(l.ratioMean, 3)}`],
    ["KnowledgeBase.search (embed + index + row fetch): p50 / p95 / p99 ms", lat(l.knowledgeBaseSearch)],
    ["recall@10 vs exact, hash-embedder data (all queries)", rec(r.recall.strict)],
    ["… perturbed-atom queries", rec(r.recall.perturbedAtomQueries)],
    ["… fresh-text queries", rec(r.recall.freshTextQueries)],
    ["… ties at the 10th score counted as hits", String(r.recall.tiesCounted.mean)],
    ["KnowledgeBase.search returned the same ids as the index", pct(r.recall.knowledgeBaseSearchSameIdsShare)],
    ["int8 shortlist, hash-embedder data (diagnostic)", shortlist(r.recall.int8Shortlist)],
    ["recall@10 vs exact, random unit Gaussian vectors (worst case)", rec(r.gaussian.recall.strict)],
    ["int8 shortlist, Gaussian vectors (diagnostic)", shortlist(r.gaussian.recall.int8Shortlist)],
    ["Gaussian set: index query p50 / p95 / p99 ms", lat(r.gaussian.indexLatency)],
    [
      "Gaussian set: direct insert (writeUpsertRows + afterCommitUpsert)",
      `${r.gaussian.directInsertVectorsPerSecond} vectors/s`,
    ],
    [
      "index memory: memoryBytes after ingest / after cold load",
      `${mib(r.memory.indexMemoryBytes)} / ${mib(r.cold.memoryBytesAfterColdLoad)}`,
    ],
    [
      "int8 payload / float32 payload / float32 equivalent of the index",
      `${mib(r.memory.int8PayloadBytes)} / ${mib(r.memory.float32PayloadBytes)} / ${mib(r.memory.float32EquivalentBytes)}`,
    ],
    [
      "cold: object restart / first query after eviction (loads int8 copies) / second query",
      `${ms(r.cold.objectRestartMs)} / ${ms(r.cold.firstQueryMs)} / ${ms(r.cold.secondQueryMs)}`,
    ],
    [
      "fresh LocalVectorIndex in a running object: load alone / first query after it",
      `${ms(r.cold.freshInstanceLoadOnlyMs)} / ${ms(r.cold.freshInstanceFirstQueryAfterLoadMs)}`,
    ],
    [
      "larger top_k through KnowledgeBase.search (not timed)",
      Object.entries(r.topKProbe ?? {})
        .map(([k, v]) => `${k}: ${v}`)
        .join("; "),
    ],
    ["reading all float32 vectors from SQLite for the exact baseline", ms(r.exactDataLoadMs)],
    [
      "phase wall times (ms)",
      Object.entries(r.phasesMs)
        .map(([k, v]) => `${k} ${v}`)
        .join(", "),
    ],
  ];
  const out = [`## N = ${r.n.toLocaleString("en-US")} atoms`, "", ...table(rows), ""];
  if (ing.batchNote) out.push(`Note: ${ing.batchNote}.`, "");
  out.push(
    `Run ${run.finishedAt.slice(0, 16).replace("T", " ")} UTC, ${run.durationS} s for sizes ${run.sizesRequested}; ` +
      `${run.machine.cpus} × ${run.machine.cpuModel}, ${run.machine.memoryGiB} GiB, ${run.machine.os}, ` +
      `Node ${run.machine.node}, workerd ${run.machine.workerd}; load average ${loadOf({ run })}; ` +
      `source ${run.source ? `commit ${run.source.commit}${run.source.srcChangedFiles ? ` + ${run.source.srcChangedFiles} uncommitted src/ change(s)` : ""}` : "?"}. ` +
      `Clock: advances during computation ${r.clock.advancesDuringComputation}, smallest step ${r.clock.smallestStepMs} ms.`,
  );
  return out;
}

function method() {
  return [
    "## Method",
    "",
    "- **Where**: everything runs inside a tenant Durable Object under local workerd (`@cloudflare/vitest-plugin`, " +
      "`runInDurableObject`), with the object's own SQLite (`state.storage.sql`). The knowledge base is wired like " +
      "`TenantContext` (src/tenant/tenant-context.ts): `LocalVectorIndex` over `state.storage.sql`, `LocalHashEmbedder` keyed under the tenant's embedder key (local-keyed-v2), " +
      "`EmbeddingCache`, `transaction = state.storage.transactionSync`, and the atom cipher (`AtomCipher` over a " +
      "`TenantKeyring` under the master keys the test config provides), see bench/knowledge-base.ts. Fresh " +
      "tenants (objects) per N.",
    "- **Data**: a seeded PRNG (mulberry32) over a 20,000-word synthetic vocabulary with Zipf-like frequencies " +
      "(s = 1.07), 256 topics (Zipf-chosen) with 120 words each and 8 subtopics of 24 words; an atom is 30-80 words, " +
      "30% from its topic, 15% from its subtopic, the rest from the global distribution, tagged with its topic. " +
      "Queries: half are existing atoms perturbed (30% of words dropped, 10% replaced, at most 40 words), half " +
      "fresh 8-25 word texts from the generator. Every atom is a pure function of (seed, index).",
    "- **Ingest**: `KnowledgeBase.add` in batches (100 requested; see the per-size note if that was refused). Only " +
      "the `add` call is timed (text generation excluded). The index is loaded before ingest (as in an object that " +
      "has served a search), so each add also updates the in-memory int8 copies.",
    "- **Latency**: the index (`LocalVectorIndex.query`, top 10, no filter), the exact baseline (a scalar JS " +
      "dot product over every vector of one `Float32Array` holding all stored float32 vectors, read back from " +
      "SQLite, keeping the best 10), and `KnowledgeBase.search` (embedding + index + row fetch) are timed over the " +
      "same queries in the same run, after a warm-up.",
    "- **Timing inside workerd**: `performance.now()` in workerd is the wall clock (it equals `Date.now()`, " +
      "`timeOrigin` is 0) with a **1 ms** resolution. On Cloudflare's edge the clock does not advance during " +
      "computation (only across I/O); under local workerd it does — the bench checks this every run (the " +
      "`Clock` line) and busy-waits to find the tick size. With a 1 ms tick a sub-millisecond query cannot be " +
      "timed alone, so each query is run `reps` times back to back, with `reps` chosen so one sample spans about " +
      "25 ms, and the sample is the total divided by `reps`; p50/p95/p99 are over the per-query samples. A " +
      "single-shot pass (each query once, timed alone, interleaved with the other operations) is also recorded: its " +
      "mean is unbiased because the tick phase is random, its percentiles are quantized to 1 ms (usable for " +
      "multi-millisecond operations only), and comparing it with the repeated figures shows how much repetition " +
      "(the same query's data just read: SQLite pages for the re-rank, CPU caches) flatters them. The verdict " +
      "uses the worse of the two p50s. Time spent descheduled by other processes on the 2-core machine is " +
      "included (wall clock), which mostly shows up in p95/p99.",
    "- **Recall@10**: |index top 10 ∩ exact top 10| / 10 per query, averaged (min, p5 and the share of perfect " +
      "queries also shown); a variant counting results that tie the 10th exact score is reported too. The worst " +
      "case uses N random unit Gaussian vectors written directly through `writeUpsertRows`/`afterCommitUpsert` " +
      "into a fresh tenant's index, queried with fresh Gaussian vectors. Diagnostic (not timed): the index's own " +
      "quantization and wasm kernel in a private instance rank all vectors by int8 score; reported are recall@10 " +
      "of that ranking alone, the share of the exact top 10 inside its top 20 / 30 / 40 (the index re-ranks the " +
      "int8 top 3k = 30 exactly, so its recall is at most coverage@30), and the share of queries whose index " +
      "results equal, ids and scores, the exact re-rank of the full int8 scan's top 40 (the index before the " +
      "7-bit pre-scan).",
    "- **Memory**: `LocalVectorIndex.memoryBytes` (wasm linear memory incl. unused capacity and scratch, the " +
      "per-row scales and biases, and an estimated 120 bytes per id for the JS tables). The float32 equivalent is " +
      "N × 384 × 4 plus the same per-id estimate. After ingest the wasm memory has grown in steps (1.5× while " +
      "small, at most 8,192 rows at a time); after a cold load it is sized to the pages. The 120k figure: Gaussian " +
      "rows inserted past N = 100k up to 1.2 N, then a fresh instance loading them. This is the index only, not the " +
      "whole isolate.",
    "- **Cold load**: `evictDurableObject(stub)`, then in the restarted object a new `LocalVectorIndex` over the " +
      "same SQLite; its first query includes the key unwrap, reading and opening every sealed page and " +
      "instantiating the wasm kernel (single shot, 1 ms resolution). Three evictions per size; the median is the " +
      "verdict's figure. The OS page cache is warm, so this is a lower bound for a real cold start.",
  ];
}

// ---------------------------------------------------------------------------------------------------------------
// BENCHMARKS.md, crypto section (bench/crypto.bench.test.ts; results.crypto.{memory,throughput,offboarding})

function cryptoReport(parts, previous) {
  const start = previous.indexOf(CRYPTO_NOTES_START);
  const end = previous.indexOf(CRYPTO_NOTES_END);
  const notes =
    start >= 0 && end > start
      ? previous.slice(start + CRYPTO_NOTES_START.length, end).trim()
      : "_Hand-written analysis of the crypto suite goes here; scripts/bench.mjs keeps this block._";
  const out = [];
  out.push("# Benchmarks: at-rest crypto and offboarding");
  out.push("");
  out.push(
    "Generated by `npm run bench -- --suite=crypto` (scripts/bench.mjs, bench/crypto.bench.test.ts, " +
      "vitest.bench.config.ts) from the `crypto` entry of bench/results.json; edit only the notes block. Like the " +
      "index benchmark it measures inside workerd and asserts nothing about speed.",
  );
  out.push("");
  out.push("## Crypto: verdict against the goals");
  out.push("");
  out.push(...cryptoVerdict(parts));
  out.push("");
  out.push("## Crypto: notes and analysis");
  out.push("");
  out.push(CRYPTO_NOTES_START);
  out.push(notes);
  out.push(CRYPTO_NOTES_END);
  out.push("");
  if (parts.throughput) out.push(...throughputSection(parts.throughput), "");
  if (parts.memory) out.push(...memorySection(parts.memory), "");
  if (parts.offboarding) out.push(...offboardingSection(parts.offboarding), "");
  out.push(...cryptoMethod());
  return out;
}

function runLine(run) {
  if (!run) return "";
  return (
    `Run ${run.finishedAt.slice(0, 16).replace("T", " ")} UTC, ${run.durationS} s (suite ${run.suite ?? "all"}); ` +
    `${run.machine.cpus} × ${run.machine.cpuModel}, ${run.machine.memoryGiB} GiB, Node ${run.machine.node}, ` +
    `workerd ${run.machine.workerd}; load average (1 min) at start ${run.loadAverage1m.atStart}, mean ` +
    `${run.loadAverage1m.mean}, max ${run.loadAverage1m.max}; source ${run.source ? `commit ${run.source.commit}${run.source.srcChangedFiles ? ` + ${run.source.srcChangedFiles} uncommitted src/ change(s)` : ""}` : "?"}.`
  );
}

function cryptoVerdict(parts) {
  const t = parts.throughput?.result;
  const m = parts.memory?.result;
  const o = parts.offboarding?.result;
  if (!t && !m && !o) return ["No crypto result yet: run `npm run bench -- --suite=crypto`."];
  const rows = [["Goal", "Measured", "Met?"]];
  for (const size of t?.sizes ?? []) {
    for (const [kind, stream, transformStream] of [
      ["encrypt", "encryptingReadable", "encryptingStream (TransformStream)"],
      ["decrypt", "decryptingReadable", "decryptingStream (TransformStream)"],
    ]) {
      const ops = size[kind].ops;
      const r = size[kind].ratios;
      const floor = ops[t.goalBaseline];
      rows.push([
        `${kind}, ${mib(size.bytes)}: ${stream} (64 KiB pieces) ≥ ${t.goalRatio} × the per-16-KiB-chunk floor ` +
          "(bare WebCrypto loop, one AES-256-GCM call per chunk, same run)",
        `${fixed(r.streamVsFloor, 2)} (${mbps(ops[stream])} vs ${mbps(floor)} MiB/s, medians); best-of ` +
          `${fixed(r.streamVsFloorBest, 2)}; ${transformStream} ${fixed(r.transformStreamVsFloor, 2)}. ` +
          `Information: ${fixed(r.streamVsRaw, 2)} of single-shot AES-256-GCM (${mbps(ops["raw single-shot"])} ` +
          `MiB/s), the floor itself ${fixed(r.floorVsRaw, 2)}`,
        yes(r.streamVsFloor >= t.goalRatio),
      ]);
    }
  }
  if (m) {
    const first = m.runs[0];
    rows.push([
      `peak memory streaming ${mib(first.totalBytes)} through encrypt then decrypt ≤ ${mib(m.goalPeakBytes)}`,
      `${kib(first.accountedPeakBytes)} held by the pipeline at most (64 KiB pieces; worst variant, 1 MiB pieces, ` +
        `${kib(m.worstAccountedPeakBytes)})` +
        (m.rss
          ? `; but the workerd process's RSS rose ${mib(m.rss.growthBytes)} during the run (garbage collected late, ` +
            "see the memory section)"
          : ""),
      m.worstAccountedPeakBytes <= m.goalPeakBytes ? "yes, for the bytes held" : "**no**",
    ]);
  }
  if (o) {
    const a = o.alarmDriven;
    rows.push([
      `(no stated target) keys destroyed: adminOffboard over RPC, ${o.shape.keyVersions} key versions, ` +
        `${o.shape.sessions} sessions, ${o.shape.atoms.toLocaleString("en-US")} atoms`,
      `${num(a.offboardRpcMs)} ms (lifecycle.offboard alone ${clockMs(o.direct.offboardMs)})`,
      "—",
    ]);
    rows.push([
      `(no stated target) purge of ${o.shape.atoms.toLocaleString("en-US")} atoms and ${o.shape.documents} documents`,
      `${a.purgeMs} ms by the alarm (${a.purgeBatches} steps): ${a.atomsPerSecond.toLocaleString("en-US")} atoms/s; ` +
        `stepping purgeStep: ${o.direct.atomsPerSecond.toLocaleString("en-US")} atoms/s; R2: ` +
        `${o.direct.r2ObjectsPerSecondInDeletingCalls.toLocaleString("en-US")} objects/s in the step that deleted them`,
      "—",
    ]);
  }
  const run = parts.throughput?.run ?? parts.memory?.run ?? parts.offboarding?.run;
  return [
    ...table(rows),
    "",
    `${runLine(run)} Wall-clock figures on a shared 2-core VM with other jobs running: throughput is a lower bound ` +
      "for an idle machine, the ratios are measured interleaved in the same run, and workerd on a VM is not the edge.",
  ];
}

function mbps(op) {
  return op ? String(op.medianMiBps) : "?";
}

function throughputSection({ result: t, run }) {
  const out = ["## Crypto: throughput (MiB/s)", ""];
  out.push(
    "Median of the samples, best in parentheses; floor = median / median of the per-16-KiB-chunk floor (the goal's " +
      "baseline), single-shot = median / median of single-shot AES-256-GCM on the same buffer, both in the same " +
      `run. Streams are fed ${kib(t.pieceBytes)} pieces and drained by a reader.`,
  );
  out.push("");
  for (const kind of ["encrypt", "decrypt"]) {
    const names = [...new Set(t.sizes.flatMap((s) => Object.keys(s[kind].ops)))];
    const rows = [[kind, ...t.sizes.flatMap((s) => [`${mib(s.bytes)} MiB/s`, "floor", "single-shot"])]];
    for (const name of names) {
      rows.push([
        name,
        ...t.sizes.flatMap((s) => {
          const op = s[kind].ops[name];
          const raw = s[kind].ops["raw single-shot"];
          const floor = s[kind].ops[t.goalBaseline];
          if (!op) return ["—", "—", "—"];
          return [
            `${op.medianMiBps} (${op.bestMiBps})`,
            floor ? fixed(op.medianMiBps / floor.medianMiBps, 3) : "—",
            fixed(op.medianMiBps / raw.medianMiBps, 3),
          ];
        }),
      ]);
    }
    out.push(...table(rows), "");
  }
  const rows = [["Where a 16 KiB chunk's time goes (µs, medians)", ...t.sizes.map((s) => mib(s.bytes))]];
  const add = (label, f) => rows.push([label, ...t.sizes.map((s) => (s.model ? f(s.model) : "—"))]);
  add("crypto.subtle.encrypt on a 16 KiB chunk", (m) => num(m.rawCallOn16KiBUs));
  add("crypto.subtle.encrypt on a 16-byte input (fixed cost per call)", (m) => num(m.rawCallOn16BytesUs));
  add("16 KiB at the single-shot rate (the AES-GCM work itself)", (m) => num(m.gcmOn16KiBAtSingleShotRateUs));
  add("reading the 64 KiB-piece source alone, per chunk", (m) => num(m.sourcePerChunkUs));
  add("stream machinery alone (TransformStream, no crypto), per chunk", (m) => num(m.streamMachineryPerChunkUs));
  add("encryptingReadable, per chunk", (m) => num(m.readablePerChunkUs));
  add("encryptingStream (TransformStream), per chunk", (m) => num(m.transformStreamPerChunkUs));
  add("crypto.subtle.decrypt on a 16 KiB chunk (decryption floor)", (m) => num(m.decryptFloorPerChunkUs));
  add("decryptingReadable, per chunk", (m) => num(m.decryptingReadablePerChunkUs));
  out.push(...table(rows), "");
  out.push(
    "The measured streams were checked before timing (not timed): " +
      Object.entries(t.streamChecks ?? {})
        .map(([k, v]) => `${k}: ${v}`)
        .join("; ") +
      ".",
  );
  out.push("");
  out.push(
    `Wall time ${t.sizes.map((s) => `${mib(s.bytes)} ${s.wallMs} ms`).join(", ")}. Clock: advances during ` +
      `computation ${t.clock?.advancesDuringComputation}, smallest step ${t.clock?.smallestStepMs} ms. ${runLine(run)}`,
  );
  return out;
}

function memorySection({ result: m, run }) {
  const out = [`## Crypto: streaming memory (${mib(m.runs[0]?.totalBytes ?? 0)} through encrypt then decrypt)`, ""];
  const rows = [
    [
      "Variant",
      "max in flight",
      "… source→enc / enc→dec / dec→sink",
      "largest piece or chunk",
      "StreamStats enc / dec (buffered, largest output)",
      "accounted peak",
      "end to end",
    ],
  ];
  for (const r of m.runs) {
    const s = r.maxInFlightByStage;
    rows.push([
      r.variant,
      kib(r.maxInFlightBytes),
      `${kib(s.sourceToEncryptor)} / ${kib(s.encryptorToDecryptor)} / ${kib(s.decryptorToSink)}`,
      kib(r.largestPieceOrChunk),
      `${r.encryptStats.maxBufferedBytes}, ${r.encryptStats.maxEnqueuedBytes} / ${r.decryptStats.maxBufferedBytes}, ` +
        `${r.decryptStats.maxEnqueuedBytes} B`,
      kib(r.accountedPeakBytes),
      `${r.endToEndMiBps} MiB/s (${r.wallMs} ms)`,
    ]);
  }
  out.push(...table(rows), "");
  if (m.rss) {
    out.push(
      `Cross-check from outside: the workerd process's RSS (sampled every 100 ms from /proc by scripts/bench.mjs) ` +
        `was ${mib(m.rss.baselineBytes)} when the first variant started and peaked at ${mib(m.rss.peakBytes)} ` +
        `during it (+${mib(m.rss.growthBytes)}, ${m.rss.samples} samples over ${m.rss.durationMs} ms` +
        (m.rss.seriesMiB ? `; MiB above the start, every 100 ms: ${m.rss.seriesMiB.join(", ")}` : "") +
        "). RSS " +
        "includes garbage not yet collected, allocator caches and everything else in the process, so it is an upper " +
        "bound with a different meaning; it only runs first in a fresh process with `--suite=crypto`." +
        (m.rssAllVariants
          ? ` Over all ${m.runs.length} variants (${mib(m.runs.reduce((n, r) => n + r.totalBytes, 0))} streamed, ` +
            `${m.rssAllVariants.durationMs} ms) the RSS peaked ${mib(m.rssAllVariants.growthBytes)} above its start.`
          : ""),
    );
    out.push("");
  }
  out.push(runLine(run));
  return out;
}

function offboardingSection({ result: o, run }) {
  const a = o.alarmDriven;
  const d = o.direct;
  const seed = (x) =>
    `${x.keyVersions} key versions, ${x.sessions} sessions, ${x.atoms.toLocaleString("en-US")} atoms ` +
    `(${x.vectors.toLocaleString("en-US")} vectors, ${x.cacheRows.toLocaleString("en-US")} embedding-cache rows), ` +
    `${x.documents} documents (${mib(x.documentBytes)}) in ${x.r2Objects} R2 objects`;
  const out = ["## Offboarding: key destruction and purge", ""];
  const rows = [
    ["Measure", "Value"],
    ["tenant (each of the two)", seed(a.seed)],
    [
      "seeding (not part of offboarding)",
      `KnowledgeBase.add ${a.seed.atomsAddMs} ms; EncryptedBlobs.put of ${a.seed.documents} documents ` +
        `${a.seed.documentsPutMs} ms`,
    ],
    [
      "adminOffboard over the tenant object's RPC (keys + sessions destroyed, registry told, alarm set)",
      `${num(a.offboardRpcMs)} ms; ${a.keyVersionsDestroyed} key versions destroyed, ${a.sessionsEnded} sessions ended`,
    ],
    ["lifecycle.offboard alone, inside the object (second tenant)", `${clockMs(d.offboardMs)} (1 ms clock)`],
    [
      "purge by the object's alarm (offboard returned → receipt.completedAt)",
      `${a.purgeMs} ms, ${a.purgeBatches} steps: ${a.atomsPerSecond.toLocaleString("en-US")} atoms/s, ` +
        `${a.r2ObjectsPerSecond.toLocaleString("en-US")} R2 objects/s over the whole purge; purged ` +
        Object.entries(a.purged)
          .map(([k, v]) => `${k} ${v}`)
          .join(", "),
    ],
    [
      "purgeStep called back to back (second tenant)",
      `${d.purgeMs} ms, ${d.steps} steps (p50 ${num(d.stepP50Ms)} ms, max ${num(d.stepMaxMs)} ms): ` +
        `${d.atomsPerSecond.toLocaleString("en-US")} atoms/s`,
    ],
    [
      "… inside purgeStep, all steps: KnowledgeBase.purgeBatch / EncryptedBlobs.purgeBatch",
      `${d.knowledgeBasePurgeMs} ms (${d.atomsPerSecondInKnowledgeBasePurge.toLocaleString("en-US")} atoms/s) / ` +
        `${d.blobsPurgeMs} ms`,
    ],
    [
      "… EncryptedBlobs.purgeBatch calls that deleted objects (one list + one bulk delete of ≤ 1000 keys each)",
      `${(d.blobsPurgeDeletingCalls ?? []).map((c) => `${c.r2Objects} objects + ${c.documents} rows in ${num(c.ms)} ms`).join("; ")}` +
        ` → ${(d.r2ObjectsPerSecondInDeletingCalls ?? 0).toLocaleString("en-US")} R2 objects/s; every other step ` +
        `still lists the empty prefix (${num(d.blobsPurgeEmptyCallMeanMs)} ms each)`,
    ],
  ];
  out.push(...table(rows), "");
  const sweep = [
    [
      "key versions (50 sessions, no data)",
      "adminOffboard over RPC: mean / median / max ms",
      "lifecycle.offboard in the object: mean / max ms",
    ],
  ];
  for (const s of o.keyDestructionSweep) {
    sweep.push([
      String(s.keyVersions),
      `${num(s.rpcMsMean)} / ${num(s.rpcMsMedian)} / ${num(s.rpcMsMax)} (${s.tenants} tenants)`,
      `${num(s.directMsMean)} / ${num(s.directMsMax)} (${s.tenants} tenants)`,
    ]);
  }
  out.push(...table(sweep), "");
  out.push(runLine(run));
  return out;
}

function cryptoMethod() {
  return [
    "## Crypto: method",
    "",
    "- **Where**: inside tenant Durable Objects under local workerd (`runInDurableObject`), where documents are " +
      "encrypted in production (EncryptedBlobs in TenantContext). Keys and data are synthetic (xorshift32 bytes, " +
      "incompressible); the context string has the production shape.",
    "- **Throughput**: each operation processes the whole object; operations are interleaved per sample (a fresh " +
      "pseudo-random order each time) so load drift and garbage collection spread over all of them. With the 1 ms clock, " +
      "an operation runs back to back enough times for a sample to span about 30-50 ms, and the sample is the " +
      "total divided by the runs. The goal's baseline is the format's own floor: a bare loop of one " +
      "`crypto.subtle.encrypt`/`decrypt` call per 16 KiB chunk (per 16,400-byte sealed chunk when decrypting), " +
      "awaited in turn, on a pre-imported key, no stream and no key schedule. Single-shot AES-256-GCM over the " +
      "whole buffer is reported for information; it also pays for allocating the whole output. " +
      "Streams get the object as a ReadableStream of 64 KiB views (no copies) and are drained by a reader; the " +
      "decryption input pieces do not line up with the 16,400-byte encrypted chunks, as R2 bodies do not. The " +
      "breakdown rows (raw per-chunk calls, 16-byte calls, chunk-size floors, the seal/open loops, the transformer " +
      "driven without streams, the source drained alone, a TransformStream that only splits pieces into 16 KiB " +
      "views) locate the cost.",
    "- **Memory**: workerd exposes no heap or RSS figure to the Worker, so the pipeline is instrumented: a byte " +
      "counts as in flight from when the source creates it or a transformer enqueues it until the next stage has " +
      "finished with it (its transform() returned, or the reader got it). The maximum over the run bounds " +
      "everything the stream queues and the stages' inputs and outputs hold at once (a readable's source piece counts " +
      "until it reads the next one); the coders' fixed buffers (16 KiB + 16,400 B + header, allocated whole), " +
      "WebCrypto's transient copy of the chunk in flight (input + output) and, for the readables, a full batch of " +
      "16 coded chunks per stage are added to get the accounted peak. The sink checks every byte against the " +
      "template, so nothing is skipped. Not counted: garbage not yet collected (the engine decides when to " +
      "collect it), engine overhead per object. The slow-consumer variant yields to the event loop after every MiB " +
      "read, to show backpressure holds; the 1 MiB-piece variant shows the bound scales with the source's piece size.",
    "- **Offboarding**: two identical tenants seeded inside their objects (key versions by TenantKeyring.rotate, " +
      "session rows, atoms by KnowledgeBase.add in batches of 100, documents by EncryptedBlobs.put to the local R2 " +
      "simulator). One is offboarded through `stub.adminOffboard` (RPC from the test worker, timed there) and purged " +
      "by its own alarm, which miniflare fires on its own (10 ms between steps as in production); the purge time is " +
      "receipt.completedAt minus the moment adminOffboard returned. The other runs lifecycle.offboard and then " +
      "purgeStep back to back inside its object, with KnowledgeBase.purgeBatch and EncryptedBlobs.purgeBatch " +
      "wrapped by timers. R2 is miniflare's local simulator, so R2 rates say little about production R2.",
  ];
}

/** The edge suite (scripts/bench-edge.mjs): this server's request path against the stateless template. */
function edgeReport(edge, previous) {
  const start = previous.indexOf(EDGE_START);
  const end = previous.indexOf(EDGE_END);
  const notes =
    start >= 0 && end > start
      ? previous.slice(start + EDGE_START.length, end).trim()
      : "_Hand-written analysis of the edge suite; kept when the file is regenerated._";
  const out = ["# Benchmarks: request path against the template (edge)", ""];
  out.push(
    "`npm run bench -- --suite=edge` (scripts/bench-edge.mjs, bench/edge/): Cloudflare's remote-MCP template shape " +
      "(stateless `createMcpHandler`, no auth; `whoami`, and `search` over the same 1,000 atoms held in memory), the same behind a bare Durable Object hop, and this " +
      "server (verified token, tenant object), each under its own `wrangler dev` on loopback, measured in " +
      "interleaved rounds. Ratios are per round against the template of the same round, medians over rounds " +
      "(range in brackets); p50 ratio ≤ 1.0 and throughput ratio ≥ 1.0 is the goal, 1.25 / 0.8 the floor.",
  );
  out.push("");
  if (edge) {
    const r = edge.result;
    out.push(
      `Measured ${edge.run.finishedAt.slice(0, 16).replace("T", " ")} UTC at commit ${edge.run.source.commit}` +
        `${edge.run.source.srcChangedFiles ? " (src/ modified)" : ""} on ${edge.run.machine.cpus} cores, load ` +
        `average mean ${r.load.mean}, max ${r.load.max} (the machine was shared with other work: absolute figures ` +
        `are inflated; trust the ratios). ${r.rounds} rounds; per round and target ${r.sequentialPerRound} ` +
        `sequential requests and ${r.concurrentPerRound} with ${r.inFlight} in flight.`,
    );
    out.push("");
    const rows = [["request", "target", "p50 (ms)", "p95 (ms)", "req/s at 16", "p50 ratio", "throughput ratio"]];
    for (const [op, byTarget] of Object.entries(r.ops)) {
      for (const [name, s] of Object.entries(byTarget)) {
        rows.push([
          op,
          name,
          num(s.p50Ms),
          num(s.p95Ms),
          s.rps,
          name === "template" ? "1" : `${s.p50Ratio} [${s.p50RatioRange.join("–")}]`,
          name === "template" ? "1" : `${s.rpsRatio} [${s.rpsRatioRange.join("–")}]`,
        ]);
      }
    }
    out.push(...table(rows));
    out.push("");
    out.push(
      `First request after a restart (every object evicted, fresh isolate), ms: ` +
        Object.entries(r.cold)
          .map(([name, c]) => `${name} ${c.firstRequestMs.join(", ")}`)
          .join("; ") +
        `; server / template (medians) ${r.coldRatio}×. First request of a never-seen tenant (creates its data ` +
        `key), warm isolate: ${r.firstRequestNewTenantMs.join(", ")} ms.`,
    );
  } else out.push("No edge result yet: run `npm run bench -- --suite=edge`.");
  out.push("");
  out.push(EDGE_START);
  out.push(notes);
  out.push(EDGE_END);
  return out;
}

/** A single reading of the 1 ms clock. */
function clockMs(value) {
  return value < 1 ? "< 1 ms" : `${num(value)} ms`;
}

function kib(bytes) {
  return bytes >= 10 * 2 ** 20 ? mib(bytes) : `${Math.round(bytes / 1024).toLocaleString("en-US")} KiB`;
}

// ---------------------------------------------------------------------------------------------------------------

function table(rows) {
  const [head, ...body] = rows;
  return [
    `| ${head.join(" | ")} |`,
    `|${head.map(() => "---").join("|")}|`,
    ...body.map((row) => `| ${row.map((c) => String(c).replaceAll("|", "\\|")).join(" | ")} |`),
  ];
}

/** The verdict uses the worse of the repeated and the single-shot p50. */
function fits(count) {
  return count === 1 ? "1 such object fits" : `${count} such objects fit`;
}

function latencyCell(s) {
  const single =
    s.singleShotP50Ms === undefined
      ? `single-shot mean ${ms(s.singleShotMeanMs)}`
      : `single-shot p50 ${ms(s.singleShotP50Ms)} / p95 ${ms(s.singleShotP95Ms)}`;
  return `${ms(s.p50Ms)} (p95 ${ms(s.p95Ms)}); ${single}`;
}

function shortlist(d) {
  if (!d) return "n/a";
  return (
    `int8 ranking alone (no re-rank) recall@10 ${d.int8OnlyRecallAt10}; exact top 10 inside the int8 top 20: ` +
    `${d.coverageAt20}, top 30: ${d.coverageAt30 ?? "n/a"}, top 40: ${d.coverageAt40}; results identical to the full int8 scan re-ranking its top 40: ` +
    `${d.sameAsFullInt8Scan ?? "not measured"}`
  );
}

function loadOf(entry) {
  return `${entry.run.loadAverage1m.mean} / ${entry.run.loadAverage1m.max}`;
}

function ms(value) {
  return `${num(value)} ms`;
}

/** Milliseconds with about three significant digits. */
function num(value) {
  if (typeof value !== "number" || !Number.isFinite(value)) return String(value);
  const digits = Math.abs(value) >= 100 ? 0 : Math.abs(value) >= 10 ? 1 : Math.abs(value) >= 1 ? 2 : 3;
  return String(Number(value.toFixed(digits)));
}

function mib(bytes) {
  return `${(bytes / 2 ** 20).toFixed(1)} MiB`;
}

function pct(share) {
  return `${Math.round(share * 1000) / 10}%`;
}

function fixed(value, digits) {
  return Number(value).toFixed(digits);
}

function fmt1(value) {
  return Math.round(value * 10) / 10;
}

function yes(ok) {
  return ok ? "yes" : "**no**";
}

// Collects the e2e results, prints the summary and writes .e2e/summary.json.
import { mkdirSync, writeFileSync } from "node:fs";
import { dirname } from "node:path";

export class Report {
  results = [];
  started = Date.now();
  closed = false;

  close() {
    this.closed = true;
  }

  /** Runs `fn` as one check; it passes if it resolves within the time limit. Its value is the detail shown. */
  async check(group, name, fn, { timeoutMs = 60_000 } = {}) {
    const started = Date.now();
    let timer;
    try {
      const timeout = new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Error(`timed out after ${timeoutMs / 1000} s`)), timeoutMs);
      });
      const value = await Promise.race([fn(), timeout]);
      this.add({ group, name, status: "passed", detail: typeof value === "string" ? value : undefined, started });
      return value;
    } catch (error) {
      this.add({ group, name, status: "failed", detail: error?.message ?? String(error), started });
      return undefined;
    } finally {
      clearTimeout(timer);
    }
  }

  add({ group, name, status, detail, started = Date.now(), extra }) {
    if (this.closed) return;
    this.results.push({ group, name, status, detail, ms: Date.now() - started, ...extra });
  }

  skip(group, name, reason) {
    if (this.closed) return;
    this.results.push({ group, name, status: "skipped", detail: reason });
  }

  counts() {
    const count = (status) => this.results.filter((result) => result.status === status).length;
    return { passed: count("passed"), failed: count("failed"), xfail: count("xfail"), skipped: count("skipped") };
  }

  print() {
    const mark = { passed: "PASS", failed: "FAIL", xfail: "XFAIL", skipped: "skip" };
    let group = null;
    console.log("\n==== e2e summary ====");
    for (const result of this.results) {
      if (result.group !== group) {
        group = result.group;
        console.log(`\n[${group}]`);
      }
      const time = result.ms === undefined ? "" : ` (${(result.ms / 1000).toFixed(1)} s)`;
      console.log(`  ${mark[result.status]}  ${result.name}${time}${result.detail ? ` — ${result.detail}` : ""}`);
    }
    const { passed, failed, xfail, skipped } = this.counts();
    const seconds = ((Date.now() - this.started) / 1000).toFixed(1);
    console.log(`\n${xfail} expected failure(s), ${skipped} skipped, ${seconds} s`);
    // The last line has a fixed form for CI log scrapers.
    console.log(`${passed} passed, ${failed} failed`);
  }

  write(file, meta) {
    mkdirSync(dirname(file), { recursive: true });
    const summary = {
      ok: this.counts().failed === 0,
      ...this.counts(),
      durationMs: Date.now() - this.started,
      finishedAt: new Date().toISOString(),
      ...meta,
      results: this.results,
    };
    writeFileSync(file, `${JSON.stringify(summary, null, 2)}\n`);
  }
}

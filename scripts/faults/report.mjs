// Results of the fault suite: one line per check as it happens (quiet, greppable), the final line `N passed,
// M failed` alone, and .faults/summary.json with the figures. Built on the e2e Report (same summary schema).
import { Report } from "../e2e/report.mjs";

export class FaultReport extends Report {
  add(result) {
    if (this.closed) return;
    super.add(result);
    const last = this.results.at(-1);
    const mark = { passed: "PASS", failed: "FAIL", skipped: "skip" }[last.status] ?? last.status;
    const detail = last.detail ? ` — ${last.detail}` : "";
    console.log(`${mark}  [${last.group}] ${last.name} (${(last.ms / 1000).toFixed(1)} s)${detail}`);
  }

  /** A check whose verdict is computed by the caller: `problems` empty means passed. */
  verdict(group, name, problems, okDetail, started = Date.now()) {
    const failed = problems.length > 0;
    this.add({
      group,
      name,
      status: failed ? "failed" : "passed",
      detail: failed
        ? problems.slice(0, 6).join("; ") + (problems.length > 6 ? `; … ${problems.length} in all` : "")
        : okDetail,
      started,
    });
    return !failed;
  }

  print() {
    const { passed, failed } = this.counts();
    const seconds = ((Date.now() - this.started) / 1000).toFixed(1);
    console.log(`\nfaults: ${seconds} s`);
    console.log(`${passed} passed, ${failed} failed`);
  }
}

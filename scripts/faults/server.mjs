// The server under test: one `wrangler dev` at a time on a fixed loopback port, persisting to one folder. `crash()`
// SIGKILLs the whole process group of the wrangler child (wrangler and both workerd processes; none of them gets
// to flush or clean up), waits until every member of the group is gone, and `start()` boots a new wrangler dev on
// the same --persist-to state. Each start gets a fresh inspector port (the killed one may linger in TIME_WAIT).
import { readdirSync, readFileSync } from "node:fs";
import { freePort } from "../e2e/ports.mjs";
import { startWranglerDev, waitForHealthy } from "../e2e/wrangler.mjs";

const HEALTHY_TIMEOUT_MS = 120_000;
const GROUP_EXIT_TIMEOUT_MS = 15_000;

export class Server {
  #options;
  #handle = null;
  starts = 0;
  kills = 0;
  restartMs = [];
  /** The DevTools port of the current start (the isolate's heap is read through it). */
  inspectorPort = null;

  /** options: {root, workDir, port, vars, logFile} */
  constructor(options) {
    this.#options = options;
    this.base = `http://127.0.0.1:${options.port}`;
  }

  get pid() {
    return this.#handle?.pid ?? null;
  }

  async start() {
    const started = Date.now();
    const inspectorPort = await freePort([this.#options.port]);
    this.inspectorPort = inspectorPort;
    this.#handle = startWranglerDev({ ...this.#options, inspectorPort });
    this.starts++;
    await waitForHealthy(this.base, this.#handle, HEALTHY_TIMEOUT_MS);
    this.restartMs.push(Date.now() - started);
  }

  /** kill -9 of the group; resolves once no process of the group is left. */
  async crash() {
    const handle = this.#handle;
    if (!handle) return;
    this.#handle = null;
    this.kills++;
    signalGroup(handle.pid, "SIGKILL");
    await handle.exited;
    const deadline = Date.now() + GROUP_EXIT_TIMEOUT_MS;
    while (groupAlive(handle.pid)) {
      if (Date.now() > deadline) throw new Error(`process group ${handle.pid} still alive after SIGKILL`);
      signalGroup(handle.pid, "SIGKILL");
      await sleep(50);
    }
    await handle.stop(); // deregisters it from the cleanup list (the group is already gone)
  }

  async restart() {
    await this.crash();
    await this.start();
  }

  async stop() {
    const handle = this.#handle;
    this.#handle = null;
    await handle?.stop();
  }

  /** Resident memory (VmRSS, kB) of every workerd process in the wrangler group. */
  workerdRss() {
    const pgid = this.pid;
    if (!pgid) return [];
    const found = [];
    for (const name of readdirSync("/proc")) {
      if (!/^\d+$/.test(name)) continue;
      try {
        const stat = readFileSync(`/proc/${name}/stat`, "utf8");
        // comm is in parentheses and may contain spaces; the fields after it are space-separated.
        const comm = stat.slice(stat.indexOf("(") + 1, stat.lastIndexOf(")"));
        const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
        if (Number(fields[2]) !== pgid || !comm.includes("workerd")) continue;
        const status = readFileSync(`/proc/${name}/status`, "utf8");
        const rss = Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? 0);
        // wrangler dev runs the Worker in the workerd started with an inspector address; the other one hosts
        // wrangler's own proxy workers (no project code runs there).
        const cmdline = readFileSync(`/proc/${name}/cmdline`, "utf8");
        const role = cmdline.includes("--inspector-addr") ? "worker" : "wrangler-proxy";
        // Open descriptors: wrangler's proxy leaks sockets under load (BENCHMARKS.md, memory).
        let fds = null;
        try {
          fds = readdirSync(`/proc/${name}/fd`).length;
        } catch {
          // not readable: left out
        }
        found.push({ pid: Number(name), role, rssKb: rss, fds });
      } catch {
        // the process went away between readdir and read
      }
    }
    return found.sort((a, b) => a.pid - b.pid);
  }
}

function signalGroup(pid, signal) {
  try {
    process.kill(-pid, signal);
  } catch {
    // ESRCH: already gone
  }
}

function groupAlive(pid) {
  try {
    process.kill(-pid, 0);
    return true;
  } catch (error) {
    return error.code === "EPERM";
  }
}

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// Child processes of the e2e run. Each child runs in its own process group (detached) so that stopping it also
// stops what it started (wrangler starts workerd and esbuild); every child is registered so that it is stopped on
// success, failure, timeout and signals alike. Only groups started here are ever signalled.
import { spawn } from "node:child_process";
import { closeSync, openSync } from "node:fs";

const running = new Map();

/**
 * Starts `command args` with stdout and stderr appended to `logFile` (a file descriptor, not a pipe: output is on
 * disk even if this process dies, and a chatty child can never block on a full pipe).
 */
export function startProcess(command, args, { logFile, env = process.env, cwd = process.cwd() }) {
  const fd = openSync(logFile, "a");
  let child;
  try {
    child = spawn(command, args, { cwd, env, detached: true, stdio: ["ignore", fd, fd] });
  } finally {
    closeSync(fd);
  }
  const exited = new Promise((resolve) => {
    child.once("error", (error) => resolve({ code: null, signal: null, error }));
    child.once("exit", (code, signal) => resolve({ code, signal }));
  });
  const handle = { pid: child.pid, exited, stop: () => stopGroup(handle) };
  if (child.pid !== undefined) running.set(child.pid, handle);
  return handle;
}

/** SIGTERM to the group, SIGKILL after a grace period, and SIGKILL again for stragglers the leader left behind. */
async function stopGroup(handle, graceMs = 5000) {
  if (!running.has(handle.pid)) return;
  signalGroup(handle.pid, "SIGTERM");
  const timer = new Promise((resolve) => setTimeout(resolve, graceMs).unref());
  await Promise.race([handle.exited, timer]);
  signalGroup(handle.pid, "SIGKILL");
  running.delete(handle.pid);
}

function signalGroup(pid, signal) {
  try {
    process.kill(-pid, signal);
  } catch {
    // ESRCH: the group is already gone, which is the goal.
  }
}

export async function stopAll() {
  await Promise.all([...running.values()].map((handle) => handle.stop()));
}

/**
 * Last-resort cleanup: on signals, stop the children and exit; on any exit (including an uncaught error), SIGKILL
 * whatever is still registered, synchronously, because nothing asynchronous runs in an `exit` handler.
 */
export function installCleanupHandlers(onSignal) {
  for (const signal of ["SIGINT", "SIGTERM", "SIGHUP"]) {
    process.once(signal, async () => {
      console.error(`\ne2e: ${signal}, stopping child processes`);
      await onSignal?.(signal);
      await stopAll();
      process.exit(130);
    });
  }
  process.on("exit", () => {
    for (const pid of running.keys()) signalGroup(pid, "SIGKILL");
  });
}

/**
 * The shape every long-running check script shares (e2e, faults, demo): `main` bounded by `timeoutMs`, cleanup on
 * signals, and one exit path through `finish(code)`. `fail(name, detail)` records why the run failed (a signal,
 * the time limit, or an error thrown by `main`) in the script's own report.
 */
export async function runBounded(main, { timeoutMs, fail, finish }) {
  installCleanupHandlers((signal) => {
    fail(`interrupted by ${signal}`, signal);
    return finish(130);
  });
  const hardTimeout = setTimeout(() => {
    fail(`overall time limit (${timeoutMs / 60_000} min)`, "timed out");
    finish(1);
  }, timeoutMs);
  try {
    await main();
    clearTimeout(hardTimeout);
    await finish(0);
  } catch (error) {
    clearTimeout(hardTimeout);
    fail("harness error", error?.stack ?? String(error));
    await finish(1);
  }
}

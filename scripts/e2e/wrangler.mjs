// Starts `wrangler dev` for the e2e run and waits until it answers GET /healthz.
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { startProcess } from "./processes.mjs";

/**
 * `vars` become `--var KEY:VALUE` (wrangler splits at the first colon, so values may contain colons). `--env-file`
 * points at an empty file: with an explicit env file wrangler does not read the project's .dev.vars at all, so a
 * developer's local .dev.vars can neither interfere nor be required (wrangler.toml [vars] still apply, `--var` wins).
 * State persists to `persistTo` (default `<workDir>/state`).
 */
export function startWranglerDev({ root, workDir, port, inspectorPort, vars, logFile, persistTo }) {
  const emptyEnvFile = join(workDir, "empty.env");
  writeFileSync(emptyEnvFile, "");
  const args = [
    join(root, "node_modules/wrangler/bin/wrangler.js"),
    "dev",
    "--ip",
    "127.0.0.1",
    "--port",
    String(port),
    // Fixed default 9229 would collide with any other wrangler dev or debugger on the machine.
    "--inspector-port",
    String(inspectorPort),
    "--persist-to",
    persistTo ?? join(workDir, "state"),
    "--show-interactive-dev-session=false",
    "--env-file",
    emptyEnvFile,
    ...Object.entries(vars).flatMap(([key, value]) => ["--var", `${key}:${value}`]),
  ];
  const env = {
    ...process.env,
    // No telemetry attempts (CI has no network) and wrangler's debug logs stay out of the home directory.
    WRANGLER_SEND_METRICS: "false",
    WRANGLER_LOG_PATH: join(workDir, "wrangler-logs"),
    NO_COLOR: "1",
  };
  // Would make wrangler read the whole process environment into the Worker's env.
  delete env.CLOUDFLARE_INCLUDE_PROCESS_ENV;
  return startProcess(process.execPath, args, { logFile, env, cwd: root });
}

/** Polls /healthz until it answers 200 {"ok":true}; fails early if wrangler exits. */
export async function waitForHealthy(baseUrl, wrangler, timeoutMs) {
  const deadline = Date.now() + timeoutMs;
  let exit = null;
  wrangler.exited.then((result) => {
    exit = result;
  });
  let lastError = "no answer yet";
  while (Date.now() < deadline) {
    if (exit) throw new Error(`wrangler dev exited early (code ${exit.code}, signal ${exit.signal})`);
    try {
      const response = await fetch(`${baseUrl}/healthz`, { signal: AbortSignal.timeout(5000) });
      const body = await response.json().catch(() => null);
      if (response.status === 200 && body?.ok === true) return;
      lastError = `HTTP ${response.status}`;
    } catch (error) {
      lastError = error.cause?.code ?? error.message;
    }
    await new Promise((resolve) => setTimeout(resolve, 300));
  }
  throw new Error(`wrangler dev not healthy after ${timeoutMs / 1000} s (${lastError})`);
}

/** The last lines of a log file, for failure reports. */
export function tail(file, lines = 40) {
  try {
    return readFileSync(file, "utf8").trimEnd().split("\n").slice(-lines).join("\n");
  } catch {
    return "(no log)";
  }
}

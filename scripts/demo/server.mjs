// The demo's own server: wrangler's dev engine (host.mjs) on a free loopback port, persisted to a throwaway folder.
// `stop()` ends it gracefully (so SQLite files are closed), `start(vars)` boots it again on the same state, with
// changed variables if given (a master key epoch rotation is a restart with new secrets).
import { freePort } from "../e2e/ports.mjs";
import { startProcess } from "../e2e/processes.mjs";
import { waitForHealthy } from "../e2e/wrangler.mjs";

const HEALTHY_TIMEOUT_MS = 120_000;

export class DemoServer {
  #options;
  #handle = null;
  starts = 0;
  startMs = [];

  /** options: {root, workDir, persist, port, recorderPort, vars, logFile, config} */
  constructor(options) {
    this.#options = { ...options };
    this.base = `http://127.0.0.1:${options.port}`;
  }

  get vars() {
    return { ...this.#options.vars };
  }

  async start(vars = this.#options.vars) {
    this.#options.vars = vars;
    const started = Date.now();
    const inspectorPort = await freePort([this.#options.port]);
    const { root, workDir, persist, port, recorderPort, config, logFile } = this.#options;
    const env = {
      ...process.env,
      DEMO_HOST: JSON.stringify({ root, workDir, persist, port, inspectorPort, recorderPort, config, vars }),
      WRANGLER_SEND_METRICS: "false",
      WRANGLER_LOG_PATH: `${workDir}/wrangler-logs`,
      NO_COLOR: "1",
    };
    delete env.CLOUDFLARE_INCLUDE_PROCESS_ENV;
    this.#handle = startProcess(process.execPath, [new URL("./host.mjs", import.meta.url).pathname], {
      logFile,
      env,
      cwd: root,
    });
    this.starts++;
    await waitForHealthy(this.base, this.#handle, HEALTHY_TIMEOUT_MS);
    this.startMs.push(Date.now() - started);
  }

  async stop() {
    const handle = this.#handle;
    this.#handle = null;
    await handle?.stop();
  }
}

// One kill point: run a workload, SIGKILL the server at a seeded moment, let the workload notice (its requests
// fail), boot a new server on the same state. The workload gets a `stop` flag and must end once a request fails
// or the flag is set; it must never treat a failed or cut-off request as acknowledged.
import { sleep } from "./server.mjs";

const WORKLOAD_END_TIMEOUT_MS = 70_000;

export async function killDuring(ctx, { scenario, round, delayMs, workload, note = {} }) {
  const stop = { stopped: false };
  const running = Promise.resolve().then(() => workload(stop));
  await sleep(delayMs);
  const killedAt = Date.now();
  await ctx.server.crash();
  stop.stopped = true;
  let timer;
  const outcome = await Promise.race([
    running.then(
      (value) => ({ value }),
      (error) => ({ error }),
    ),
    new Promise((resolve) => {
      timer = setTimeout(
        () => resolve({ error: new Error("workload did not end after the kill") }),
        WORKLOAD_END_TIMEOUT_MS,
      );
    }),
  ]);
  clearTimeout(timer);
  await ctx.server.start();
  ctx.figures.killPoints.push({ scenario, round, delayMs, restartMs: Date.now() - killedAt, ...note });
  if (outcome.error) throw outcome.error;
  return outcome.value;
}

import { defineConfig } from "vitest/config";
import base from "./vitest.config.js";

// `npm run bench` (scripts/bench.mjs) runs this config: the same Workers runtime, wrangler config, bindings and
// Durable Objects as the test suite (vitest.config.ts, reused as is), but only bench/**/*.bench.test.ts, one file
// at a time, with long timeouts. Never part of `npm test`. BENCH_SIZES / BENCH_QUERIES (set by scripts/bench.mjs)
// reach the bench through vitest's provide/inject.
const sizes = (process.env.BENCH_SIZES ?? "1000,10000,100000")
  .split(",")
  .map(Number)
  .filter((n: number) => Number.isInteger(n) && n > 0);
const queries = Number(process.env.BENCH_QUERIES ?? 200);

export default defineConfig({
  ...base,
  test: {
    ...base.test,
    include: ["bench/**/*.bench.test.ts"],
    testTimeout: 1_800_000,
    hookTimeout: 600_000,
    fileParallelism: false,
    // The results are console lines of passing tests (BENCH_RESULT): the test config's "passed-only" would drop them.
    silent: false,
    provide: { benchSizes: sizes, benchQueries: queries },
  },
});

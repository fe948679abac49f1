// The Worker isolate's V8 heap over the DevTools protocol that `wrangler dev --inspector-port N` serves. This splits
// the project's share of memory (JS objects reachable in the isolate: tenant objects' caches, sessions, buffers)
// from the rest of the workerd process (engine, allocator, SQLite page caches, wasm memory).
// The inspector proxy refuses a WebSocket without an Origin header, so one is sent (Node's WebSocket takes headers).

import { writeFileSync } from "node:fs";

const CALL_TIMEOUT_MS = 180_000;

/**
 * Runs `fn(send)` on one inspector connection; `send(method, params)` resolves with the result or rejects.
 * `onEvent(message)` sees the protocol's events (heap snapshot chunks among them).
 */
export async function withInspector(port, fn, onEvent = () => {}) {
  const ws = new WebSocket(`ws://127.0.0.1:${port}/ws`, { headers: { origin: `http://127.0.0.1:${port}` } });
  const pending = new Map();
  let next = 1;
  ws.onmessage = (event) => {
    const message = JSON.parse(String(event.data));
    const waiter = pending.get(message.id);
    if (!waiter) {
      if (message.method) onEvent(message); // events; the proxy's own traffic has ids not ours
      return;
    }
    pending.delete(message.id);
    if (message.error) waiter.reject(new Error(`${message.error.message}`));
    else waiter.resolve(message.result);
  };
  await new Promise((resolve, reject) => {
    ws.onopen = resolve;
    ws.onerror = () => reject(new Error(`inspector on port ${port} refused the connection`));
  });
  const send = (method, params = {}) =>
    new Promise((resolve, reject) => {
      const id = next++;
      const timer = setTimeout(() => {
        pending.delete(id);
        reject(new Error(`inspector: ${method} not answered in ${CALL_TIMEOUT_MS} ms`));
      }, CALL_TIMEOUT_MS);
      pending.set(id, {
        resolve: (value) => {
          clearTimeout(timer);
          resolve(value);
        },
        reject: (error) => {
          clearTimeout(timer);
          reject(error);
        },
      });
      ws.send(JSON.stringify({ id, method, params }));
    });
  try {
    return await fn(send);
  } finally {
    ws.close();
  }
}

/**
 * Heap figures after a full collection. workerd does not answer HeapProfiler.collectGarbage, but V8 collects before
 * it takes a heap snapshot, so a snapshot is the collection (written to `snapshotFile` when given, for DevTools'
 * Memory tab; discarded otherwise). Sizes in bytes.
 */
export async function isolateHeap(port, { snapshotFile } = {}) {
  const chunks = [];
  const onEvent = (message) => {
    if (snapshotFile && message.method === "HeapProfiler.addHeapSnapshotChunk") chunks.push(message.params.chunk);
  };
  const usage = await withInspector(
    port,
    async (send) => {
      await send("HeapProfiler.enable");
      await send("HeapProfiler.takeHeapSnapshot", { reportProgress: false });
      return send("Runtime.getHeapUsage");
    },
    onEvent,
  );
  if (snapshotFile) writeFileSync(snapshotFile, chunks.join(""));
  return {
    usedBytes: usage.usedSize,
    totalBytes: usage.totalSize,
    embedderBytes: usage.embedderHeapUsedSize ?? null,
    backingStoreBytes: usage.backingStorageSize ?? null,
  };
}

/**
 * Lets the event loop run other work (other requests of this object, and other objects sharing the isolate and
 * thread) between slices of CPU-bound work. A macrotask (timer), not a microtask: an awaited resolved promise does
 * not give the thread away. Time does not advance inside a slice in workerd (Date.now() is frozen between I/O
 * events), so callers bound their slices by work done (items, characters), not by measured time.
 */
export function yieldToEventLoop(): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, 0));
}

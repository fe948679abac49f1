// The 1,000 atoms `tools/call search` runs over in `npm run bench -- --suite=edge`: the same deterministic texts
// are stored in this server's tenant through add_atoms (scripts/bench-edge.mjs) and held in memory by the template
// worker (bench/edge/template-worker.ts). Plain JS so that both Node and the worker bundle import it.
export const SEARCH_ATOMS = 1_000;
export const SEARCH_QUERY = "quarterly tenant boundary audit of sealed vector pages";

const VOCABULARY = (() => {
  const syllables = ["ka", "lo", "mi", "ren", "tor", "vi", "sa", "dun", "pel", "qua", "ter", "nox", "bri", "el"];
  const words = ["quarterly", "tenant", "boundary", "audit", "sealed", "vector", "pages"];
  for (let i = 0; words.length < 600; i++) {
    words.push(syllables[i % 14] + syllables[(i * 7 + 3) % 14] + (i % 5 ? syllables[(i * 11 + 5) % 14] : ""));
  }
  return words;
})();

/** mulberry32: a small seeded PRNG, so atom i is the same text everywhere. */
function prng(seed) {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Atom i: 30-60 words; every 50th mentions the query's words. */
export function searchAtom(i) {
  const random = prng(1_000_003 * (i + 1));
  const count = 30 + Math.floor(random() * 30);
  const words = [];
  for (let w = 0; w < count; w++) words.push(VOCABULARY[Math.floor(random() ** 2 * VOCABULARY.length)]);
  if (i % 50 === 0) words.push(...SEARCH_QUERY.split(" "));
  return { id: `edge-${i}`, text: words.join(" "), tags: [`t${i % 16}`], source: `bench/${i % 8}` };
}

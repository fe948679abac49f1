// Seeded randomness for the fault suite: every kill moment, batch size and generated text comes from one seed, so a
// run is replayed with `--seed N` (the server's own timing still varies; the schedule of the harness does not).

/** mulberry32: small, fast, good enough for test schedules (not for anything secret). */
export function createRng(seed) {
  let state = seed >>> 0;
  const next = () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const int = (min, max) => min + Math.floor(next() * (max - min + 1));
  return {
    next,
    int,
    pick: (items) => items[int(0, items.length - 1)],
    /** A child generator: scenarios draw from their own streams, so running one alone replays its schedule. */
    fork: (label) => createRng(hash32(`${seed}:${label}`)),
  };
}

export function hash32(text) {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) h = Math.imul(h ^ text.charCodeAt(i), 0x01000193) >>> 0;
  return h;
}

const WORDS = [
  "custody",
  "ledger",
  "granite",
  "harbour",
  "quorum",
  "lantern",
  "meridian",
  "saffron",
  "tundra",
  "vector",
  "orchard",
  "cobalt",
  "estuary",
  "falcon",
  "juniper",
  "kestrel",
  "mosaic",
  "nebula",
  "obsidian",
  "prism",
  "zürich",
  "café",
  "naïve",
  "東京",
  "données",
  "ðæ",
  "—",
  "✓",
];

/** Deterministic text of about `words` words, with non-ASCII characters so byte-exactness is tested, not just length. */
export function words(rng, count) {
  const out = [];
  for (let i = 0; i < count; i++) out.push(rng.pick(WORDS));
  return out.join(" ");
}

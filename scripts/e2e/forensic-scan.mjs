// Detectors of the forensics e2e check (scripts/e2e/forensics.mjs): what an attacker holding a copy of the storage
// folder would look for. Pure functions over byte buffers; no I/O except `walkFiles`. Every loop is bounded by the
// buffer length (and the number of hits kept is capped).
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { publicEmbed } from "./public-embedder.mjs";

const MAX_HITS = 8;
// A stored hash vector of an atom has about a hundred non-zero components (words, bigrams, trigrams).
const MIN_COMPONENTS = 16;

/** Every regular file under `dir` (recursively), sorted, with its bytes. */
export function walkFiles(dir) {
  const out = [];
  const visit = (path) => {
    for (const entry of readdirSync(path, { withFileTypes: true }).sort((a, b) => a.name.localeCompare(b.name))) {
      const full = join(path, entry.name);
      if (entry.isDirectory()) visit(full);
      else if (entry.isFile()) out.push({ path: full, bytes: readFileSync(full) });
    }
  };
  visit(dir);
  return out;
}

/**
 * The byte forms a secret string can take in a file: UTF-8, UTF-16 (both byte orders), and base64 at the three
 * alignments (the inner characters only, which do not depend on the neighbouring bytes).
 */
export function needleForms(text) {
  const utf8 = Buffer.from(text, "utf8");
  const forms = [
    { form: "utf-8", bytes: utf8 },
    { form: "utf-16le", bytes: Buffer.from(text, "utf16le") },
    { form: "utf-16be", bytes: Buffer.from(text, "utf16le").swap16() },
  ];
  for (let shift = 0; shift < 3; shift++) {
    // Base64 character j covers input bits [6j, 6j + 6): keep those inside the needle's bytes.
    const encoded = Buffer.concat([Buffer.alloc(shift), utf8]).toString("base64");
    const inner = encoded.slice(Math.ceil((8 * shift) / 6), Math.floor((8 * (shift + utf8.length)) / 6));
    if (inner.length >= 6) forms.push({ form: `base64/${shift}`, bytes: Buffer.from(inner, "ascii") });
  }
  return forms;
}

/** Offsets of `needle` in `haystack` (at most MAX_HITS). */
export function findAll(haystack, needle) {
  const hits = [];
  let at = haystack.indexOf(needle);
  while (at >= 0 && hits.length < MAX_HITS) {
    hits.push(at);
    at = haystack.indexOf(needle, at + 1);
  }
  return hits;
}

/**
 * Pieces of a stored blob to search for. A blob larger than a SQLite page sits in overflow pages, each starting
 * with a 4-byte pointer, so a long blob is searched as non-overlapping `size`-byte pieces. A piece must be
 * specific (at least 4 distinct byte values and a quarter of its bytes non-zero): the zero runs of a sparse vector
 * would match unrelated zero-filled pages. Pieces are taken greedily, sliding one byte past an unspecific one.
 */
export function chunksOf(bytes, size = 32) {
  const out = [];
  const buffer = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let at = 0;
  while (at + size <= buffer.length) {
    const chunk = buffer.subarray(at, at + size);
    let nonZero = 0;
    for (const byte of chunk) if (byte !== 0) nonZero++;
    if (nonZero >= size / 4 && new Set(chunk).size >= 4) {
      out.push({ at, bytes: chunk });
      at += size;
    } else {
      at += 1;
    }
  }
  return out;
}

/**
 * Float32 runs that look like a stored vector: `dims` consecutive little-endian float32 values, at any of the four
 * byte alignments, each finite with |x| <= 1, at least `minNonZero` of them non-negligible, and L2 norm 1 within
 * `tolerance` (stored vectors are normalized; the tolerance also admits a vector cut once by a 4-byte overflow
 * page pointer, which loses at most one component). Returns [{offset, norm2}] (overlapping windows collapsed).
 */
export function unitFloatRuns(buffer, dims, { tolerance = 0.02, minNonZero = 16 } = {}) {
  const hits = [];
  const view = new DataView(buffer.buffer, buffer.byteOffset, buffer.byteLength);
  // Windows one value off a real vector overlap it by dims - 1 values and may qualify too: of the qualifying
  // windows within `dims` of the first, the one closest to unit norm is reported.
  let pending = null;
  const flush = () => {
    if (pending && hits.length < MAX_HITS) hits.push({ offset: pending.offset, norm2: pending.norm2 });
    pending = null;
  };
  for (let align = 0; align < 4; align++) {
    const n = Math.floor((buffer.byteLength - align) / 4);
    let runStart = 0; // index of the first value of the current run of values with |x| <= 1
    let sum = 0;
    let nonZero = 0;
    for (let i = 0; i < n; i++) {
      if (pending && i > pending.until) flush();
      const x = view.getFloat32(align + i * 4, true);
      if (!(Math.abs(x) <= 1)) {
        runStart = i + 1;
        sum = 0;
        nonZero = 0;
        continue;
      }
      sum += x * x;
      if (Math.abs(x) >= 1e-4) nonZero++;
      if (i - runStart + 1 > dims) {
        const old = view.getFloat32(align + (i - dims) * 4, true);
        sum -= old * old;
        if (Math.abs(old) >= 1e-4) nonZero--;
      }
      if (i - runStart + 1 < dims) continue;
      if (Math.abs(sum - 1) > tolerance + 1e-6 || nonZero < minNonZero) continue;
      let exact = 0; // the running sum drifts; confirm on the window itself
      for (let k = i - dims + 1; k <= i; k++) exact += view.getFloat32(align + k * 4, true) ** 2;
      const error = Math.abs(exact - 1);
      if (error > tolerance) continue;
      const offset = align + (i - dims + 1) * 4;
      if (!pending) pending = { offset, norm2: Number(exact.toFixed(6)), error, until: i + dims };
      else if (error < pending.error) Object.assign(pending, { offset, norm2: Number(exact.toFixed(6)), error });
    }
    flush();
    if (hits.length >= MAX_HITS) break;
  }
  return hits;
}

/**
 * Dictionary inversion with the public hash: each dictionary word is embedded on its own (a sparse unit vector);
 * a candidate vector's words are the dictionary words with the highest cosine to it.
 */
export class Inverter {
  constructor(dictionary, dims) {
    this.dims = dims;
    this.words = [...new Set(dictionary)];
    this.sparse = this.words.map((word) => sparseOf(publicEmbed(word, dims)));
    this.indexOf = new Map(this.words.map((word, i) => [word, i]));
  }

  /** The top `k` dictionary words for a candidate vector (any scale). */
  rank(vector, k) {
    const scores = this.sparse.map((entries) => dot(entries, (d) => vector[d]));
    return scores
      .map((score, i) => ({ word: this.words[i], score }))
      .sort((a, b) => b.score - a.score)
      .slice(0, k)
      .map((entry) => entry.word);
  }

  /** How far `mean` (of n cosines) stands above the dictionary's mean cosine to `vector`, in standard errors. */
  #zScore(vector, norm, mean, n) {
    let sum = 0;
    let squares = 0;
    for (const entries of this.sparse) {
      const cosine = dot(entries, (d) => vector[d]) / norm;
      sum += cosine;
      squares += cosine * cosine;
    }
    const all = this.sparse.length;
    const average = sum / all;
    const deviation = Math.sqrt(Math.max(squares / all - average * average, 1e-12));
    return (mean - average) / (deviation / Math.sqrt(n));
  }

  /**
   * The attack on raw bytes: every window of `dims` values, read as int8 at every byte offset and as float32 at
   * every 4-byte alignment, is a candidate vector. By chance alone a few of a target's words rank high in some of
   * millions of random windows, so a single word in a top 12 proves nothing; what a real vector of the target
   * shows is its words together: their mean cosine stands `minZ` standard errors above the mean cosine of the
   * whole dictionary to the same window (a plaintext vector of an atom scores about 15, random windows below 6),
   * and at least `minWords` of them are in the window's top `k` (a plaintext vector puts 5 to 10 there). Windows
   * with fewer than MIN_COMPONENTS non-negligible values are not vectors. To stay linear, the dictionary is scored
   * only on windows where the target's mean cosine is >= `prefilter`.
   * targets: [{name, words}]. Returns [{name, offset, as, z, recovered: target words in the window's top k}].
   */
  rawWindowRecoveries(buffer, targets, { k = 12, minZ = 8, minWords = 3, prefilter = 0.05 } = {}) {
    const dims = this.dims;
    const hits = [];
    // The sum of a target's word cosines is one sparse dot product with the sum of its word vectors.
    const prepared = targets.map((target) => {
      const members = target.words.filter((word) => this.indexOf.has(word));
      const combined = new Float64Array(dims);
      for (const word of members) for (const [d, weight] of this.sparse[this.indexOf.get(word)]) combined[d] += weight;
      const dimsUsed = [...combined.keys()].filter((d) => combined[d] !== 0);
      return {
        name: target.name,
        count: members.length,
        index: Int32Array.from(dimsUsed),
        weight: Float64Array.from(dimsUsed, (d) => combined[d]),
        words: new Set(target.words),
      };
    });
    /** Windows of `values` (NaN = a value no vector holds); `offsetOf(start)` is the window's byte offset. */
    const scan = (values, as, offsetOf) => {
      let runStart = 0;
      let squares = 0;
      for (let i = 0; i < values.length; i++) {
        const x = values[i];
        if (Number.isNaN(x)) {
          runStart = i + 1;
          squares = 0;
          continue;
        }
        squares += x * x;
        if (i - runStart + 1 > dims) squares -= values[i - dims] * values[i - dims];
        if (i - runStart + 1 < dims) continue;
        const norm = Math.sqrt(Math.max(squares, 0));
        if (!(norm > 0)) continue;
        const start = i + 1 - dims;
        for (const target of prepared) {
          let sum = 0;
          for (let j = 0; j < target.index.length; j++) sum += target.weight[j] * values[start + target.index[j]];
          const mean = sum / norm / target.count;
          if (mean < prefilter) continue;
          const vector = Array.from(values.subarray(start, start + dims));
          // Structured bytes (page-number tables, a few small values in zeros) are no vector: too few components.
          if (vector.filter((value) => Math.abs(value) >= norm * 0.01).length < MIN_COMPONENTS) continue;
          const z = this.#zScore(vector, norm, mean, target.count);
          if (z < minZ) continue;
          const recovered = this.rank(vector, k).filter((word) => target.words.has(word));
          if (recovered.length >= minWords && hits.length < MAX_HITS) {
            hits.push({ name: target.name, offset: offsetOf(start), as, z: Number(z.toFixed(1)), recovered });
          }
        }
      }
    };
    scan(Float64Array.from(new Int8Array(buffer.buffer, buffer.byteOffset, buffer.byteLength)), "int8", (at) => at);
    const view = new DataView(buffer.buffer, buffer.byteOffset, buffer.byteLength);
    for (let align = 0; align < 4; align++) {
      const values = new Float64Array(Math.max(0, Math.floor((buffer.byteLength - align) / 4)));
      for (let i = 0; i < values.length; i++) {
        const x = view.getFloat32(align + i * 4, true);
        values[i] = Number.isFinite(x) && Math.abs(x) <= 1e3 ? x : Number.NaN;
      }
      scan(values, "float32", (at) => align + at * 4);
    }
    return hits;
  }
}

function sparseOf(vector) {
  const entries = [];
  for (let d = 0; d < vector.length; d++) if (vector[d] !== 0) entries.push([d, vector[d]]);
  return entries;
}

function dot(entries, read) {
  let sum = 0;
  for (const [d, weight] of entries) sum += weight * read(d);
  return sum;
}

#!/usr/bin/env node
// Assembles the project's own WebAssembly text (src/**/*.wat) into the .wasm files the Worker imports.
// `--check` fails when a committed .wasm differs from what its .wat assembles to (CI runs it).
import { readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import wabtFactory from "wabt";

const check = process.argv.includes("--check");
const wabt = await wabtFactory();
const sources = [];
const walk = (dir) => {
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) walk(path);
    else if (entry.name.endsWith(".wat")) sources.push(path);
  }
};
walk("src");
let stale = 0;
for (const source of sources) {
  const module = wabt.parseWat(source, readFileSync(source, "utf8"), { simd: true, relaxed_simd: true });
  module.validate();
  const { buffer } = module.toBinary({ log: false });
  const target = source.replace(/\.wat$/, ".wasm");
  let current = null;
  try {
    current = readFileSync(target);
  } catch {}
  if (current && Buffer.compare(current, Buffer.from(buffer)) === 0) continue;
  if (check) {
    console.error(`build-wasm: ${target} is stale; run npm run build:wasm`);
    stale++;
  } else {
    writeFileSync(target, buffer);
    console.log(`build-wasm: wrote ${target} (${buffer.byteLength} bytes)`);
  }
}
process.exit(stale ? 1 : 0);

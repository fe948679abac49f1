// Test data of the forensics e2e check: fresh secrets (a canary word, a 6-digit code), atoms and a document holding
// them, and the attacker's dictionary.
import { randomBytes, randomInt } from "node:crypto";
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { words } from "./public-embedder.mjs";

const CODE_DECOYS = 9_999;

export function freshSecrets() {
  const letters = Array.from({ length: 10 }, () => String.fromCharCode(97 + randomInt(26))).join("");
  return { canary: `zq${letters}`, code: String(randomInt(100_000, 1_000_000)) };
}

/** The attacker's dictionary: the distinct words of the project's docs (plain English and project terms). */
export function dictionaryFrom(root) {
  const text = ["README.md", ...readdirSync(join(root, "docs")).map((name) => join("docs", name))]
    .filter((name) => name.endsWith(".md"))
    .map((name) => readFileSync(join(root, name), "utf8"))
    .join("\n");
  return [...new Set(words(text).filter((word) => /^[a-z]{3,16}$/.test(word)))].sort();
}

export function atomsFor(secret, dictionary) {
  const pick = () => dictionary[randomInt(dictionary.length)];
  return [1, 2, 3].map((n) => {
    const w = Array.from({ length: 9 }, pick);
    return {
      id: `fx-${n}`,
      title: `${w[0]} ${secret.canary}`,
      text: `The ${secret.canary} ${w[1]} ${w[2]} lists code ${secret.code} beside the ${w[3]} ${w[4]} and ${w[5]} ${w[6]} ${w[7]} ${w[8]}.`,
      tags: [secret.canary, w[0]],
      source: `${secret.canary}-notes`,
    };
  });
}

export function documentText(secret) {
  return [
    `# Field notes ${secret.canary}`,
    "",
    `The ${secret.canary} survey recorded code ${secret.code} at the northern gate.`,
    "",
    `A second paragraph repeats ${secret.canary} and ${secret.code} so that extraction makes atoms of it.`,
    "",
  ].join("\n");
}

export function embeddingText(atom) {
  return atom.title ? `${atom.title}\n${atom.text}` : atom.text;
}

export function atomWords(atom) {
  return [...new Set(words(embeddingText(atom)).filter((word) => !/^\d+$/.test(word)))];
}

export function decoyCodes(code) {
  const out = new Set();
  while (out.size < CODE_DECOYS) {
    const candidate = String(randomInt(100_000, 1_000_000));
    if (candidate !== code) out.add(candidate);
  }
  return [...out];
}

export function randomSecret() {
  return randomBytes(32).toString("base64");
}

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

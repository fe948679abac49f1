// The one Node API the Worker uses (via nodejs_compat): synchronous SHA-256 for content hashes and vector ids,
// needed inside synchronous SQLite transactions where WebCrypto's promises cannot be awaited.
declare module "node:crypto" {
  interface Hash {
    update(data: string, encoding: "utf8"): Hash;
    digest(encoding: "hex" | "base64url"): string;
  }
  export function createHash(algorithm: "sha256"): Hash;
}

import { KbError } from "../errors";
import { fromBase64url } from "../util/bytes";

/**
 * Master key epochs. Each epoch is one Worker secret `MASTER_KEY_<EPOCH>` (base64 or base64url, at least 256
 * bits); `MASTER_KEY_EPOCH` names the current one, under which every data key is wrapped. Older epochs stay
 * readable until every tenant's keys have been rewrapped; then their secret can be deleted, which makes any copy of
 * a key wrapped under them (a backup, a point-in-time restore) permanently unreadable.
 *
 * A key-encryption key is derived per epoch with HKDF-SHA-256 (the secret is never used directly) and is
 * non-extractable. Nothing here logs or returns key bytes.
 */
export const EPOCH_PATTERN = /^[a-z0-9]{1,16}$/;

export class MasterKeys {
  readonly current: string;
  readonly #secrets: ReadonlyMap<string, Uint8Array>;

  constructor(secrets: ReadonlyMap<string, Uint8Array>, current: string) {
    if (!secrets.has(current)) throw new KbError("ERR_CONFIG", "the current master key epoch has no secret");
    for (const [epoch, secret] of secrets) {
      if (!EPOCH_PATTERN.test(epoch))
        throw new KbError("ERR_CONFIG", "master key epoch names must match [a-z0-9]{1,16}");
      if (secret.byteLength < 32) throw new KbError("ERR_CONFIG", "master keys must have at least 256 bits");
    }
    this.#secrets = secrets;
    this.current = current;
  }

  static fromEnv(env: object): MasterKeys {
    const record = env as Record<string, unknown>;
    const current = typeof record.MASTER_KEY_EPOCH === "string" ? record.MASTER_KEY_EPOCH.toLowerCase() : "";
    if (!current) throw new KbError("ERR_CONFIG", "MASTER_KEY_EPOCH is required");
    const secrets = new Map<string, Uint8Array>();
    for (const [name, value] of Object.entries(record)) {
      const match = /^MASTER_KEY_([A-Za-z0-9]{1,16})$/.exec(name);
      if (!match || name === "MASTER_KEY_EPOCH" || typeof value !== "string") continue;
      const bytes = fromBase64url(value.trim().replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, ""));
      if (!bytes) throw new KbError("ERR_CONFIG", "a master key secret is not base64");
      secrets.set((match[1] as string).toLowerCase(), bytes);
    }
    return new MasterKeys(secrets, current);
  }

  has(epoch: string): boolean {
    return this.#secrets.has(epoch);
  }

  epochs(): string[] {
    return [...this.#secrets.keys()];
  }

  /** The AES-256-GCM key-encryption key of an epoch. */
  async kek(epoch: string): Promise<CryptoKey> {
    const secret = this.#secrets.get(epoch);
    if (!secret) throw new KbError("ERR_KEY_UNAVAILABLE", "key unavailable");
    const ikm = await crypto.subtle.importKey("raw", secret, "HKDF", false, ["deriveKey"]);
    return crypto.subtle.deriveKey(
      {
        name: "HKDF",
        hash: "SHA-256",
        salt: new TextEncoder().encode("tenant-mcp-kb/master-kek/v1"),
        info: new TextEncoder().encode(epoch),
      },
      ikm,
      { name: "AES-GCM", length: 256 },
      false,
      ["encrypt", "decrypt"],
    );
  }
}

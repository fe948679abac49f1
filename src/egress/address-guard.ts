/**
 * Hosts server code must never reach on a tenant's behalf, whatever the tenant's allow-list says: loopback,
 * private, link-local (including cloud metadata at 169.254.169.254), CGNAT, unspecified, multicast and reserved
 * ranges, their IPv6 equivalents (and IPv4-mapped forms), and local-only names. Pure.
 *
 * Hostnames are checked as the WHATWG URL parser leaves them, which already canonicalizes odd IPv4 spellings
 * (`0x7f.1`, `2130706433`, `0177.0.0.1` all become `127.0.0.1`).
 */
const LOCAL_NAMES = /(^|\.)(localhost|local|internal|intranet|lan|home\.arpa|localdomain)$/i;
// Constant lookup table (never mutated, tenant-neutral).
const METADATA_NAMES = new Set(["metadata.google.internal", "metadata", "instance-data"]);

export function isForbiddenHost(hostname: string): boolean {
  // Every trailing dot: the URL parser keeps `localhost..` and `127.0.0.1..` as domain names.
  const host = hostname.toLowerCase().replace(/\.+$/, "");
  if (host === "" || LOCAL_NAMES.test(host) || METADATA_NAMES.has(host)) return true;
  if (host.startsWith("[") && host.endsWith("]")) return isForbiddenIPv6(host.slice(1, -1));
  const v4 = parseIPv4(host);
  if (v4) return isForbiddenIPv4(v4);
  // A bare name without a dot is never a public host.
  return !host.includes(".");
}

function parseIPv4(host: string): number[] | null {
  const parts = host.split(".");
  if (parts.length !== 4 || !parts.every((part) => /^\d{1,3}$/.test(part))) return null;
  const bytes = parts.map(Number);
  return bytes.every((byte) => byte <= 255) ? bytes : null;
}

function isForbiddenIPv4([a = 0, b = 0, c = 0]: number[]): boolean {
  return (
    a === 0 || // "this network"
    a === 10 ||
    a === 127 ||
    (a === 100 && b >= 64 && b <= 127) || // CGNAT
    (a === 169 && b === 254) || // link-local, cloud metadata
    (a === 172 && b >= 16 && b <= 31) ||
    (a === 192 && b === 168) ||
    (a === 192 && b === 0 && (c === 0 || c === 2)) || // IETF protocol assignments, TEST-NET-1
    (a === 198 && (b === 18 || b === 19)) || // benchmarking
    (a === 198 && b === 51 && c === 100) ||
    (a === 203 && b === 0 && c === 113) ||
    a >= 224 // multicast, reserved, broadcast
  );
}

function isForbiddenIPv6(address: string): boolean {
  const lower = address.toLowerCase();
  // Addresses starting with a zero group cover ::, ::1 and every IPv4-mapped or -compatible form (::ffff:a.b.c.d).
  const groups = lower.split(":");
  const first = lower.startsWith("::") ? 0 : Number.parseInt(groups[0] || "0", 16);
  const second = Number.parseInt(groups[1] || "0", 16);
  return (
    first === 0 ||
    (first & 0xfe00) === 0xfc00 || // unique local fc00::/7
    (first & 0xffc0) === 0xfe80 || // link-local fe80::/10
    (first & 0xff00) === 0xff00 || // multicast
    first === 0x64 || // NAT64 64:ff9b::/96 (embeds IPv4)
    (first === 0x2001 && (second === 0 || second === 0xdb8)) || // Teredo 2001::/32, documentation 2001:db8::/32
    first === 0x2002 // 6to4 (embeds IPv4)
  );
}

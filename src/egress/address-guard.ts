/**
 * Hosts server code must never reach on a tenant's behalf, whatever the tenant's allow-list says: loopback,
 * private, link-local (including cloud metadata at 169.254.169.254), CGNAT, unspecified, multicast and reserved
 * ranges, their IPv6 equivalents (and IPv4-mapped forms), and local-only names. Pure.
 *
 * The ranges follow the IANA IPv4 and IPv6 Special-Purpose Address Registries (checked 2026-12): every entry is
 * refused, also the globally reachable anycast ones (AS112, AMT), which no tenant has a reason to call. This guard
 * sees literals only: a name that resolves to a private address (`127.0.0.1.nip.io`) is refused by the platform
 * under the `global_fetch_strictly_public` compatibility flag (wrangler.toml); see docs/auth.md for what is left.
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
    (a === 192 && b === 31 && c === 196) || // AS112-v4
    (a === 192 && b === 52 && c === 193) || // AMT
    (a === 192 && b === 88 && c === 99) || // deprecated 6to4 relay anycast
    (a === 192 && b === 175 && c === 48) || // direct delegation AS112
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
  const third = Number.parseInt(groups[2] || "0", 16);
  return (
    // Only 2000::/3 is global unicast; everything else is special or unallocated: ::/8 (loopback, unspecified,
    // IPv4-mapped), 64:ff9b::/96 and 64:ff9b:1::/48 (NAT64), 100::/64 (discard), 5f00::/16 (SRv6 SIDs), and all of
    // fc00::/7, fe80::/10, fec0::/10 (site-local, deprecated) and ff00::/8 (listed below too, for the reader).
    (first & 0xe000) !== 0x2000 ||
    first === 0 ||
    (first & 0xfe00) === 0xfc00 || // unique local fc00::/7
    (first & 0xffc0) === 0xfe80 || // link-local fe80::/10
    (first & 0xffc0) === 0xfec0 || // site-local fec0::/10 (deprecated, still routed internally)
    (first & 0xff00) === 0xff00 || // multicast
    first === 0x64 || // NAT64 64:ff9b::/96 (embeds IPv4)
    (first === 0x2001 && second < 0x200) || // IETF protocol assignments 2001::/23 (Teredo, benchmarking, ORCHID ...)
    (first === 0x2001 && second === 0xdb8) || // documentation 2001:db8::/32
    first === 0x2002 || // 6to4 (embeds IPv4)
    (first === 0x2620 && second === 0x4f && third === 0x8000) || // direct delegation AS112 2620:4f:8000::/48
    first === 0x3fff // documentation 3fff::/20 (RFC 9637), whole /16 refused
  );
}

/**
 * Clients by address, as the per-client limits count them (payments, PIN
 * tries, connections): an address as a proxy may write it, the client group
 * of an address (one subscriber) and its network (one site or host customer).
 */
import { BlockList, isIPv4 } from 'node:net';

const DOTTED = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/;

/**
 * An address as numbers: an IPv4 address (IPv4-mapped IPv6 too, in either
 * notation) as its four bytes, an IPv6 address as its eight groups; undefined
 * when it is neither.
 */
function parseAddress(a: string): { v4: number[] } | { v6: number[] } | undefined {
  const dotted = /(?:^|:)(\d{1,3}(?:\.\d{1,3}){3})$/.exec(a);
  if (!a.includes(':') || dotted) {
    const m = DOTTED.exec(dotted ? dotted[1]! : a);
    return m ? { v4: m.slice(1).map(Number) } : undefined;
  }
  const [head = '', tail] = a.split('::');
  const h = head ? head.split(':') : [];
  const t = tail ? tail.split(':') : [];
  const groups =
    tail === undefined ? h : [...h, ...Array<string>(Math.max(0, 8 - h.length - t.length)).fill('0'), ...t];
  const n = groups.map((g) => parseInt(g || '0', 16));
  if (n.length !== 8 || n.some((x) => !(x >= 0 && x <= 0xffff))) return undefined;
  // ::ffff:a.b.c.d written in hex (as some servers report IPv4 clients of a dual-stack socket).
  if (n.slice(0, 5).every((x) => x === 0) && n[5] === 0xffff)
    return { v4: [n[6]! >> 8, n[6]! & 255, n[7]! >> 8, n[7]! & 255] };
  return { v6: n };
}

/**
 * An address as a proxy may write it, without what is not the address: the
 * brackets of `[2001:db8::1]`, the port of `[2001:db8::1]:443` or of
 * `192.0.2.1:5555`. Kept, a port would make every connection a client of its own.
 */
export function addressOnly(address: string): string {
  const a = address.trim().toLowerCase();
  const bracketed = /^\[([^\]]*)\](?::\d+)?$/.exec(a);
  if (bracketed) return bracketed[1]!;
  const v4port = /^(\d{1,3}(?:\.\d{1,3}){3}):\d+$/.exec(a);
  return v4port ? v4port[1]! : a;
}

const v6Prefix = (n: number[], groups: number): string =>
  `${n
    .slice(0, groups)
    .map((x) => x.toString(16))
    .join(':')}::/${groups * 16}`;

/**
 * An anonymous client as the limits count it: an IPv4 address as it is, an
 * IPv6 address by its /64 (what one subscriber is usually given), an
 * IPv4-mapped IPv6 address as its IPv4 address.
 */
export function clientGroup(address: string): string {
  const a = addressOnly(address);
  const p = parseAddress(a);
  if (!p) return a;
  return 'v4' in p ? p.v4.join('.') : v6Prefix(p.v6, 4);
}

/**
 * The network a client is in, as the limits count it: an IPv4 /24, an IPv6
 * /48 (what one site, or one customer of a host, is usually given). Many
 * addresses of one network are cheap to an attacker; many networks are not.
 */
export function clientNetwork(address: string): string {
  const a = addressOnly(address);
  const p = parseAddress(a);
  if (!p) return a;
  return 'v4' in p ? `${p.v4.slice(0, 3).join('.')}.0/24` : v6Prefix(p.v6, 3);
}

/** Whether a peer's X-Forwarded-For is taken (the peer is a trusted proxy). */
export type ProxyTrust = (peer: string) => boolean;

/**
 * Whose X-Forwarded-For is taken (TRUST_PROXY): nobody's (false), any peer's
 * (true), or only that of the proxies listed (addresses and networks). A
 * client that reaches the gateway around its proxy would otherwise name any
 * address it likes, and with it escape every per-client limit. Built once per
 * gateway, which hands it to every endpoint that reads a client address.
 */
export function proxyTrust(trust: boolean | readonly string[]): ProxyTrust {
  if (trust === false) return () => false;
  if (trust === true) return () => true;
  const list = new BlockList();
  for (const entry of trust) {
    const [address = '', prefix] = entry.split('/');
    const type = isIPv4(address) ? 'ipv4' : 'ipv6';
    if (prefix === undefined) list.addAddress(address, type);
    else list.addSubnet(address, Number(prefix), type);
  }
  return (peer) => {
    // Parsed first: a dual-stack socket may report an IPv4 proxy as ::ffff:a.b.c.d.
    const p = parseAddress(addressOnly(peer));
    if (!p) return false;
    return 'v4' in p
      ? list.check(p.v4.join('.'), 'ipv4')
      : list.check(p.v6.map((x) => x.toString(16)).join(':'), 'ipv6');
  };
}

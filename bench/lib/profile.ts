/**
 * A short reading of a V8 .cpuprofile (node --cpu-prof): self time by function
 * and by module (package in node_modules, tessera source file, node internals,
 * GC), as a share of the busy (non-idle) time.
 */
import { readFileSync } from 'node:fs';

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}
interface CpuProfile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
  startTime: number;
  endTime: number;
}

export interface ProfileSummary {
  file: string;
  busyMs: number;
  idleMs: number;
  topFunctions: { name: string; where: string; selfMs: number; pct: number }[];
  byModule: { module: string; selfMs: number; pct: number }[];
}

function moduleOf(url: string, fn: string): string {
  if (!url) return fn.startsWith('(') ? fn : '(native)';
  const nm = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(url);
  if (nm) return nm[1]!;
  if (url.startsWith('node:')) return 'node internals';
  const src = /\/dist\/(src|bench)\/(.+)$/.exec(url);
  if (src) return `tessera ${src[1]}/${src[2]}`;
  return url.replace(/^file:\/\//, '');
}

function shortUrl(url: string): string {
  const nm = /node_modules\/(.+)$/.exec(url);
  if (nm) return nm[1]!;
  const src = /\/dist\/(.+)$/.exec(url);
  if (src) return src[1]!;
  return url.replace(/^file:\/\//, '');
}

export function summarizeProfile(file: string, top = 25): ProfileSummary {
  const p = JSON.parse(readFileSync(file, 'utf8')) as CpuProfile;
  const byId = new Map<number, ProfileNode>(p.nodes.map((n) => [n.id, n]));
  const self = new Map<number, number>();
  for (let i = 0; i < p.samples.length; i++) {
    const id = p.samples[i]!;
    self.set(id, (self.get(id) ?? 0) + (p.timeDeltas[i] ?? 0));
  }
  const fns = new Map<string, { name: string; where: string; us: number }>();
  const mods = new Map<string, number>();
  let idle = 0;
  let busy = 0;
  for (const [id, us] of self) {
    const n = byId.get(id);
    if (!n) continue;
    const { functionName, url, lineNumber } = n.callFrame;
    if (functionName === '(idle)') {
      idle += us;
      continue;
    }
    busy += us;
    const name = functionName || '(anonymous)';
    const where = url ? `${shortUrl(url)}:${lineNumber + 1}` : '';
    const key = `${name}\u0000${where}`;
    const f = fns.get(key) ?? { name, where, us: 0 };
    f.us += us;
    fns.set(key, f);
    const m = moduleOf(url, name);
    mods.set(m, (mods.get(m) ?? 0) + us);
  }
  const pct = (us: number): number => (busy > 0 ? Math.round((us / busy) * 1000) / 10 : 0);
  return {
    file,
    busyMs: Math.round(busy / 1000),
    idleMs: Math.round(idle / 1000),
    topFunctions: [...fns.values()]
      .sort((a, b) => b.us - a.us)
      .slice(0, top)
      .map((f) => ({ name: f.name, where: f.where, selfMs: Math.round(f.us / 1000), pct: pct(f.us) })),
    byModule: [...mods.entries()]
      .sort((a, b) => b[1] - a[1])
      .slice(0, 20)
      .map(([module, us]) => ({ module, selfMs: Math.round(us / 1000), pct: pct(us) })),
  };
}

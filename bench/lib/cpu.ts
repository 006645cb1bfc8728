/** CPU time and memory of processes, read from /proc (Linux), and of this one. */
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';

const CLK_TCK = (() => {
  const r = spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' });
  const n = Number(r.stdout?.trim());
  return Number.isInteger(n) && n > 0 ? n : 100;
})();

/** CPU seconds (user + system, all threads) a process has used so far. */
export function cpuSec(pid: number | undefined): number {
  if (!pid) return 0;
  try {
    const s = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
    return (Number(f[11]) + Number(f[12])) / CLK_TCK;
  } catch {
    return 0;
  }
}

/** CPU seconds of a process and every process below it (the workers of `--workers N`). */
export function cpuSecTree(pid: number | undefined): number {
  if (!pid) return 0;
  let children: number[] = [];
  try {
    children = readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').split(' ').filter(Boolean).map(Number);
  } catch {
    /* gone */
  }
  return cpuSec(pid) + children.reduce((sum, c) => sum + cpuSecTree(c), 0);
}

/** A kB field of /proc/PID/status: VmHWM (peak RSS) or VmRSS. */
export function statusKb(pid: number | undefined, field: 'VmHWM' | 'VmRSS'): number {
  if (!pid) return 0;
  try {
    const m = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) : 0;
  } catch {
    return 0;
  }
}

/** CPU seconds this process has used so far. */
export const ownCpuSec = (): number => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
};

/** CPU seconds of several processes at one instant (performance.now() `t`). */
export interface CpuReading<K extends string> {
  t: number;
  sec: Record<K, number>;
}

/** Reads every source now: each gives CPU seconds so far (cpuSec of a pid, ownCpuSec...). */
export function readCpu<K extends string>(sources: Record<K, () => number>): CpuReading<K> {
  const sec = {} as Record<K, number>;
  for (const k of Object.keys(sources) as K[]) sec[k] = sources[k]();
  return { t: performance.now(), sec };
}

/** CPU seconds each source used between two readings. */
export function cpuUsed<K extends string>(from: CpuReading<K>, to: CpuReading<K>): Record<K, number> {
  const used = {} as Record<K, number>;
  for (const k of Object.keys(to.sec) as K[]) used[k] = to.sec[k] - from.sec[k];
  return used;
}

/** Each source's CPU between two readings, in percent of one core over the wall time between them. */
export function cpuPct<K extends string>(from: CpuReading<K>, to: CpuReading<K>): Record<K, number> {
  const dt = (to.t - from.t) / 1000;
  const used = cpuUsed(from, to);
  for (const k of Object.keys(used) as K[]) used[k] = Math.round((used[k] / dt) * 100);
  return used;
}

/**
 * Microseconds so far in which some runnable task waited for a core
 * (/proc/pressure/cpu `some`, Linux PSI); undefined where the kernel has none.
 * Over a run, its share of the wall time says how contended the machine was:
 * the benchmark's own processes count too, but on a machine shared with other
 * work a share far above a quiet run's means the figures were taken short of CPU.
 */
export function cpuStallUs(): number | undefined {
  try {
    const m = /^some .*total=(\d+)/m.exec(readFileSync('/proc/pressure/cpu', 'utf8'));
    return m ? Number(m[1]) : undefined;
  } catch {
    return undefined;
  }
}

/** What share (%) of the wall time since `from` (a cpuStallUs reading at performance.now() `t`) some task waited for a core. */
export function cpuPressurePct(from: { us: number | undefined; t: number }): number | undefined {
  const now = cpuStallUs();
  if (now === undefined || from.us === undefined) return undefined;
  return Math.round(((now - from.us) / 1000 / (performance.now() - from.t)) * 100);
}

/**
 * The Redis processes whose CPU a benchmark reads: one server (a primary
 * alone), or a cluster's primaries and replicas (bench/lib/cluster.ts,
 * clusterPids). The primaries' CPU is summed as `redis`, each kept too, the
 * replicas' summed apart: they run the same writes again.
 */
export interface RedisPids {
  primaries: number[];
  replicas: number[];
}

/** One server's pids: itself as the only primary. */
export const singleRedis = (pid: number | undefined): RedisPids => ({
  primaries: pid ? [pid] : [],
  replicas: [],
});

const sumCpu = (pids: number[]): number => pids.reduce((sum, pid) => sum + cpuSec(pid), 0);

/** CPU sources for readCpu: `rd` the primaries summed, `rp` the replicas summed, `rd0`, `rd1`… each primary. */
export function redisCpuSources(p: RedisPids): Record<string, () => number> {
  const sources: Record<string, () => number> = { rd: () => sumCpu(p.primaries), rp: () => sumCpu(p.replicas) };
  p.primaries.forEach((pid, i) => (sources[`rd${i}`] = () => cpuSec(pid)));
  return sources;
}

/** The per-primary shares (%) of a cpuPct over redisCpuSources, in the primaries' order. */
export const perPrimary = (p: RedisPids, pct: Record<string, number>): number[] =>
  p.primaries.map((_, i) => pct[`rd${i}`] ?? 0);

/** `redis 54%`, or for a cluster `redis 95% (31+33+31 over 3 primaries), replicas 20%`. */
export function fmtRedisCpu(p: RedisPids, pct: Record<string, number>): string {
  const rd = `redis ${String(pct.rd ?? 0).padStart(3)}%`;
  if (p.primaries.length <= 1 && p.replicas.length === 0) return rd;
  return `${rd} (${perPrimary(p, pct).join('+')} over ${p.primaries.length} primaries), replicas ${pct.rp ?? 0}%`;
}

/**
 * The benchmarks' local Redis Cluster (3 primaries, 3 replicas, started with
 * deploy/cluster/local-cluster.sh as the test suite does) and what measuring
 * replicated acknowledgements on it takes: the --acks flag, one gateway per
 * mode on the same cluster, the turns they are driven in, and the rates per
 * mode with their ratio on/off.
 */
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { freeClusterBase } from '../../src/redis/embedded';
import type { RedisPids } from './cpu';
import { startGatewayChild, type GatewayChild, type GatewayChildOptions } from './gateway';
import { ROOT } from './process';

export const CLUSTER_SCRIPT = join(ROOT, 'deploy', 'cluster', 'local-cluster.sh');

/** A local 3-primary, 3-replica cluster, stopped by port (a node restarted after a fault has a new pid). */
export interface LocalCluster {
  /** The REDIS_CLUSTER value. */
  url: string;
  base: number;
  nodesDir: string;
  /**
   * SIGSTOPs pid for ms, then SIGCONTs it. stop() resumes it first if the
   * bench ends (or is interrupted) inside that window: a frozen node takes no
   * `shutdown` and would outlive the bench, its ports held.
   */
  freeze(pid: number, ms: number): void;
  stop(): void;
}

/** Starts the cluster in tmp/cluster on free ports; it is stopped when this process exits, if not before. */
export async function startLocalCluster(tmp: string): Promise<LocalCluster> {
  const nodesDir = join(tmp, 'cluster');
  const base = await freeClusterBase();
  const started = spawnSync('sh', [CLUSTER_SCRIPT, 'start', nodesDir, String(base)], { encoding: 'utf8' });
  if (started.status !== 0) throw new Error(`cluster: ${started.stderr}`);
  const frozen = new Set<number>();
  const resume = (pid: number): void => {
    if (!frozen.delete(pid)) return;
    try {
      process.kill(pid, 'SIGCONT');
    } catch {
      /* gone already */
    }
  };
  const freeze = (pid: number, ms: number): void => {
    process.kill(pid, 'SIGSTOP');
    frozen.add(pid);
    setTimeout(() => resume(pid), ms).unref();
  };
  // By port, not through the node directories: those go with the temp dir.
  const stop = (): void => {
    for (const pid of [...frozen]) resume(pid);
    for (let port = base; port < base + 6; port++)
      spawnSync('redis-cli', ['-p', String(port), 'shutdown', 'nosave'], { stdio: 'ignore', timeout: 5000 });
  };
  process.on('exit', stop);
  return { url: /REDIS_CLUSTER=(\S+)/.exec(started.stdout)![1]!, base, nodesDir, freeze, stop };
}

/**
 * The pids of the cluster's primaries and replicas now, in port order, as
 * each node tells (INFO): a node restarted after a fault has a new pid, and a
 * failover swaps roles, so read them again after one. A node that does not
 * answer is left out.
 */
export function clusterPids(cluster: Pick<LocalCluster, 'base'>): RedisPids {
  const pids: RedisPids = { primaries: [], replicas: [] };
  for (let port = cluster.base; port < cluster.base + 6; port++) {
    const info = spawnSync('redis-cli', ['-p', String(port), 'info', 'all'], { encoding: 'utf8', timeout: 5000 });
    const pid = Number(/process_id:(\d+)/.exec(info.stdout ?? '')?.[1]);
    const role = /role:(\w+)/.exec(info.stdout ?? '')?.[1];
    if (!pid) continue;
    (role === 'master' ? pids.primaries : pids.replicas).push(pid);
  }
  return pids;
}

/** REDIS_REPLICATED_ACKS of one gateway. */
export type AckMode = 'on' | 'off';

/** The usage lines of --cluster, --acks and --rounds, descriptions from column `col` (as the bench's other flags). */
export function acksUsage(col: number): string {
  const lines: [string, string][] = [
    ['--cluster', 'against a local 3+3 Redis Cluster (deploy/cluster/local-cluster.sh)'],
    ['--acks on|off|both', 'replicated acknowledgements of the gateway; both: one gateway'],
    ['', 'with and one without, measured in turns off, on, off, on [both]'],
    ['--rounds N', 'turns per mode [2]'],
  ];
  return lines.map(([flag, text]) => `  ${flag.padEnd(col - 3)} ${text}\n`).join('');
}

/** The modes --acks asks for (only with --cluster: a single node has no replica to wait for). */
export function acksFlag(v: string | undefined, cluster: boolean): AckMode[] {
  if (v === undefined) return cluster ? ['off', 'on'] : [];
  if (!cluster) throw new Error('--acks: only with --cluster');
  if (v === 'both') return ['off', 'on'];
  if (v === 'on' || v === 'off') return [v];
  throw new Error(`--acks: on, off or both, got ${v}`);
}

/** The measured turns: the modes alternately, `rounds` times each (off, on, off, on, ...). */
export const ackTurns = (modes: AckMode[], rounds: number): AckMode[] =>
  Array.from({ length: rounds }, () => modes).flat();

/** One gateway per mode on the cluster, REDIS_REPLICATED_ACKS set; its log goes to dataDir/gateway-MODE.log. */
export async function startAckGateways(
  cluster: LocalCluster,
  modes: AckMode[],
  o: Omit<GatewayChildOptions, 'redisUrl' | 'cluster'>,
): Promise<Map<AckMode, GatewayChild>> {
  const gws = new Map<AckMode, GatewayChild>();
  for (const acks of modes)
    gws.set(
      acks,
      await startGatewayChild({
        ...o,
        redisUrl: '',
        cluster: cluster.url,
        env: { ...o.env, REDIS_REPLICATED_ACKS: acks },
        logFile: o.inheritOutput ? undefined : join(o.dataDir, `gateway-acks-${acks}.log`),
      }),
    );
  return gws;
}

/** What one turn counted: per rate name, operations answered ok and the seconds they took. */
export interface AckTurn {
  acks: AckMode;
  counts: Record<string, { n: number; sec: number }>;
  /** Share of a core (%) over the turn: the gateway, the primaries summed and each, the replicas summed. */
  cpuPct?: { gateway: number; redis: number; redisPerPrimary: number[]; replicas: number };
}

/** A rate per mode (summed over that mode's turns) and on/off. */
export interface AckRate {
  on?: number;
  off?: number;
  ratio?: number;
}

export function ackRates(turns: AckTurn[]): Record<string, AckRate> {
  const out: Record<string, AckRate> = {};
  const names = [...new Set(turns.flatMap((t) => Object.keys(t.counts)))];
  for (const name of names) {
    const rate: AckRate = {};
    for (const acks of ['on', 'off'] as const) {
      const mine = turns.filter((t) => t.acks === acks && t.counts[name]);
      if (!mine.length) continue;
      const n = mine.reduce((a, t) => a + t.counts[name]!.n, 0);
      const sec = mine.reduce((a, t) => a + t.counts[name]!.sec, 0);
      rate[acks] = sec > 0 ? Math.round((n / sec) * 10) / 10 : 0;
    }
    if (rate.on !== undefined && rate.off) rate.ratio = Math.round((rate.on / rate.off) * 100) / 100;
    out[name] = rate;
  }
  return out;
}

/** The table of rates: a line per rate, on, off and on/off. */
export function printAckRates(rates: Record<string, AckRate>): void {
  console.log('\nreplicated acknowledgements (same cluster, same run):');
  for (const [name, r] of Object.entries(rates))
    console.log(
      `  ${`${name}/s`.padEnd(16)} on ${String(r.on ?? '-').padStart(9)}  off ${String(r.off ?? '-').padStart(9)}  on/off ${r.ratio ?? '-'}`,
    );
}

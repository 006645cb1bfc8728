/** bench:switch's command line: its flags, their defaults and checks, and --help. */
import { acksUsage, acksFlag, type AckMode } from '../lib/cluster';
import { gwEnvFlag, intFlag, pairsFlag, parseFlags } from '../lib/flags';

export const USAGE = `npm run bench:switch -- [flags]

  --mode calls|max       calls: N calls ticking once a second; max: as fast as the gateway absorbs [calls]
  --calls N              simulated calls = sold IDs [10000]
  --conns M              switch WebSocket connections [20]
  --duration S           seconds of ticking [30]
  --ref-every K          1 tick in K carries a ref, answered by 'ticked' (1 = all) [calls: 10, max: 1]
  --tariff flat|60/6-peak  the rate plan: per second (flat), or 60/6 blocks with a weekday peak rate [flat]
                         (60/6-peak needs --alert-frac 0: blocks move the alerts' seconds)
  --quota                calls start in quota mode and report with 'update' (each answered 'granted')
                         instead of ticks; the figures for ticks are then those of updates
  --alert-frac F         share of calls whose product crosses thresholds during the run [0.2]
  --tick-every S         calls mode: a tick every S seconds, carrying the seconds since answer; the
                         gateway gets TICK_INTERVAL_MS to match; --duration a multiple of S [1]
  --ramp S               calls mode: starts spread over S seconds [1]
  --start-rate R         calls mode: starts paced at R a second (sets --ramp to calls ÷ R)
  --slot-ms MS           calls mode: timer granularity [10]
  --frame F              max mode: ticks per frame [25]
  --window W             max mode: frames in flight per connection [1]
                         (in flight = conns × window × frame; latency ≈ in flight ÷ ticks/s)
  --workers K            load generator worker threads [1]
  --gw-env K=V           extra gateway environment, repeatable (e.g. BUCKETS=64)
  --gw-node-arg ARG      extra node flag for the gateway, repeatable (e.g. --max-semi-space-size=64)
  --gw-log FILE          also write the gateway's stdout/stderr to FILE
  --redis-config K=V     CONFIG SET on the bench's Redis before the load, repeatable
                         (e.g. auto-aof-rewrite-min-size=4gb keeps the AOF rewrite out of it)
  --profile              gateway under node --cpu-prof; prints its hot spots
  --profile-dir DIR      where the .cpuprofile goes [temp dir, kept]
  --rb-requests N        redis-benchmark -n [200000]
  --rb-clients C         redis-benchmark -c [50]
  --rb-pipeline P        redis-benchmark -P [16]
  --rb-batch B           also measure B ticks per FCALL, as the gateway batches; 0 skips [64]
  --no-ceiling           skip redis-benchmark
  --keep                 keep the temp dir
${acksUsage(25)}  --quiet                no per-second timeline
  --help

Prints ticks/s, start→started, tick→ticked, tick→alert latency p50/p99/p999,
errors by reason, the gateway's peak RSS and CPU, redis-benchmark's FCALL
rate for lua/call_tick.lua as the ceiling and gateway/ceiling; last line: JSON.
With --cluster (no ceiling): per turn starts/s (first start sent to last started),
ticks/s and stops/s (first stop sent to last stopped), then each rate with
replicated acknowledgements on and off and on/off. --mode max starts and stops
every call as fast as the gateway answers; in calls mode they follow --ramp.
`;

export interface Options {
  mode: 'calls' | 'max';
  calls: number;
  conns: number;
  duration: number;
  /** calls mode: seconds between a call's ticks. */
  tickEvery: number;
  refEvery: number;
  quota: boolean;
  tariff: 'flat' | '60/6-peak';
  alertFrac: number;
  ramp: number;
  slotMs: number;
  frame: number;
  window: number;
  workers: number;
  gwEnv: Record<string, string>;
  gwLog?: string;
  /** CONFIG SET pairs for the bench's Redis (not with --cluster). */
  redisConfig: Record<string, string>;
  gwNodeArgs: string[];
  profile: boolean;
  profileDir?: string;
  rbRequests: number;
  rbClients: number;
  rbPipeline: number;
  rbBatch: number;
  ceiling: boolean;
  keep: boolean;
  quiet: boolean;
  /** Against a local 3+3 cluster, one gateway per ack mode, measured in turns. */
  cluster: boolean;
  acks: AckMode[];
  rounds: number;
}

export function options(argv: string[]): Options {
  const values = parseFlags(
    argv,
    {
      mode: { type: 'string', default: 'calls' },
      calls: { type: 'string', default: '10000' },
      conns: { type: 'string', default: '20' },
      duration: { type: 'string', default: '30' },
      'ref-every': { type: 'string' },
      'alert-frac': { type: 'string', default: '0.2' },
      quota: { type: 'boolean', default: false },
      tariff: { type: 'string', default: 'flat' },
      'tick-every': { type: 'string', default: '1' },
      ramp: { type: 'string', default: '1' },
      'start-rate': { type: 'string' },
      'slot-ms': { type: 'string', default: '10' },
      frame: { type: 'string', default: '25' },
      window: { type: 'string', default: '1' },
      workers: { type: 'string', default: '1' },
      'gw-env': { type: 'string', multiple: true, default: [] },
      'gw-log': { type: 'string' },
      'redis-config': { type: 'string', multiple: true, default: [] },
      'gw-node-arg': { type: 'string', multiple: true, default: [] },
      profile: { type: 'boolean', default: false },
      'profile-dir': { type: 'string' },
      'rb-requests': { type: 'string', default: '200000' },
      'rb-clients': { type: 'string', default: '50' },
      'rb-pipeline': { type: 'string', default: '16' },
      'rb-batch': { type: 'string', default: '64' },
      'no-ceiling': { type: 'boolean', default: false },
      keep: { type: 'boolean', default: false },
      quiet: { type: 'boolean', default: false },
      cluster: { type: 'boolean', default: false },
      acks: { type: 'string' },
      rounds: { type: 'string', default: '2' },
    },
    USAGE,
  );
  const mode = values.mode;
  if (mode !== 'calls' && mode !== 'max') throw new Error(`--mode: calls or max, got ${mode}`);
  const alertFrac = Number(values['alert-frac']);
  if (!(alertFrac >= 0 && alertFrac <= 1)) throw new Error(`--alert-frac: 0..1, got ${values['alert-frac']}`);
  const calls = intFlag('calls', values.calls, 1, 5_000_000);
  const ramp =
    values['start-rate'] === undefined
      ? Number(values.ramp)
      : calls / intFlag('start-rate', values['start-rate'], 1, 1_000_000);
  if (!(ramp >= 0 && ramp <= 3600)) throw new Error(`--ramp: seconds, got ${values.ramp}`);
  const o: Options = {
    mode,
    calls,
    conns: intFlag('conns', values.conns, 1, 10_000),
    duration: intFlag('duration', values.duration, 1, 86_400),
    tickEvery: intFlag('tick-every', values['tick-every'], 1, 60),
    refEvery: intFlag('ref-every', values['ref-every'] ?? (mode === 'max' ? '1' : '10'), 1),
    quota: values.quota === true,
    tariff: tariffFlag(values.tariff, alertFrac),
    alertFrac,
    ramp,
    slotMs: intFlag('slot-ms', values['slot-ms'], 1, 1000),
    frame: intFlag('frame', values.frame, 1, 2000),
    window: intFlag('window', values.window, 1, 1000),
    workers: intFlag('workers', values.workers, 1, 64),
    gwEnv: gwEnvFlag(values['gw-env']),
    gwLog: values['gw-log'],
    redisConfig: pairsFlag('redis-config', values['redis-config']),
    gwNodeArgs: values['gw-node-arg'] ?? [],
    profile: values.profile ?? false,
    profileDir: values['profile-dir'],
    rbRequests: intFlag('rb-requests', values['rb-requests'], 1000),
    rbClients: intFlag('rb-clients', values['rb-clients'], 1, 10_000),
    rbPipeline: intFlag('rb-pipeline', values['rb-pipeline'], 1, 10_000),
    rbBatch: intFlag('rb-batch', values['rb-batch'], 0, 1000),
    // The ceiling is redis-benchmark on one node: not a cluster's.
    ceiling: !values['no-ceiling'] && !values.cluster,
    keep: values.keep ?? false,
    quiet: values.quiet ?? false,
    cluster: values.cluster ?? false,
    acks: acksFlag(values.acks, values.cluster ?? false),
    rounds: intFlag('rounds', values.rounds, 1, 100),
  };
  if (o.cluster && o.profile) throw new Error('--profile: not with --cluster');
  if (o.cluster && Object.keys(o.redisConfig).length) throw new Error('--redis-config: not with --cluster');
  if (o.workers > o.conns) throw new Error('--workers cannot exceed --conns');
  if (o.tickEvery > 1 && o.mode !== 'calls') throw new Error('--tick-every: calls mode only');
  // Every tick then carries a whole interval, and the last one lands on --duration: billing stays exact.
  if (o.duration % o.tickEvery !== 0) throw new Error('--duration: a multiple of --tick-every');
  return o;
}

function tariffFlag(v: unknown, alertFrac: number): 'flat' | '60/6-peak' {
  if (v !== 'flat' && v !== '60/6-peak') throw new Error(`--tariff: flat or 60/6-peak, got ${String(v)}`);
  if (v !== 'flat' && alertFrac !== 0) throw new Error('--tariff 60/6-peak: use --alert-frac 0');
  return v;
}

/** bench:switch's command line: its flags, their defaults and checks, and --help. */
import { gwEnvFlag, intFlag, parseFlags } from '../lib/flags';

export const USAGE = `npm run bench:switch -- [flags]

  --mode calls|max       calls: N calls ticking once a second; max: as fast as the gateway absorbs [calls]
  --calls N              simulated calls = sold IDs [10000]
  --conns M              switch WebSocket connections [20]
  --duration S           seconds of ticking [30]
  --ref-every K          1 tick in K carries a ref, answered by 'ticked' (1 = all) [calls: 10, max: 1]
  --alert-frac F         share of calls whose product crosses thresholds during the run [0.2]
  --ramp S               calls mode: starts spread over S seconds [1]
  --slot-ms MS           calls mode: timer granularity [10]
  --frame F              max mode: ticks per frame [25]
  --window W             max mode: frames in flight per connection [1]
                         (in flight = conns × window × frame; latency ≈ in flight ÷ ticks/s)
  --workers K            load generator worker threads [1]
  --gw-env K=V           extra gateway environment, repeatable (e.g. BUCKETS=64)
  --gw-node-arg ARG      extra node flag for the gateway, repeatable (e.g. --max-semi-space-size=64)
  --gw-log FILE          also write the gateway's stdout/stderr to FILE
  --profile              gateway under node --cpu-prof; prints its hot spots
  --profile-dir DIR      where the .cpuprofile goes [temp dir, kept]
  --rb-requests N        redis-benchmark -n [200000]
  --rb-clients C         redis-benchmark -c [50]
  --rb-pipeline P        redis-benchmark -P [16]
  --rb-batch B           also measure B ticks per EVALSHA, as the gateway batches; 0 skips [64]
  --no-ceiling           skip redis-benchmark
  --keep                 keep the temp dir
  --quiet                no per-second timeline
  --help

Prints ticks/s, start→started, tick→ticked, tick→alert latency p50/p99/p999,
errors by reason, the gateway's peak RSS and CPU, redis-benchmark's EVALSHA
rate for lua/call_tick.lua as the ceiling and gateway/ceiling; last line: JSON.
`;

export interface Options {
  mode: 'calls' | 'max';
  calls: number;
  conns: number;
  duration: number;
  refEvery: number;
  alertFrac: number;
  ramp: number;
  slotMs: number;
  frame: number;
  window: number;
  workers: number;
  gwEnv: Record<string, string>;
  gwLog?: string;
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
      ramp: { type: 'string', default: '1' },
      'slot-ms': { type: 'string', default: '10' },
      frame: { type: 'string', default: '25' },
      window: { type: 'string', default: '1' },
      workers: { type: 'string', default: '1' },
      'gw-env': { type: 'string', multiple: true, default: [] },
      'gw-log': { type: 'string' },
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
    },
    USAGE,
  );
  const mode = values.mode;
  if (mode !== 'calls' && mode !== 'max') throw new Error(`--mode: calls or max, got ${mode}`);
  const alertFrac = Number(values['alert-frac']);
  if (!(alertFrac >= 0 && alertFrac <= 1)) throw new Error(`--alert-frac: 0..1, got ${values['alert-frac']}`);
  const ramp = Number(values.ramp);
  if (!(ramp >= 0 && ramp <= 3600)) throw new Error(`--ramp: seconds, got ${values.ramp}`);
  const o: Options = {
    mode,
    calls: intFlag('calls', values.calls, 1, 5_000_000),
    conns: intFlag('conns', values.conns, 1, 10_000),
    duration: intFlag('duration', values.duration, 1, 86_400),
    refEvery: intFlag('ref-every', values['ref-every'] ?? (mode === 'max' ? '1' : '10'), 1),
    alertFrac,
    ramp,
    slotMs: intFlag('slot-ms', values['slot-ms'], 1, 1000),
    frame: intFlag('frame', values.frame, 1, 2000),
    window: intFlag('window', values.window, 1, 1000),
    workers: intFlag('workers', values.workers, 1, 64),
    gwEnv: gwEnvFlag(values['gw-env']),
    gwLog: values['gw-log'],
    gwNodeArgs: values['gw-node-arg'] ?? [],
    profile: values.profile ?? false,
    profileDir: values['profile-dir'],
    rbRequests: intFlag('rb-requests', values['rb-requests'], 1000),
    rbClients: intFlag('rb-clients', values['rb-clients'], 1, 10_000),
    rbPipeline: intFlag('rb-pipeline', values['rb-pipeline'], 1, 10_000),
    rbBatch: intFlag('rb-batch', values['rb-batch'], 0, 1000),
    ceiling: !values['no-ceiling'],
    keep: values.keep ?? false,
    quiet: values.quiet ?? false,
  };
  if (o.workers > o.conns) throw new Error('--workers cannot exceed --conns');
  return o;
}

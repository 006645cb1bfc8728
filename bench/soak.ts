/**
 * bench/soak.ts: `npm run bench:soak [-- flags]`, mixed traffic on a Redis
 * Cluster for a long while with a fault injected every minute.
 *
 * Sets up a local 3-primary, 3-replica cluster (deploy/cluster/local-cluster.sh),
 * the sandbox card company, a catalog, IDs, and two gateway processes. Then, for
 * --minutes:
 *   calls        --calls simulated calls at a time over 4 switch connections (two
 *                per gateway), each ticking once a second (every tick with a ref)
 *                for 10 to 60 s, then stopping; a new call takes its place.
 *                A dropped connection reconnects to a live gateway and goes on.
 *   redemptions  --redeem-rate goods redemptions a second over HTTP, each a new scan.
 *   sales        --sale-rate purchases a second through the card company, retried
 *                with the same Idempotency-Key while the answer is unsure.
 *   faults       every --fault-every seconds the next of: SIGKILL gateway A (started
 *                again 3 s later); SIGKILL a cluster primary (its replica takes over,
 *                the node is started again 3 s later and rejoins as a replica);
 *                SIGSTOP a primary for 5 s; SIGKILL gateway B.
 * At the end every call is stopped, and it prints throughput, latency p50/p99 and
 * errors by reason for each kind of traffic, the calls whose billed seconds differ
 * from what the switch measured by more than 1, the losses (`billing.lost`: calls
 * answered `started` never answered `stopped`, stopped calls, redemptions and
 * sales that were acknowledged and are not in Redis afterwards, `internal`
 * answers), and `audit` over the whole cluster. Stops carry the call's ID and
 * destination, as a switch's do, so a call whose start was lost is billed
 * (`recovered`). The verdict fails on any loss. Last line: JSON.
 *
 * Flags: --minutes M [10]  --calls N [300]  --redeem-rate R [100]  --sale-rate S [1]
 *        --fault-every SEC [60]  --no-faults  --keep  --quiet
 */
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import WebSocket from 'ws';
import { pack, Unpackr } from 'msgpackr';
import { activateId } from '../src/ledger/ids';
import { audit } from '../src/ledger/audit';
import { openContext, type Context } from '../src/app/context';
import type { GoodsProduct, TalkProduct } from '../src/catalog/schema';
import { createToken, putItems, putPlans, putProducts } from '../src/catalog/store';
import { loadConfig } from '../src/config/config';
import { mintIds } from '../src/ledger/mint';
import { createLogger } from '../src/observability/log';
import { keys } from '../src/redis/keys';
import { ScanWindows } from '../src/redemption/scan-windows';
import { Sandbox } from '../src/dev/sandbox';
import { intFlag, parseFlags } from './lib/flags';
import { measureAckCost } from './lib/ack-cost';
import { CLUSTER_SCRIPT, startLocalCluster, type LocalCluster } from './lib/cluster';
import { startGatewayChild, type GatewayChild } from './lib/gateway';
import { fmtLatency, newHist, recordMs, summarize, type Hist } from './lib/hist';
import { cleanUpOnExit, makeTmp, removeTmp, runMain, sleep, stopChild } from './lib/process';
import { fmtInt, printJsonLine } from './lib/report';

const USAGE = `npm run bench:soak -- [flags]

  --minutes M         how long [10]
  --calls N           simultaneous calls [300]
  --redeem-rate R     redemptions a second [100]
  --sale-rate S       purchases a second [1]
  --fault-every SEC   seconds between faults [60]
  --no-faults         traffic only
  --ack-cost          no soak: the cost of replicated acknowledgements instead, one
                      gateway with them and one without on the same cluster, in turns
  --keep              keep the temp dir (cluster data, logs)
  --quiet             no per-10-second timeline
  --help

Prints per kind of traffic (start, tick, stop, redeem, sale) the operations
answered ok, their rate, latency p50/p99 and errors by reason; the faults;
calls billed off by more than a second; the losses and audit over the
cluster; the verdict, FAILED (exit 1) on any loss, any call billed off or any
audit problem; last line: JSON. --ack-cost prints the rates with replicated
acknowledgements on and off instead (--minutes rounds of turns).
`;

const SECRET = 'ef'.repeat(32);
const DEST = '4912345';
/** The token names: calls and scans are keyed by them. */
const SWITCH = 'soak-switch';
const SCANNER = 'soak-scanner';
const unpackr = new Unpackr({ mapsAsObjects: true, int64AsType: 'auto' as 'number' });

interface Options {
  minutes: number;
  calls: number;
  redeemRate: number;
  saleRate: number;
  faultEvery: number;
  faults: boolean;
  ackCost: boolean;
  keep: boolean;
  quiet: boolean;
}

function options(argv: string[]): Options {
  const values = parseFlags(
    argv,
    {
      minutes: { type: 'string', default: '10' },
      calls: { type: 'string', default: '300' },
      'redeem-rate': { type: 'string', default: '100' },
      'sale-rate': { type: 'string', default: '1' },
      'fault-every': { type: 'string', default: '60' },
      'no-faults': { type: 'boolean', default: false },
      'ack-cost': { type: 'boolean', default: false },
      keep: { type: 'boolean', default: false },
      quiet: { type: 'boolean', default: false },
    },
    USAGE,
  );
  return {
    minutes: intFlag('minutes', values.minutes, 1, 24 * 60),
    calls: intFlag('calls', values.calls, 1, 100_000),
    redeemRate: intFlag('redeem-rate', values['redeem-rate'], 0, 100_000),
    saleRate: intFlag('sale-rate', values['sale-rate'], 0, 1000),
    faultEvery: intFlag('fault-every', values['fault-every'], 5, 3600),
    faults: !values['no-faults'],
    ackCost: values['ack-cost'] ?? false,
    keep: values.keep ?? false,
    quiet: values.quiet ?? false,
  };
}

interface Stat {
  ok: number;
  errors: Map<string, number>;
  hist: Hist;
}
const stat = (): Stat => ({ ok: 0, errors: new Map(), hist: newHist() });
const fail = (s: Stat, reason: string): void => void s.errors.set(reason, (s.errors.get(reason) ?? 0) + 1);

/** A switch connection that reconnects to a live gateway whenever it drops; answers matched by ref. */
class SwitchConn {
  private ws?: WebSocket;
  private waiting = new Map<string, { resolve: (m: Record<string, unknown>) => void; sent: number }>();
  private refs = 0;
  constructor(
    private readonly name: string,
    private readonly token: string,
    private readonly ports: () => number[],
    private prefer: number,
  ) {}

  async connect(): Promise<void> {
    for (;;) {
      const ports = this.ports();
      const port = ports[this.prefer++ % Math.max(1, ports.length)];
      if (port) {
        try {
          this.ws = await new Promise<WebSocket>((ok, no) => {
            const ws = new WebSocket(`ws://127.0.0.1:${port}/v1/switch`, {
              headers: { Authorization: `Bearer ${this.token}` },
            });
            ws.binaryType = 'nodebuffer';
            ws.once('open', () => ok(ws));
            ws.once('error', no);
          });
          this.ws.on('message', (data: Buffer) => {
            const body = unpackr.unpack(data) as unknown;
            for (const m of (Array.isArray(body) ? body : [body]) as { ref?: string | number }[]) {
              const w = m.ref !== undefined ? this.waiting.get(String(m.ref)) : undefined;
              if (w) {
                this.waiting.delete(String(m.ref));
                w.resolve(m);
              }
            }
          });
          this.ws.once('close', () => {
            // Whatever was in flight on it is lost: its senders see a timeout and go on.
            this.ws = undefined;
            void sleep(200).then(() => this.connect());
          });
          return;
        } catch {
          /* that gateway is down: the next */
        }
      }
      await sleep(200);
    }
  }

  /** Sends one message; resolves with its answer, or {op:'timeout'} after ms. */
  request(m: Record<string, unknown>, ms = 3000): Promise<Record<string, unknown>> {
    const ref = `${this.name}-${++this.refs}`;
    return new Promise((resolvePromise) => {
      if (!this.ws || this.ws.readyState !== WebSocket.OPEN)
        return resolvePromise({ op: 'error', reason: 'disconnected' });
      const timer = setTimeout(() => {
        this.waiting.delete(ref);
        resolvePromise({ op: 'timeout' });
      }, ms);
      this.waiting.set(ref, {
        sent: performance.now(),
        resolve: (a) => {
          clearTimeout(timer);
          resolvePromise(a);
        },
      });
      this.ws.send(pack({ ...m, ref }));
    });
  }

  close(): void {
    this.ws?.removeAllListeners('close');
    this.ws?.close();
  }
}

// ------------------------------------------------------------------ set up

/** One member with the credit for a long run of purchases. */
const BUYER = { name: 'Soak Buyer', card: '4000000000000036', pin: '2468', limit: 1_000_000_000_000_000, used: 0 };
const TALK: TalkProduct = {
  name: 'soak-talk',
  kind: 'talk',
  currency: 'EUR',
  face: 1_000_000_000,
  price: 1_000_000,
  plan: 'std',
  thresholds: [300, 60],
  expiryDays: 365,
  maxCalls: 1,
};
const STOCK: TalkProduct = { ...TALK, name: 'soak-stock', face: 10_000_000, price: 10_000_000 };
const WALLET: GoodsProduct = {
  name: 'soak-wallet',
  kind: 'goods',
  currency: 'EUR',
  face: 1_000_000_000_000,
  price: 1_000_000,
  venues: [],
  expiryDays: 365,
};

interface Catalog {
  swTok: string;
  scanTok: string;
  salesTok: string;
  /** Sold talk IDs not in a call right now. */
  freeIds: string[];
  wallets: string[];
}

/** The plan, products and item, a token per role, sold IDs for the calls and wallets, stock for the sales. */
async function loadCatalog(ctx: Context, opts: Options): Promise<Catalog> {
  await putPlans(ctx.redis, [{ name: 'std', rates: [{ prefix: '', rate: 100, fee: 0 }] }]);
  await putProducts(ctx.redis, [TALK, STOCK, WALLET]);
  await putItems(ctx.redis, [{ venue: 'arena', item: 'coffee', price: 2_500_000 }]);
  const swTok = (await createToken(ctx.redis, { name: SWITCH, role: 'switch' })).token;
  const scanTok = (await createToken(ctx.redis, { name: SCANNER, role: 'scanner', venue: 'arena' })).token;
  const salesTok = (await createToken(ctx.redis, { name: 'soak-sales', role: 'sales' })).token;
  const sold = async (p: TalkProduct | GoodsProduct, n: number): Promise<string[]> => {
    const ids: string[] = [];
    await mintIds(ctx, p, n, (id) => ids.push(id));
    for (const id of ids) await activateId(ctx, id, { price: p.price });
    return ids;
  };
  const freeIds = await sold(TALK, opts.calls * 2);
  const wallets = await sold(WALLET, 500);
  await mintIds(ctx, STOCK, Math.ceil(opts.minutes * 60 * opts.saleRate * 1.2) + 10, () => undefined);
  return { swTok, scanTok, salesTok, freeIds, wallets };
}

/** The two gateway processes; each one started writes its log to a file of its own (errors are counted at the end). */
class Gateways {
  readonly gws: (GatewayChild | undefined)[] = [];
  readonly logFiles: string[] = [];
  constructor(
    private readonly tmp: string,
    private readonly cluster: string,
    private readonly providerUrl: string,
  ) {}

  async start(i: number): Promise<void> {
    const logFile = join(this.tmp, `gateway-${i}-${this.logFiles.length}.log`);
    this.logFiles.push(logFile);
    this.gws[i] = await startGatewayChild({
      redisUrl: '',
      cluster: this.cluster,
      dataDir: this.tmp,
      secret: SECRET,
      env: { PROVIDER_URL: this.providerUrl },
      logFile,
    });
  }

  /** The ports of the gateways alive now. */
  ports(): number[] {
    return this.gws
      .filter((g): g is GatewayChild => !!g && g.proc.exitCode === null && g.proc.signalCode === null)
      .map((g) => g.port);
  }
}

interface Setup {
  tmp: string;
  cluster: LocalCluster;
  sandbox: Sandbox;
  ctx: Context;
  catalog: Catalog;
  gateways: Gateways;
}

async function setUp(opts: Options): Promise<Setup> {
  const tmp = makeTmp('tessera-soak-', opts.keep);
  // --ack-cost runs no soak: the soak's rates and faults would misdescribe it.
  console.log(
    opts.ackCost
      ? `tessera bench:soak --ack-cost  rounds=${Math.max(1, opts.minutes)}: replicated acknowledgements on vs off, no faults`
      : `tessera bench:soak  minutes=${opts.minutes} calls=${opts.calls} redeem-rate=${opts.redeemRate}/s sale-rate=${opts.saleRate}/s faults=${!opts.faults ? 'off' : `every ${opts.faultEvery} s`}`,
  );
  const cluster = await startLocalCluster(tmp);
  const sandbox = new Sandbox({ members: [BUYER] });
  const providerUrl = `http://127.0.0.1:${await sandbox.listen()}`;
  const env = {
    REDIS_CLUSTER: cluster.url,
    TESSERA_SECRET: SECRET,
    DATA_DIR: tmp,
    LOG_LEVEL: 'silent',
    PROVIDER_URL: providerUrl,
  };
  const ctx: Context = await openContext(loadConfig(env), createLogger('silent'));
  const t0Setup = performance.now();
  const catalog = await loadCatalog(ctx, opts);
  const gateways = new Gateways(tmp, cluster.url, providerUrl);
  await gateways.start(0);
  await gateways.start(1);
  console.log(
    `setup: cluster ${cluster.url}; ${fmtInt(catalog.freeIds.length + catalog.wallets.length)} IDs sold in ${((performance.now() - t0Setup) / 1000).toFixed(1)} s; gateways on ${gateways.ports().join(', ')}`,
  );
  return { tmp, cluster, sandbox, ctx, catalog, gateways };
}

// ----------------------------------------------------------------- traffic

type Result = { ok: boolean; reason?: string };

/** The running traffic: what it counts, and how to stop it. */
class Traffic {
  readonly S = { start: stat(), tick: stat(), stop: stat(), redeem: stat(), sale: stat() };
  readonly billing = { calls: 0, off: 0, worst: 0 };
  /** Calls answered `started` and not yet `stopped`, by call id -> ID. */
  readonly open = new Map<string, string>();
  /** What was acknowledged, to look for in Redis at the end. */
  readonly acked = {
    stops: [] as { call: string; id: string }[],
    redemptions: [] as { scanKey: string; id: string; at: number; port: number; body: unknown }[],
    sales: [] as string[],
  };
  running = true;
  private callSeq = 0;
  private scans = 0;
  private purchases = 0;

  constructor(
    private readonly s: Setup,
    private readonly switches: SwitchConn[],
  ) {}

  /** Times fn into s when it succeeds, counts its reason when not. */
  async timed(s: Stat, fn: () => Promise<Result>): Promise<Result> {
    const t0 = performance.now();
    const r = await fn();
    if (r.ok) {
      s.ok++;
      recordMs(s.hist, performance.now() - t0);
    } else fail(s, r.reason ?? 'unknown');
    return r;
  }

  /** One call slot: calls one after another on a free ID until the traffic stops. */
  async callSlot(slot: number): Promise<void> {
    const sw = this.switches[slot % this.switches.length]!;
    const { freeIds } = this.s.catalog;
    while (this.running) {
      const id = freeIds.shift();
      if (!id) return;
      const call = `call-${++this.callSeq}`;
      if (await this.admit(sw, call, id)) await this.stopCall(sw, call, id, await this.tickCall(sw, call));
      freeIds.push(id);
    }
  }

  /** Starts the call, retried while refused (20 tries). */
  private async admit(sw: SwitchConn, call: string, id: string): Promise<boolean> {
    let admitted = false;
    for (let tries = 0; tries < 20 && this.running && !admitted; tries++) {
      const r = await this.timed(this.S.start, async () => {
        const a = await sw.request({ op: 'start', call, id, dest: DEST });
        return a.op === 'started' ? { ok: true } : { ok: false, reason: String(a.reason ?? a.op) };
      });
      admitted = r.ok;
      if (!admitted) await sleep(500);
    }
    if (admitted) this.open.set(call, id);
    return admitted;
  }

  /** A tick a second for 10 to 60 s (at least 2 once the traffic stops); returns the last sec. */
  private async tickCall(sw: SwitchConn, call: string): Promise<number> {
    const length = 10 + Math.floor(Math.random() * 50);
    const t0 = Date.now();
    let sec = 0;
    while (sec < length && (this.running || sec < 2)) {
      await sleep(Math.max(0, t0 + (sec + 1) * 1000 - Date.now()));
      sec = Math.floor((Date.now() - t0) / 1000);
      void this.timed(this.S.tick, async () => {
        const a = await sw.request({ op: 'tick', call, sec });
        return a.op === 'ticked' ? { ok: true } : { ok: false, reason: String(a.reason ?? a.op) };
      });
    }
    return sec;
  }

  /** The stop is retried until it is answered: a repeated stop returns the first record. */
  private async stopCall(sw: SwitchConn, call: string, id: string, sec: number): Promise<void> {
    let billed: number | undefined;
    for (let tries = 0; tries < 60 && billed === undefined; tries++) {
      const t0Stop = performance.now();
      const r = await sw.request({ op: 'stop', call, sec, cause: 'normal', id, dest: DEST });
      if (r.op === 'stopped') {
        billed = Number(r.billedSec);
        recordMs(this.S.stop.hist, performance.now() - t0Stop);
      } else {
        fail(this.S.stop, String(r.reason ?? r.op));
        await sleep(500);
      }
    }
    if (billed !== undefined) {
      this.open.delete(call);
      this.acked.stops.push({ call, id });
      this.S.stop.ok++;
      this.billing.calls++;
      const off = Math.abs(billed - sec);
      this.billing.worst = Math.max(this.billing.worst, off);
      if (off > 1) this.billing.off++;
    }
  }

  /** A POST to a live gateway at random; status 0 when none answers. */
  private async http(
    path: string,
    token: string,
    body: unknown,
    headers: Record<string, string> = {},
  ): Promise<{ status: number; json: Record<string, unknown>; port: number }> {
    const p = this.s.gateways.ports();
    if (p.length === 0) return { status: 0, json: { error: { reason: 'no_gateway' } }, port: 0 };
    const port = p[Math.floor(Math.random() * p.length)]!;
    try {
      const res = await fetch(`http://127.0.0.1:${port}${path}`, {
        method: 'POST',
        headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/json', ...headers },
        body: JSON.stringify(body),
        signal: AbortSignal.timeout(5000),
      });
      return { status: res.status, json: (await res.json()) as Record<string, unknown>, port };
    } catch {
      return { status: 0, json: { error: { reason: 'connection_failed' } }, port };
    }
  }

  redeem(): void {
    const { scanTok, wallets } = this.s.catalog;
    void this.timed(this.S.redeem, async () => {
      const scan = `soak-${++this.scans}`;
      const id = wallets[this.scans % wallets.length]!;
      const r = await this.http('/v1/redeem', scanTok, { scan, id, item: 'coffee' });
      if (r.status === 200)
        this.acked.redemptions.push({ scanKey: `${SCANNER}:${scan}`, id, at: Date.now(), port: r.port, body: r.json });
      return r.status === 200 ? { ok: true } : { ok: false, reason: reasonOf(r.json) };
    });
  }

  /** A purchase, retried with the same Idempotency-Key while the answer is unsure. */
  purchase(): void {
    const key = `soak-purchase-${++this.purchases}`;
    const { salesTok } = this.s.catalog;
    void this.timed(this.S.sale, async () => {
      for (let tries = 0; ; tries++) {
        const r = await this.http(
          '/v1/purchases',
          salesTok,
          { product: STOCK.name, pin: '4711', payment: { card: BUYER.card, cardPin: BUYER.pin } },
          { 'Idempotency-Key': key },
        );
        if (r.status === 200) {
          this.acked.sales.push(String(r.json.id));
          return { ok: true };
        }
        const reason = reasonOf(r.json);
        if (
          tries >= 5 ||
          !['payment_pending', 'unavailable', 'in_progress', 'connection_failed', 'no_gateway', 'overloaded'].includes(
            reason,
          )
        )
          return { ok: false, reason };
        await sleep(1000);
      }
    });
  }

  errorCount(): number {
    return Object.values(this.S).reduce((n, s) => n + [...s.errors.values()].reduce((a, b) => a + b, 0), 0);
  }
}

const reasonOf = (j: Record<string, unknown>): string =>
  String((j.error as { reason?: string } | undefined)?.reason ?? 'unknown');

/** Starts every kind of traffic; `stop` ends it and waits for every call to stop. */
function startTraffic(opts: Options, t: Traffic): { stop(): Promise<void> } {
  const redeemTimer = setInterval(() => {
    for (let i = 0; i < opts.redeemRate / 10; i++) t.redeem();
  }, 100);
  const saleTimer = setInterval(() => {
    for (let i = 0; i < opts.saleRate; i++) t.purchase();
  }, 1000);
  const slots = Array.from({ length: opts.calls }, (_, i) => sleep((i * 1000) / opts.calls).then(() => t.callSlot(i)));
  return {
    async stop() {
      t.running = false;
      clearInterval(redeemTimer);
      clearInterval(saleTimer);
      await Promise.all(slots);
    },
  };
}

// ------------------------------------------------------------------ faults

/** The faults in turn: SIGKILL gateway A, SIGKILL a primary, SIGSTOP a primary, SIGKILL gateway B. */
function faultList(s: Setup): (() => Promise<string>)[] {
  const { base, nodesDir } = s.cluster;
  const gws = s.gateways;
  const nodePid = (port: number): number =>
    Number(
      spawnSync('redis-cli', ['-p', String(port), 'info', 'server'], { encoding: 'utf8' }).stdout.match(
        /process_id:(\d+)/,
      )?.[1] ?? 0,
    );
  const primaryPort = (): number => {
    const out = spawnSync('redis-cli', ['-p', String(base + 1), 'cluster', 'nodes'], { encoding: 'utf8' }).stdout;
    const line = out.split('\n').find((l) => / master /.test(l.replace('myself,', '')) && !l.includes('fail'));
    return Number(/:(\d+)@/.exec(line ?? '')?.[1] ?? base);
  };
  return [
    async () => {
      gws.gws[0]!.proc.kill('SIGKILL');
      setTimeout(() => void gws.start(0), 3000);
      return 'SIGKILL gateway A (back in 3 s)';
    },
    async () => {
      const port = primaryPort();
      process.kill(nodePid(port), 'SIGKILL');
      // As systemd (Restart=always) would: the promoted replica takes writes once this node is back as its replica.
      setTimeout(() => spawnSync('sh', [CLUSTER_SCRIPT, 'node', nodesDir, String(port)]), 3000);
      return `SIGKILL primary ${port} (restarted in 3 s)`;
    },
    async () => {
      const port = primaryPort();
      const pid = nodePid(port);
      s.cluster.freeze(pid, 5000);
      return `SIGSTOP primary ${port} for 5 s`;
    },
    async () => {
      gws.gws[1]!.proc.kill('SIGKILL');
      setTimeout(() => void gws.start(1), 3000);
      return 'SIGKILL gateway B (back in 3 s)';
    },
  ];
}

/** Until the end: a fault every --fault-every seconds, a timeline line every 10 s. Returns the faults injected and when the run began. */
async function runFaults(opts: Options, s: Setup, t: Traffic): Promise<{ faults: string[]; tStart: number }> {
  const FAULTS = faultList(s);
  const faults: string[] = [];
  const endAt = Date.now() + opts.minutes * 60_000;
  const tStart = Date.now();
  let nextFault = tStart + opts.faultEvery * 1000;
  let lastLine = tStart;
  const last = { tick: 0, redeem: 0, sale: 0 };
  while (Date.now() < endAt) {
    await sleep(250);
    if (opts.faults && Date.now() >= nextFault) {
      nextFault += opts.faultEvery * 1000;
      const what = await FAULTS[faults.length % FAULTS.length]!();
      faults.push(`${Math.round((Date.now() - tStart) / 1000)} s: ${what}`);
      console.log(`  fault  ${faults[faults.length - 1]}`);
    }
    if (!opts.quiet && Date.now() - lastLine >= 10_000) {
      const dt = (Date.now() - lastLine) / 1000;
      const { S } = t;
      console.log(
        `  t=${String(Math.round((Date.now() - tStart) / 1000)).padStart(4)}s  ticks ${fmtInt((S.tick.ok - last.tick) / dt)}/s  redemptions ${fmtInt((S.redeem.ok - last.redeem) / dt)}/s  sales ${((S.sale.ok - last.sale) / dt).toFixed(1)}/s  errors so far ${fmtInt(t.errorCount())}  gateways ${s.gateways.ports().length}`,
      );
      Object.assign(last, { tick: S.tick.ok, redeem: S.redeem.ok, sale: S.sale.ok });
      lastLine = Date.now();
    }
  }
  return { faults, tStart };
}

// ------------------------------------------------------------------ losses

/** What was acknowledged and is not there: the verdict fails on any of it. */
interface Lost {
  /** Calls answered `started` that were never answered `stopped`. */
  calls: number;
  /** Calls answered `stopped` whose session is not closed in Redis. */
  stops: number;
  /** Redemptions answered ok whose scan is not in Redis. */
  redemptions: number;
  /** Sales answered with an ID that is not sold in Redis. */
  sales: number;
  /** Answers `internal`, of any kind of traffic. */
  internal: number;
  total: number;
}

async function findLosses(ctx: Context, t: Traffic): Promise<Lost & { recovered: number }> {
  const missing = async <T>(items: T[], present: (item: T) => Promise<boolean>): Promise<number> => {
    let n = 0;
    for (let i = 0; i < items.length; i += 200)
      n += (await Promise.all(items.slice(i, i + 200).map(present))).filter((ok) => !ok).length;
    return n;
  };
  const where = (id: string): { hash: string; bucket: number } => ctx.ids.hash(id);
  const windows = new ScanWindows(ctx.cfg.scanTtlSec);
  const stops = await missing(t.acked.stops, async ({ call, id }) => {
    const { bucket } = where(id);
    return (await ctx.redis.hget(keys.call(bucket, `${SWITCH}:${call}`), 'st')) === 'closed';
  });
  const redemptions = await missing(t.acked.redemptions, async ({ scanKey, id, at, port, body }) => {
    const records = windows.at(Date.now()).map((w) => keys.scans(where(id).bucket, w));
    const there = (await Promise.all(records.map((k) => ctx.redis.hexists(k, scanKey)))).includes(1);
    if (!there && process.env.SOAK_DEBUG)
      console.log(
        `  missing ${scanKey} bucket ${where(id).bucket} acked at ${new Date(at).toISOString()} by :${port} ${JSON.stringify(body)}`,
      );
    return there;
  });
  const sales = await missing(t.acked.sales, async (id) => {
    const { hash, bucket } = where(id);
    return (await ctx.redis.hget(keys.id(bucket, hash), 'st')) === 'sold';
  });
  const internal = Object.values(t.S).reduce((n, s) => n + (s.errors.get('internal') ?? 0), 0);
  const calls = t.open.size;
  // Calls billed from their stop because their start was lost: not a loss, but worth knowing.
  let recovered = 0;
  for (let b = 0; b < ctx.cfg.buckets; b++)
    for (const [, fields] of await ctx.redis.xrange(keys.cdr(b), '-', '+'))
      if (fields[fields.length - 1] === 'recovered') recovered++;
  return {
    calls,
    stops,
    redemptions,
    sales,
    internal,
    total: calls + stops + redemptions + sales + internal,
    recovered,
  };
}

// ------------------------------------------------------------------ report

/** Prints each kind of traffic, billing, faults and the audit; returns the per-kind figures. */
function printResults(
  t: Traffic,
  faults: string[],
  report: Awaited<ReturnType<typeof audit>>,
  wall: number,
): Record<string, unknown> {
  console.log('\nresults');
  const out: Record<string, unknown> = {};
  for (const [name, s] of Object.entries(t.S)) {
    const lat = summarize(s.hist);
    const errors = Object.fromEntries([...s.errors].sort((a, b) => b[1] - a[1]));
    out[name] = { ok: s.ok, perSec: Math.round((s.ok / wall) * 10) / 10, latency: lat, errors };
    console.log(
      `  ${name.padEnd(8)} ${fmtInt(s.ok).padStart(9)} ok (${(s.ok / wall).toFixed(1)}/s)  errors ${JSON.stringify(errors)}`,
    );
    console.log(`  ${fmtLatency(`${name}`, lat)}`);
  }
  const { billing } = t;
  console.log(
    `  billing  ${fmtInt(billing.calls)} calls stopped; billed seconds off by more than 1 from the switch's: ${billing.off} (worst ${billing.worst})`,
  );
  console.log(`  faults   ${faults.length ? faults.join('; ') : 'none'}`);
  console.log(
    `  audit    ${report.problems.length === 0 ? 'ok' : `${report.problems.length} ID(s) do not balance`}: ${fmtInt(report.sold)} IDs sold, value ${fmtInt(report.valueSold)} = balances ${fmtInt(report.balances)} + calls ${fmtInt(report.calls)} + redemptions ${fmtInt(report.redeemed)} + refunds ${fmtInt(report.refunded)}`,
  );
  return out;
}

// -------------------------------------------------------------------- main

async function main(): Promise<void> {
  const opts = options(process.argv.slice(2));
  cleanUpOnExit();
  const s = await setUp(opts);
  if (opts.ackCost) return ackCost(opts, s);
  const switches = [0, 1, 2, 3].map((i) => new SwitchConn(`sw${i}`, s.catalog.swTok, () => s.gateways.ports(), i));
  await Promise.all(switches.map((sw) => sw.connect()));
  const t = new Traffic(s, switches);
  const traffic = startTraffic(opts, t);
  const { faults, tStart } = await runFaults(opts, s, t);

  await traffic.stop();
  await sleep(2000);
  const wall = (Date.now() - tStart) / 1000;
  const report = await audit(s.ctx);
  const out = printResults(t, faults, report, wall);
  const { recovered, ...lost } = await findLosses(s.ctx, t);
  console.log(
    `  lost     ${lost.total}: ${lost.calls} calls started and never stopped, ${lost.stops} stopped calls, ${lost.redemptions} redemptions and ${lost.sales} sales acknowledged and missing, ${lost.internal} internal answers; ${recovered} calls billed from their stop (recovered)`,
  );
  const verdict = lost.total === 0 && report.problems.length === 0 && t.billing.off === 0;
  console.log(`  verdict  ${verdict ? 'ok' : 'FAILED'}`);
  for (const g of s.gateways.gws) if (g) await stopChild(g.proc);
  const gwErrors = errorLines(s.gateways.logFiles);
  console.log(
    `  gateway  ${gwErrors.total} error log lines${gwErrors.total ? `: ${JSON.stringify(gwErrors.byMessage)}` : ''}`,
  );
  for (const sw of switches) sw.close();
  await s.ctx.close();
  await s.sandbox.close();
  s.cluster.stop();
  // The JSON line last, after removeTmp's "kept DIR" (--keep).
  removeTmp();
  const { billing } = t;
  printJsonLine({
    bench: 'soak',
    minutes: opts.minutes,
    calls: opts.calls,
    redeemRate: opts.redeemRate,
    saleRate: opts.saleRate,
    wallSec: wall,
    ...out,
    billing: { ...billing, lost, recovered },
    verdict: verdict ? 'ok' : 'failed',
    faults,
    gatewayErrors: gwErrors,
    audit: { ok: report.problems.length === 0, problems: report.problems.slice(0, 20), sold: report.sold },
  });
  if (!verdict) process.exitCode = 1;
}

/** --ack-cost: starts, stops and redemptions a second with replicated acknowledgements on and off, same run. */
async function ackCost(opts: Options, s: Setup): Promise<void> {
  const off = await startGatewayChild({
    redisUrl: '',
    cluster: s.cluster.url,
    dataDir: s.tmp,
    secret: SECRET,
    env: { PROVIDER_URL: 'http://127.0.0.1:9', REDIS_REPLICATED_ACKS: 'off' },
  });
  const figures = await measureAckCost({
    targets: [
      { acks: 'on', port: s.gateways.ports()[0]! },
      { acks: 'off', port: off.port },
    ],
    swTok: s.catalog.swTok,
    scanTok: s.catalog.scanTok,
    talkIds: s.catalog.freeIds,
    wallets: s.catalog.wallets,
    item: 'coffee',
    dest: DEST,
    rounds: Math.max(1, opts.minutes),
    secondsPerPhase: 5,
    concurrency: Math.min(50, Math.floor(s.catalog.freeIds.length / 2)),
  });
  const [on, offF] = figures;
  console.log('\nreplicated acknowledgements: on vs off, same cluster, in turns');
  for (const f of figures)
    console.log(
      `  ${f.acks.padEnd(4)} starts ${f.startsPerSec}/s  stops ${f.stopsPerSec}/s  redemptions ${f.redemptionsPerSec}/s  errors ${f.errors}`,
    );
  const ratio = (a: number, b: number): number => Math.round((a / b) * 100) / 100;
  const ratios = {
    starts: ratio(on!.startsPerSec, offF!.startsPerSec),
    stops: ratio(on!.stopsPerSec, offF!.stopsPerSec),
    redemptions: ratio(on!.redemptionsPerSec, offF!.redemptionsPerSec),
  };
  console.log(`  on/off starts ${ratios.starts}  stops ${ratios.stops}  redemptions ${ratios.redemptions}`);
  await stopChild(off.proc);
  for (const g of s.gateways.gws) if (g) await stopChild(g.proc);
  await s.ctx.close();
  await s.sandbox.close();
  s.cluster.stop();
  removeTmp();
  printJsonLine({ bench: 'soak', mode: 'ack-cost', rounds: Math.max(1, opts.minutes), ratios, ackCost: figures });
}

runMain(main);

/** Error-level lines (pino level 50 and up) of the gateways' log files, counted by message. */
function errorLines(files: string[]): { total: number; byMessage: Record<string, number> } {
  const byMessage: Record<string, number> = {};
  let total = 0;
  for (const file of files) {
    if (!existsSync(file)) continue;
    for (const line of readFileSync(file, 'utf8').split('\n')) {
      if (!line.startsWith('{')) continue;
      let entry: { level?: number; msg?: string; err?: { message?: string } };
      try {
        entry = JSON.parse(line) as typeof entry;
      } catch {
        continue;
      }
      if ((entry.level ?? 0) < 50) continue;
      total++;
      const key = `${entry.msg ?? ''}: ${entry.err?.message ?? ''}`.slice(0, 200);
      byMessage[key] = (byMessage[key] ?? 0) + 1;
    }
  }
  return { total, byMessage };
}

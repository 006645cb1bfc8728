/**
 * Call billing through the switch protocol against a model written from the
 * docs (billing-model.ts): random sequences of starts, ticks and updates
 * (with and without ref, repeated, racing back), stops under the call's own
 * name and under others (with the ID and destination: the call found, or
 * recovered as a lost one), top-ups, blocks and unblocks, reapings and resent
 * messages, on products of one or two calls whose plan bills per second, in
 * 60/6 blocks, and in 30/6 blocks with a minimum duration and cost and a
 * disconnect charge, with odd faces and top-ups smaller than a block; two
 * messages of a call sometimes sent back to back. Every answer (admission,
 * grant, balance, seconds left, final, cut-offs and their action, stopped
 * figures) must be the model's, and at each seed's end so must every ID's
 * balance, each call's records (cost and short) and the audit. Seeded, so a
 * failure names the seed and the steps that lead to it.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RatePlan } from '../../src/catalog/schema';
import { putPlans, putProducts } from '../../src/catalog/store';
import type { Gateway } from '../../src/gateway/server';
import { audit } from '../../src/ledger/audit';
import { setIdState } from '../../src/ledger/ids';
import { redisTimeMs } from '../../src/redis/clock';
import { cdrsOf } from '../metering/fixtures';
import { gateway, soldIds, startHarness, talkProduct, token, uniq, type Harness } from '../support/harness';
import { metricsText, parseMetrics } from '../support/metrics';
import { hashOf, idFields } from '../support/redis';
import { random, type Random } from '../support/random';
import { until } from '../support/wait';
import { Client, type Msg } from '../support/ws-client';
import { BillingModel, type ModelCall, type Tariff } from './billing-model';

/** Per second to 49, 60/6 blocks with a fee to 33, 30/6 blocks with every minimum and a disconnect charge to 44. */
const PLAN: RatePlan = {
  name: 'billing-model',
  rates: [
    { prefix: '49', rate: 100, fee: 0 },
    { prefix: '33', rate: 50, fee: 1000, initial: 60, next: 6 },
    { prefix: '44', rate: 40, fee: 2000, initial: 30, next: 6, minSec: 60, minCost: 5000, disconnect: 1000 },
  ],
};
const DESTS = ['4912345', '4977777', '33612345678', '4420000'];
/** A rate's terms with the documented defaults (operations.md "Rate plans"). */
const TARIFFS = new Map<string, Tariff>(
  DESTS.map((dest) => {
    const r = PLAN.rates.find((x) => dest.startsWith(x.prefix))!;
    const t: Tariff = {
      rate: r.rate,
      fee: r.fee,
      initial: r.initial ?? 1,
      next: r.next ?? 1,
      minSec: r.minSec ?? 0,
      minCost: r.minCost ?? 0,
      disconnect: r.disconnect ?? 0,
    };
    return [dest, t];
  }),
);
/** Small, so a reaping needs no long wait: the test waits for Redis' clock to pass it (no timer reaps). */
const STALE_MS = 50;

let h: Harness;
let gw: Gateway;
beforeAll(async () => {
  h = await startHarness();
  await putPlans(h.ctx.redis, [PLAN]);
  gw = await gateway(h, { staleAfterMs: STALE_MS, ringTimeoutMs: STALE_MS, reapIntervalMs: 3_600_000 });
});
afterAll(async () => {
  await gw?.close();
  await h?.stop();
});

type CallOp =
  | { op: 'tick' | 'update'; ni: number; call: string; sec: number; ref: boolean }
  | { op: 'stop'; ni: number; call: string; sec: number; withId: boolean; idx: number; dest: string };
type Op =
  | CallOp
  | { op: 'start'; ni: number; call: string; idx: number; dest: string; mode: 'tick' | 'quota' }
  | { op: 'topup'; idx: number; amount: number }
  | { op: 'block' | 'unblock'; idx: number }
  | { op: 'reap' }
  | { op: 'resend' }
  | { op: 'burst'; ops: CallOp[] };

const CALL_IDS = ['a', 'b', 'c'];
const FACES = [3000, 4321, 5000, 6150, 8000, 12000, 9999];
/** Some below a 33 block (300) or a 44 block (240), or not a whole number of seconds. */
const TOPUPS = [50, 120, 250, 333, 500, 1000, 3000];

/** The random steps of a seed, drawn from what the model holds (so a seed's steps never depend on the gateway). */
function steps(rnd: Random, model: BillingModel, names: number, ids: number) {
  const one = (): Op => {
    const ni = rnd.int(0, names - 1);
    const calls = [...model.calls.values()];
    const r = rnd.next();
    if (r < 0.2 || calls.length === 0)
      return {
        op: 'start',
        ni,
        call: rnd.pick(CALL_IDS),
        idx: rnd.int(0, ids - 1),
        dest: rnd.pick(DESTS),
        mode: rnd.chance(0.2) ? 'quota' : 'tick',
      };
    const live = calls.filter((c) => c.state === 'live');
    const c = live.length && rnd.chance(0.85) ? rnd.pick(live) : rnd.pick(calls);
    const own = Number(c.name.split('.')[1]);
    if (r < 0.55) {
      const secs = [c.sec + rnd.int(1, 5), c.sec + rnd.int(5, 40), c.sec, c.sec - rnd.int(1, 10), c.grant];
      return {
        op: c.mode === 'quota' && rnd.chance(0.8) ? 'update' : 'tick',
        ni: rnd.chance(0.9) ? own : ni,
        call: c.call,
        sec: Math.max(0, rnd.pick([...secs, c.grant + rnd.int(1, 4), c.grant - 1])),
        ref: rnd.chance(0.6),
      };
    }
    if (r < 0.78) {
      const other = rnd.chance(0.4);
      let sec = Math.max(0, rnd.pick([c.sec, c.sec + rnd.int(1, 10), c.sec - rnd.int(1, 8), 0, rnd.int(0, 3)]));
      // Under another name, the call is found when it started no later than `sec` before the stop,
      // give or take 5 s: seconds far from that edge (a call started well within it, or long
      // before) keep the outcome the same however slowly the machine runs.
      if (other && sec > 2) sec = 12 + (sec % 3);
      return {
        op: 'stop',
        ni: other ? rnd.int(0, 3) : own,
        call: c.call,
        sec,
        withId: other || rnd.chance(0.5),
        idx: c.idx,
        dest: rnd.chance(0.85) ? c.dest : rnd.pick(DESTS),
      };
    }
    if (r < 0.84) return { op: 'topup', idx: rnd.int(0, ids - 1), amount: rnd.pick(TOPUPS) };
    // Blocks often enough to land on live calls, most of all those past or at their grant.
    if (r < 0.92) return { op: rnd.chance(0.6) ? 'block' : 'unblock', idx: rnd.int(0, ids - 1) };
    if (r < 0.96) return { op: 'reap' };
    return { op: 'resend' };
  };
  return (): Op => {
    if (model.calls.size && rnd.chance(0.12)) {
      // Two messages of one call on one connection, back to back: the gateway takes them together.
      // (Two calls', or two connections', have no order between them.)
      const ops: CallOp[] = [];
      for (let i = 0; i < 40 && ops.length < 2; i++) {
        const o = one();
        if (o.op !== 'tick' && o.op !== 'update' && o.op !== 'stop') continue;
        if (ops[0] && (ops[0].ni !== o.ni || ops[0].call !== o.call)) continue;
        // Answered, so that each tick's cut-off is told from the other's.
        ops.push(o.op === 'tick' ? { ...o, ref: true } : o);
      }
      if (ops.length === 2) return { op: 'burst', ops };
    }
    return one();
  };
}

/** The gateway's tick count (every tick answered, refused or silent is one event). */
async function ticksHandled(port: number): Promise<number> {
  const samples = parseMetrics(await metricsText(port));
  return samples
    .filter((s) => s.name === 'tessera_events_total' && s.labels.op === 'tick')
    .reduce((a, s) => a + s.value, 0);
}

/** What one seed covered, for the test to check it is not vacuous. */
type Feature =
  | 'two-call blocks'
  | 'odd top-up'
  | 'blocked'
  | 'other name'
  | 'recovered'
  | 'disconnect'
  | 'minimum'
  | 'burst'
  | 'reaped'
  | 'short'
  | 'exhausted';

/** Runs one seed's steps against the gateway; returns what disagreed with the model, the log and what it covered. */
async function runSeed(seed: number, count: number) {
  const rnd = random(seed);
  const face = rnd.pick(FACES);
  const redirect = rnd.chance(0.5);
  const maxCalls = rnd.chance(0.5) ? 2 : 1;
  const product = talkProduct({
    name: uniq(`bm${seed}`, 3),
    face,
    price: face,
    plan: PLAN.name,
    thresholds: [],
    maxCalls,
    ...(redirect ? { finalAction: 'redirect' as const, redirectTo: '+18005550100' } : {}),
  });
  await putProducts(h.ctx.redis, [product]);
  await gw.catalog.refresh();
  const nIds = rnd.int(1, 3);
  const nNames = rnd.int(1, 4);
  const idList = await soldIds(h, product, 3);
  const model = new BillingModel(
    idList.map((id) => ({ id, balance: face, free: face, active: 0, blocked: false })),
    maxCalls,
    TARIFFS,
  );
  // `<random>.<index>`: unique to this run, and the generator reads the index back.
  const names = Array.from({ length: 4 }, (_, i) => `${uniq('bm', 3)}.${i}`);
  const conns: Client[] = [];
  for (const n of names) conns.push(await Client.connect(gw.port, await token(h, 'switch', n)));
  const next = steps(rnd, model, nNames, nIds);
  const log: string[] = [];
  const bad: string[] = [];
  const seen = new Set<Feature>();
  const done: Op[] = [];
  let ref = 0;
  let lastStart = 0;

  const exec = async (op: Op, step: number): Promise<void> => {
    const say = (x: string): number => log.push(`#${step} ${JSON.stringify(op)} ${x}`);
    const differ = (what: string, want: unknown, got: unknown): void => {
      const m = `#${step} ${what}: model ${JSON.stringify(want)}, gateway ${JSON.stringify(got)}`;
      bad.push(m);
      log.push(`  !! ${m}`);
    };
    const outcome = (a: Msg): string => (a.op === 'error' ? String(a.reason) : String(a.op));
    switch (op.op) {
      case 'resend': {
        const prev = [...done].reverse().find((o) => ['start', 'tick', 'update', 'stop'].includes(o.op));
        if (prev) await exec(prev, step);
        return;
      }
      case 'burst':
        seen.add('burst');
        // Both sent before either is answered (exec sends before its first await).
        await Promise.all(op.ops.map((o) => exec(o, step)));
        return;
      case 'start': {
        // Two starts in one millisecond tie on their start time, and "the latest started" is moot.
        await until(() => Date.now() > lastStart, 1000, 1, 'a new millisecond');
        const m = model.ids[op.idx]!;
        const want = model.start(names[op.ni]!, op.call, op.idx, op.dest, op.mode, Date.now());
        const a = await conns[op.ni]!.request({
          op: 'start',
          ref: ++ref,
          call: op.call,
          id: m.id,
          dest: op.dest,
          mode: op.mode,
        });
        lastStart = Date.now();
        say(`-> ${JSON.stringify(a)}`);
        if (outcome(a) !== want.answer) differ('start', want.answer, outcome(a));
        else if (a.op === 'started') {
          if (a.maxSec !== want.maxSec) differ('maxSec', want.maxSec, a.maxSec);
          if (want.grant !== undefined && a.grant !== want.grant) differ('grant', want.grant, a.grant);
          if (maxCalls === 2 && TARIFFS.get(op.dest)!.initial > 1) seen.add('two-call blocks');
        }
        if (want.answer === 'blocked') seen.add('blocked');
        return;
      }
      case 'tick':
      case 'update': {
        const c = conns[op.ni]!;
        const answered = op.op === 'update' || op.ref;
        const want = model.tick(names[op.ni]!, op.call, op.sec, op.op, answered);
        const from = c.received.length;
        const msg: Msg = { op: op.op, call: op.call, sec: op.sec, ...(answered ? { ref: ++ref } : {}) };
        let a: Msg | undefined;
        if (answered) a = await c.request(msg);
        else {
          // Nothing answers it: wait until the gateway has handled it, then for a reply to a
          // request sent after that, which leaves behind any cut-off the tick brought.
          const before = await ticksHandled(gw.port);
          c.send(msg);
          await until(async () => (await ticksHandled(gw.port)) > before, 5000, 10, 'the tick handled');
          await c.request({ op: 'stop', ref: ++ref, call: uniq('none') });
        }
        const upto = a ? c.received.indexOf(a) : c.received.length;
        const cuts = c.received.slice(from, upto).filter((x) => x.op === 'cutoff' && x.call === op.call);
        say(`-> ${JSON.stringify(a ?? null)} cut=${JSON.stringify(cuts)}`);
        if (a && outcome(a) !== want.answer) differ(`${op.op} answer`, want.answer, outcome(a));
        for (const x of cuts) {
          const action = x.reason === 'exhausted' && redirect ? 'redirect' : 'terminate';
          if (x.action !== action) differ('cutoff action', action, x.action);
          if (x.reason === 'exhausted') seen.add('exhausted');
          if (x.reason === 'blocked') seen.add('blocked');
        }
        const cut = cuts.length ? String(cuts[cuts.length - 1]!.reason) : null;
        if (want.cutoff !== undefined && cut !== want.cutoff) differ(`${op.op} cutoff`, want.cutoff, cut);
        if (a && a.op !== 'error' && want.figures) {
          const got = { grant: a.grant, balance: a.balance, secLeft: a.secLeft, final: !!a.final };
          if (JSON.stringify(got) !== JSON.stringify(want.figures)) differ(`${op.op} figures`, want.figures, got);
        }
        return;
      }
      case 'stop': {
        const m = model.ids[op.idx]!;
        const name = names[op.ni]!;
        const ownCall = model.calls.get(`${name}:${op.call}`);
        const lost = op.withId ? { idx: op.idx, dest: op.dest } : null;
        const want = model.stop(name, op.call, op.sec, lost, Date.now());
        const msg: Msg = { op: 'stop', ref: ++ref, call: op.call, sec: op.sec };
        if (op.withId) Object.assign(msg, { id: m.id, dest: op.dest });
        const a = await conns[op.ni]!.request(msg);
        say(`-> ${JSON.stringify(a)}`);
        if (outcome(a) !== want.answer) differ('stop', want.answer, outcome(a));
        else if (want.figures) {
          const got = { billedSec: a.billedSec, cost: a.cost, balance: a.balance };
          if (JSON.stringify(got) !== JSON.stringify(want.figures)) differ('stopped figures', want.figures, got);
        }
        const c = model.calls.get(`${name}:${op.call}`);
        if (!ownCall && c?.state === 'recovered') seen.add('recovered');
        else if (!ownCall && lost && want.answer === 'stopped') seen.add('other name');
        return;
      }
      case 'topup': {
        const r = await gw.topups.operator(model.ids[op.idx]!.id, op.amount, 'billing model');
        say(`-> ${JSON.stringify(r)}`);
        const want = model.topUp(op.idx, op.amount);
        if ((r.ok ? r.balance : r.reason) !== want) differ('top-up', want, r.ok ? r.balance : r.reason);
        if (op.amount < 300) seen.add('odd top-up');
        return;
      }
      case 'block':
      case 'unblock': {
        const r = await setIdState(h.ctx, model.ids[op.idx]!.id, op.op);
        say(`-> ${JSON.stringify(r)}`);
        const want = model.setBlocked(op.idx, op.op === 'block');
        if ((r.ok ? 'ok' : r.reason) !== want) differ(op.op, want, r.ok ? 'ok' : r.reason);
        return;
      }
      case 'reap': {
        // Every call ticked or started before now is quiet once Redis' clock is STALE_MS past it.
        const now = await redisTimeMs(h.ctx.redis);
        await until(async () => (await redisTimeMs(h.ctx.redis)) > now + STALE_MS, 5000, 10, 'calls gone quiet');
        const n = await gw.reaper.sweep();
        say(`-> reaped ${n}`);
        const want = model.reap();
        if (n !== want) differ('reaped', want, n);
        if (n > 0) seen.add('reaped');
        return;
      }
    }
  };

  for (let i = 0; i < count; i++) {
    const op = next();
    await exec(op, i);
    if (op.op !== 'resend') done.push(...(op.op === 'burst' ? [] : [op]));
  }
  // The end: every live call stopped under its own name, then the books.
  for (const c of [...model.calls.values()])
    if (c.state === 'live') {
      const ni = names.indexOf(c.name);
      await exec({ op: 'stop', ni, call: c.call, sec: c.sec, withId: false, idx: c.idx, dest: c.dest }, count);
    }
  for (const [i, m] of model.ids.entries()) {
    const f = await idFields(h, m.id);
    if (Number(f.bal) !== m.balance) bad.push(`end: id${i} balance: model ${m.balance}, Redis ${f.bal}`);
    if (Number(f.act ?? 0) !== 0) bad.push(`end: id${i} has ${f.act} calls`);
    for (const c of model.calls.values()) if (c.idx === i) checkRecords(c, await recordsOf(m.id, c), bad);
  }
  for (const c of model.calls.values()) {
    if (c.t.disconnect > 0 && c.sec > 0) seen.add('disconnect');
    if (c.t.minSec > 0 && c.sec > 0 && c.sec < c.t.minSec) seen.add('minimum');
    if (c.short > 0) seen.add('short');
  }
  const report = await audit(h.ctx);
  if (report.problems.length) bad.push(`audit: ${JSON.stringify(report.problems)}`);
  for (const c of conns) await c.close();
  return { bad, log, seen, done };
}

/** A call's records: under the name that started it (or that recovered it), on its ID. */
async function recordsOf(id: string, c: ModelCall): Promise<Record<string, string>[]> {
  return (await cdrsOf(h, id, c.call)).filter((r) => r.switch === c.name && r.id === hashOf(h, id));
}

/** Its records together hold what the call paid and what it ran short. */
function checkRecords(c: ModelCall, recs: Record<string, string>[], bad: string[]): void {
  const cost = recs.reduce((a, r) => a + Number(r.cost), 0);
  const short = recs.reduce((a, r) => a + Number(r.short), 0);
  if (cost !== c.paid || short !== c.short)
    bad.push(
      `end: records of ${c.key}: model cost ${c.paid} short ${c.short}, records ` +
        JSON.stringify(recs.map((r) => [r.cause, r.sec, r.cost, r.short])),
    );
}

describe('call billing against its documented model', () => {
  /** Seeds chosen for what they reach (checked below, so that a change to the steps cannot quietly drop it). */
  const SEEDS: { seed: number; covers: Feature[] }[] = [
    { seed: 37, covers: ['two-call blocks', 'blocked', 'other name', 'odd top-up', 'disconnect', 'minimum'] },
    { seed: 68, covers: ['blocked', 'exhausted', 'reaped', 'other name', 'odd top-up'] },
    { seed: 88, covers: ['blocked', 'exhausted', 'other name', 'recovered', 'odd top-up'] },
    { seed: 92, covers: ['two-call blocks', 'reaped', 'recovered', 'disconnect', 'short', 'burst'] },
    { seed: 108, covers: ['reaped', 'recovered', 'other name', 'disconnect', 'minimum', 'short', 'burst'] },
    { seed: 158, covers: ['blocked', 'reaped', 'recovered', 'burst'] },
    { seed: 184, covers: ['blocked', 'reaped', 'recovered', 'other name', 'disconnect', 'minimum'] },
  ];
  for (const { seed, covers } of SEEDS)
    it(`seed ${seed}: ${covers.join(', ')}`, async () => {
      const { bad, log, seen } = await runSeed(seed, 60);
      expect(bad, log.join('\n')).toEqual([]);
      expect([...seen]).toEqual(expect.arrayContaining(covers));
    });
});

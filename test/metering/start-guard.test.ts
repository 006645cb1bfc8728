/**
 * The fraud guard on starts, over the switch WebSocket: unknown_id answers to a
 * switch count against its token name like a scanner's guesses (GUESS_LIMIT per
 * GUESS_WINDOW_SEC); past the limit its starts are refused `throttled`, valid
 * IDs too, while other switch tokens go on; the window ends and it starts again.
 * Starts sent at once all reach Redis, but only one answer over the limit is
 * unknown_id. A switch that names each call's origin gets its origins counted
 * apart, and all of them together against SWITCH_GUESS_LIMIT.
 */
import { randomInt } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { seedCatalog, soldIds, startHarness, talkProduct, token, withGateway, type Harness } from '../support/harness';
import { metricsText, sample } from '../support/metrics';
import { guessCount, idFields } from '../support/redis';
import { sleep, until } from '../support/wait';
import { Client, type Msg } from '../support/ws-client';
import { connectSwitch, newCall } from './fixtures';
import { generateId } from '../../src/ids/idnum';

const LIMIT = 3;
const WINDOW = 2;
/** A gateway's guess limits in these tests: small, to reach them quickly. */
const LIMITS = { guessLimit: LIMIT, guessWindowSec: WINDOW };

let h: Harness;

beforeAll(async () => {
  h = await startHarness();
  await seedCatalog(h);
});
afterAll(async () => {
  await h?.stop();
});

describe('unknown IDs on start', () => {
  it('past GUESS_LIMIT a switch is refused throttled even for a valid ID, another switch is not, and the window ends', () =>
    withGateway(h, LIMITS, async (g) => {
      const a = await connectSwitch(h, g.port);
      const b = await connectSwitch(h, g.port, { binary: true });
      const [id1, id2, id3] = (await soldIds(h, talkProduct({ maxCalls: 5 }), 3)) as [string, string, string];
      const start = (on: typeof a, id: string): Promise<Msg> => {
        const call = newCall();
        return on.c.request({ op: 'start', ref: call, call, id, dest: '4912345' });
      };

      // Up to the limit, and the one over it, answered unknown_id; then throttled.
      const answers: string[] = [];
      for (let i = 0; i < LIMIT + 2; i++) answers.push(String((await start(a, generateId(h.cfg.idLength))).reason));
      expect(answers).toEqual([...Array<string>(LIMIT + 1).fill('unknown_id'), 'throttled']);

      // A valid ID waits too: refused before Redis is asked, nothing admitted.
      const call = newCall();
      const r = await a.c.request({ op: 'start', ref: 1, call, id: id1, dest: '4912345' });
      expect(r).toEqual({
        op: 'error',
        ref: 1,
        call,
        reason: 'throttled',
        message: 'call refused: throttled',
        retryAfter: expect.any(Number),
      });
      expect(r.retryAfter).toBeGreaterThanOrEqual(1);
      expect(r.retryAfter).toBeLessThanOrEqual(WINDOW);
      expect((await idFields(h, id1)).act).toBe('0');

      // Another switch token is not affected; its own unknown IDs are its own count.
      const other = await start(b, id2);
      expect(other).toMatchObject({ op: 'started', maxSec: 10_000 });
      expect(await b.c.request({ op: 'stop', ref: 'b', call: other.call, sec: 0 })).toMatchObject({ op: 'stopped' });
      expect(await start(b, generateId(h.cfg.idLength))).toMatchObject({ reason: 'unknown_id' });

      const m = await metricsText(g.port);
      expect(sample(m, 'tessera_unknown_id_starts_total')).toBe(LIMIT + 2);
      expect(sample(m, 'tessera_switch_throttled_total')).toBe(1);
      // The scanners' counters are theirs alone.
      expect(sample(m, 'tessera_unknown_id_scans_total')).toBe(0);
      expect(sample(m, 'tessera_scanner_throttled_total')).toBe(0);

      // The window ends: the counter in Redis goes, and the switch starts calls again.
      await sleep(r.retryAfter * 1000);
      await until(async () => (await h.r.keys(`ts:{b*}:guess:sw:${a.name}`)).length === 0, 3000);
      const again = await start(a, id3);
      expect(again).toMatchObject({ op: 'started', maxSec: 10_000 });
      await a.c.request({ op: 'stop', ref: 'a', call: again.call, sec: 0 });
      expect(await start(a, generateId(h.cfg.idLength))).toMatchObject({ reason: 'unknown_id' });
      await Promise.all([a.c.close(), b.c.close()]);
    }));

  it('with origins, one origin past GUESS_LIMIT is throttled alone; all origins together stop at SWITCH_GUESS_LIMIT', () =>
    withGateway(h, { ...LIMITS, switchGuessLimit: 7 }, async (g) => {
      const a = await connectSwitch(h, g.port);
      const ids = await soldIds(h, talkProduct({ maxCalls: 5 }), 4);
      const start = async (id: string, origin?: string): Promise<string> => {
        const call = newCall();
        const r = await a.c.request({ op: 'start', ref: call, call, id, dest: '4912345', ...(origin && { origin }) });
        if (r.op === 'started') await a.c.request({ op: 'stop', ref: 's', call, sec: 0 });
        return String(r.op === 'started' ? 'started' : r.reason);
      };
      const guess = (origin?: string): Promise<string> => start(generateId(h.cfg.idLength), origin);

      // One caller keys wrong IDs: only that caller is refused.
      const answers: string[] = [];
      for (let i = 0; i < LIMIT + 2; i++) answers.push(await guess('192.0.2.7'));
      expect(answers).toEqual([...Array<string>(LIMIT + 1).fill('unknown_id'), 'throttled']);
      expect(await start(ids[0]!, '192.0.2.7')).toBe('throttled');
      const quote = await a.c.request({ op: 'quote', ref: 'q', id: ids[0], dest: '4912345', origin: '192.0.2.7' });
      expect(quote).toMatchObject({ op: 'error', reason: 'throttled' });
      expect(await start(ids[0]!, '192.0.2.8')).toBe('started');
      expect(await start(ids[1]!)).toBe('started');
      expect(await guessCount(h, `swo:${a.name}/192.0.2.7`)).toBe(LIMIT + 1);

      // Made-up origins are no way around the limit: the switch's misses together stop at 7.
      const spread: string[] = [];
      for (let i = 0; i < 5; i++) spread.push(await guess(`198.51.100.${i}`));
      expect(spread).toEqual(['unknown_id', 'unknown_id', 'unknown_id', 'unknown_id', 'throttled']);
      expect(await guessCount(h, `swa:${a.name}`)).toBe(8);
      expect(await start(ids[2]!, '203.0.113.1')).toBe('throttled');
      // Starts without an origin are the switch's own count, still under GUESS_LIMIT.
      expect(await start(ids[3]!)).toBe('started');

      // An origin is printable ASCII, at most 64 characters.
      for (const [i, origin] of ['', 'a b', 'x'.repeat(65), 5].entries())
        expect(
          await a.c.request({ op: 'start', ref: `o${i}`, call: newCall(), id: ids[3], dest: '4912345', origin }),
          JSON.stringify(origin),
        ).toMatchObject({ op: 'error', reason: typeof origin === 'number' ? 'bad_type' : 'bad_value' });
      // Every origin's state goes with its window: made-up origins leave nothing behind.
      expect(g.metering.guesses.tracked).toBeGreaterThan(0);
      await until(() => g.metering.guesses.tracked === 0, (WINDOW + 2) * 1000);
      await a.c.close();
    }));

  it('a start sent again for its call is one guess: the two connectors of a switch, a resend', () =>
    withGateway(h, LIMITS, async (g) => {
      // Two connections of one token name, as a Kamailio's two connectors: both send every start.
      const a = await connectSwitch(h, g.port);
      const b = await Client.connect(g.port, await token(h, 'switch', a.name));
      const twice = async (id: string, origin?: string): Promise<string[]> => {
        const call = newCall();
        const m = { op: 'start', ref: call, call, id, dest: '4912345', ...(origin && { origin }) };
        const first = await a.c.request(m);
        return [String(first.reason), String((await b.request(m)).reason)];
      };
      const answers: string[][] = [];
      for (let i = 0; i < LIMIT + 2; i++) answers.push(await twice(generateId(h.cfg.idLength)));
      // Counted per copy, the second copies took the limit at half the calls. The copy of the
      // start that went over it finds the switch throttled already, as any later start does.
      expect(answers).toEqual([
        ...Array<string[]>(LIMIT).fill(['unknown_id', 'unknown_id']),
        ['unknown_id', 'throttled'],
        ['throttled', 'throttled'],
      ]);
      expect(await guessCount(h, `sw:${a.name}`)).toBe(LIMIT + 1);

      // Counted per origin as well: a caller's guesses, sent by both connectors, count once each.
      for (let i = 0; i < LIMIT; i++) await twice(generateId(h.cfg.idLength), '192.0.2.9');
      expect(await guessCount(h, `swo:${a.name}/192.0.2.9`)).toBe(LIMIT);
      expect(await guessCount(h, `swa:${a.name}`)).toBe(LIMIT);
      await Promise.all([a.c.close(), b.close()]);
    }));

  it('each ID (or number) a call tries is a guess of its own: one call id is no way around the limit', () =>
    withGateway(h, LIMITS, async (g) => {
      const a = await connectSwitch(h, g.port);
      // An IVR that lets its caller key the ID again after "invalid card" starts one call id
      // with one ID after another; a compromised token may reuse a call id on purpose.
      const call = newCall();
      const tries = async (named: () => Record<string, string>, origin?: string): Promise<string[]> => {
        const answers: string[] = [];
        for (let i = 0; i < LIMIT + 2; i++) {
          const m = { op: 'start', ref: i, call, dest: '4912345', ...named(), ...(origin && { origin }) };
          answers.push(String((await a.c.request(m)).reason));
        }
        return answers;
      };
      const over = [...Array<string>(LIMIT + 1).fill('unknown_id'), 'throttled'];
      expect(await tries(() => ({ id: generateId(h.cfg.idLength) }))).toEqual(over);
      expect(await guessCount(h, `sw:${a.name}`)).toBe(LIMIT + 1);
      const unknownAni = over.map((r) => (r === 'unknown_id' ? 'unknown_ani' : r));
      const ani = (): Record<string, string> => ({ ani: `+4915${randomInt(10_000_000, 99_999_999)}` });
      expect(await tries(ani, '192.0.2.10')).toEqual(unknownAni);
      expect(await guessCount(h, `swo:${a.name}/192.0.2.10`)).toBe(LIMIT + 1);
      await a.c.close();
    }));

  it('starts in flight at once are not held back, but past the limit their misses answer throttled, counted once', () =>
    withGateway(h, LIMITS, async (g) => {
      const a = await connectSwitch(h, g.port, { binary: true });
      const BURST = 100;
      const starts = Array.from({ length: BURST }, (_, i) => {
        const call = newCall();
        return { op: 'start', ref: i, call, id: generateId(h.cfg.idLength), dest: '4912345' };
      });
      const answers = await a.c.requestAll(starts);
      const reasons = answers.map((r) => String(r.reason));
      expect(reasons.filter((r) => r === 'unknown_id')).toHaveLength(LIMIT + 1);
      expect(reasons.filter((r) => r === 'throttled')).toHaveLength(BURST - LIMIT - 1);
      // Every start reached Redis: a switch's starts are not bounded in flight (docs/protocol.md).
      expect(await guessCount(h, `sw:${a.name}`)).toBe(BURST);
      const m = await metricsText(g.port);
      expect(sample(m, 'tessera_unknown_id_starts_total')).toBe(BURST);
      expect(sample(m, 'tessera_switch_throttled_total')).toBe(1);
      await a.c.close();
    }));
});

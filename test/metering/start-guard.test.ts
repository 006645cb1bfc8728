/**
 * The fraud guard on starts, over the switch WebSocket: unknown_id answers to a
 * switch count against its token name like a scanner's guesses (GUESS_LIMIT per
 * GUESS_WINDOW_SEC); past the limit its starts are refused `throttled`, valid
 * IDs too, while other switch tokens go on; the window ends and it starts again.
 * Starts sent at once all reach Redis, but only one answer over the limit is
 * unknown_id.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { seedCatalog, soldIds, startHarness, talkProduct, withGateway, type Harness } from '../support/harness';
import { metricsText, sample } from '../support/metrics';
import { guessCount, idFields } from '../support/redis';
import { sleep, until } from '../support/wait';
import { type Msg } from '../support/ws-client';
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

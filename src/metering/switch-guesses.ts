import type { IdKeys } from '../ids/secrets';
import { GuessThrottle } from '../ledger/guess-throttle';
import type { RedisClient } from '../redis/connect';
import { keys } from '../redis/keys';

/**
 * Who an unknown ID counts against when a switch asks (docs/protocol.md,
 * Guessed IDs). A switch is shared by all its callers: counted as one client,
 * one caller keying wrong IDs would get every caller of the switch refused
 * `throttled` for the rest of the window. A switch that says where a call
 * comes from (`origin`: the caller's address, trunk or number, as the switch
 * knows it) gets each origin counted apart against `GUESS_LIMIT`, and all its
 * origins together against `SWITCH_GUESS_LIMIT`, so that made-up origins are
 * no way around the limit. Without an origin the switch is one client, as before.
 */
export class SwitchGuesses {
  /** Starts without an origin: the switch as a whole, `GUESS_LIMIT`. */
  private readonly bySwitch: GuessThrottle;
  /** Each origin of a switch, `GUESS_LIMIT`. */
  private readonly byOrigin: GuessThrottle;
  /** All origins of a switch together, `SWITCH_GUESS_LIMIT`. */
  private readonly allOrigins: GuessThrottle;
  private readonly windowSec: number;

  constructor(
    private readonly redis: RedisClient,
    private readonly ids: IdKeys,
    limits: { guessLimit: number; switchGuessLimit: number; guessWindowSec: number },
    onThrottled: () => void,
  ) {
    const { guessLimit, switchGuessLimit, guessWindowSec: window } = limits;
    this.windowSec = window;
    this.bySwitch = new GuessThrottle(redis, ids, { limit: guessLimit, windowSec: window, scope: 'sw', onThrottled });
    this.byOrigin = new GuessThrottle(redis, ids, { limit: guessLimit, windowSec: window, scope: 'swo', onThrottled });
    this.allOrigins = new GuessThrottle(redis, ids, {
      limit: switchGuessLimit,
      windowSec: window,
      scope: 'swa',
      onThrottled,
    });
  }

  /** Seconds the switch (or this origin of it) must wait, or 0. */
  retryAfter(sw: string, origin: string | undefined): number {
    if (origin === undefined) return this.bySwitch.retryAfter(sw);
    return Math.max(this.byOrigin.retryAfter(originKey(sw, origin)), this.allOrigins.retryAfter(sw));
  }

  /** Counts one unknown ID: seconds to answer `throttled` instead (GuessThrottle.miss), or 0. */
  async miss(sw: string, origin: string | undefined): Promise<number> {
    if (origin === undefined) return this.bySwitch.miss(sw);
    const [one, all] = await Promise.all([this.byOrigin.miss(originKey(sw, origin)), this.allOrigins.miss(sw)]);
    return Math.max(one, all);
  }

  /**
   * Counts the unknown ID of a start once per call: the same start sent again
   * (both connectors of a Kamailio send every start; a switch resends the
   * unanswered ones after a reconnect) is one guess, not one per copy, which
   * halved GUESS_LIMIT for two connectors. A copy is answered as the
   * switch's count stands: `throttled` past the limit, else not. `named`: the
   * ID (or caller number) the start names. A copy names what its start named;
   * another ID under the call id (an IVR's caller keying again, a token
   * reusing one call id) is another guess, else one call would try IDs unlimited.
   */
  async missOnce(sw: string, origin: string | undefined, call: string, named: string): Promise<number> {
    const key = keys.guessedCall(this.ids.bucketOf(`sw:${sw}`), sw, call, this.ids.mac(named).slice(0, 32));
    const first = await this.redis.set(key, '1', 'EX', this.windowSec, 'NX');
    return first === null ? this.retryAfter(sw, origin) : this.miss(sw, origin);
  }

  /**
   * Runs a quote's lookup holding a slot of the switch (or of its origin, then of all its
   * origins), as scanners' lookups do (GuessThrottle.withSlot): a burst of guessed IDs waits
   * its turn here, so an ID behind the miss that went over the limit is refused `throttled`,
   * not quoted. Starts are not held back (a switch starts thousands of calls at once), but a
   * quote has no such need and would otherwise be a guessing oracle of one frame's size.
   */
  holding<T>(sw: string, origin: string | undefined, refuse: (retryAfter: number) => T, lookUp: () => Promise<T>) {
    if (origin === undefined) return this.bySwitch.withSlot(sw, refuse, lookUp);
    return this.byOrigin.withSlot(originKey(sw, origin), refuse, () => this.allOrigins.withSlot(sw, refuse, lookUp));
  }

  /** Clients this gateway keeps state for: switches and origins with a window not over. */
  get tracked(): number {
    return this.bySwitch.tracked + this.byOrigin.tracked + this.allOrigins.tracked;
  }
}

/** Token names hold no '/', so a switch's origins never meet another switch's. */
const originKey = (sw: string, origin: string): string => `${sw}/${origin}`;

/**
 * A payment form sent twice (a double tap, a reload before the answer) is one
 * payment, and the browser shows only the answer to the last request: the
 * first one's page, the one with the ID, is thrown away. So while the first
 * attempt is at work (`in_progress`), the later one waits for it, asking
 * again, and answers what it ended with; after `ms`, `in_progress` as it is.
 *
 * Copies of one request waiting in this gateway wait together: one of them
 * asks again for all, each copy up to its own `ms`. Anyone may send a form's copies (they are not counted
 * against the buy limits, being one payment), and each copy asking Redis on
 * its own every POLL_MS while the card company works would make one request
 * cost a hundred Redis calls.
 */
const POLL_MS = 150;

type Answer = { ok: boolean; reason?: string };

/** A copy waiting on a shared poll: answered when the attempt ends, or with `in_progress` at its own deadline. */
interface Waiter<R> {
  until: number;
  done: (r: R) => void;
  fail: (err: unknown) => void;
}

export class Settler<R extends Answer> {
  /** The copies waiting on each poll under way, by the request they are for: its key and every field of it. */
  private readonly polls = new Map<string, Set<Waiter<R>>>();

  /** `same`: names the request, so that only copies of it (not another request under its key) share a poll. */
  async settled(ms: number, same: string, pay: () => Promise<R>): Promise<R> {
    const r = await pay();
    if (!busy(r) || ms <= 0) return r;
    return new Promise<R>((done, fail) => {
      // A copy that joins a poll keeps its own deadline: the poll goes on while any copy still waits.
      const waiter = { until: Date.now() + ms, done, fail };
      const waiting = this.polls.get(same);
      if (waiting) return void waiting.add(waiter);
      const copies = new Set([waiter]);
      this.polls.set(same, copies);
      void this.poll(same, copies, pay);
    });
  }

  private async poll(same: string, copies: Set<Waiter<R>>, pay: () => Promise<R>): Promise<void> {
    try {
      while (copies.size > 0) {
        await new Promise((resolve) => setTimeout(resolve, POLL_MS));
        const r = await pay();
        const now = Date.now();
        for (const c of copies)
          if (!busy(r) || now >= c.until) {
            copies.delete(c);
            c.done(r);
          }
      }
    } catch (err) {
      for (const c of copies) c.fail(err);
    } finally {
      this.polls.delete(same);
    }
  }
}

const busy = (r: Answer): boolean => !r.ok && r.reason === 'in_progress';

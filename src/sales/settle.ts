/**
 * A payment form sent twice (a double tap, a reload before the answer) is one
 * payment, and the browser shows only the answer to the last request: the
 * first one's page, the one with the ID, is thrown away. So while the first
 * attempt is at work (`in_progress`), the later one waits for it, asking
 * again, and answers what it ended with; after `ms`, `in_progress` as it is.
 *
 * Copies of one request waiting in this gateway wait together: one of them
 * asks again for all. Anyone may send a form's copies (they are not counted
 * against the buy limits, being one payment), and each copy asking Redis on
 * its own every POLL_MS while the card company works would make one request
 * cost a hundred Redis calls.
 */
const POLL_MS = 150;

type Answer = { ok: boolean; reason?: string };

export class Settler<R extends Answer> {
  /** Polls under way, by the request they are for: its key and every field of it. */
  private readonly polls = new Map<string, Promise<R>>();

  /** `same`: names the request, so that only copies of it (not another request under its key) share a poll. */
  async settled(ms: number, same: string, pay: () => Promise<R>): Promise<R> {
    const r = await pay();
    if (!busy(r) || ms <= 0) return r;
    let poll = this.polls.get(same);
    if (!poll) {
      poll = pollWhileBusy(Date.now() + ms, pay).finally(() => this.polls.delete(same));
      this.polls.set(same, poll);
    }
    return poll;
  }
}

const busy = (r: Answer): boolean => !r.ok && r.reason === 'in_progress';

async function pollWhileBusy<R extends Answer>(until: number, pay: () => Promise<R>): Promise<R> {
  for (;;) {
    await new Promise((resolve) => setTimeout(resolve, POLL_MS));
    const r = await pay();
    if (!busy(r) || Date.now() >= until) return r;
  }
}

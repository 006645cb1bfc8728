/**
 * A payment form sent twice (a double tap, a reload before the answer) is one
 * payment, and the browser shows only the answer to the last request: the
 * first one's page, the one with the ID, is thrown away. So while the first
 * attempt is at work (`in_progress`), the later one waits for it, asking
 * again, and answers what it ended with; after `ms`, `in_progress` as it is.
 */
export async function settled<R extends { ok: boolean; reason?: string }>(
  ms: number,
  pay: () => Promise<R>,
): Promise<R> {
  const until = Date.now() + ms;
  for (;;) {
    const r = await pay();
    if (r.ok || r.reason !== 'in_progress' || Date.now() >= until) return r;
    await new Promise((resolve) => setTimeout(resolve, 150));
  }
}

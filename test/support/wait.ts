/** Waiting in tests: a plain pause, and polling until a condition holds. */

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Polls until fn returns true; throws after timeoutMs, naming `what` when given. */
export async function until(
  fn: () => boolean | Promise<boolean>,
  timeoutMs = 5000,
  stepMs = 20,
  what = 'condition',
): Promise<void> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    if (await fn()) return;
    if (Date.now() > end) throw new Error(`${what} not met in time`);
    await sleep(stepMs);
  }
}

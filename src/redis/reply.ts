/** Reading a script's reply: anything its header does not promise is an error, never an answer. */

/** A script answered something its decoder does not know: a bug or a script out of step with the code. */
export function replyError(script: string, reply: unknown): Error {
  return new Error(`${script}: unexpected reply ${String(JSON.stringify(reply)).slice(0, 200)}`);
}

/** A reply that is an array led by its tag ('ok', 'err', 'no', 'skip'...). */
export function tagged(script: string, reply: unknown): readonly unknown[] {
  if (!Array.isArray(reply) || typeof reply[0] !== 'string') throw replyError(script, reply);
  return reply;
}

/** Element i of a reply, which must be a number. */
export function num(script: string, r: readonly unknown[], i: number): number {
  const v = r[i];
  if (typeof v !== 'number') throw replyError(script, r);
  return v;
}

/** Element i of a reply, which must be a string. */
export function str(script: string, r: readonly unknown[], i: number): string {
  const v = r[i];
  if (typeof v !== 'string') throw replyError(script, r);
  return v;
}

/** A rejected script call's reason as an Error, for callbacks that hand it on to a promise. */
export function asError(err: unknown): Error {
  return err instanceof Error ? err : new Error(String(err));
}

/** A script answered something its decoder does not know: a bug or a script out of step with the code. */
export function replyError(script: string, reply: unknown): Error {
  return new Error(`${script}: unexpected reply ${JSON.stringify(reply)?.slice(0, 200)}`);
}

/**
 * The answer of a call to another Durable Object, as plain data.
 *
 * Workers RPC gives every object it returns a disposer, and keeps the call's resources until it
 * runs. An object method that returns such an answer unchanged hands the disposer on to its own
 * caller, who must then dispose it too (the runtime warns "An RPC result was not disposed
 * properly" when the garbage collector gets there first). `take` runs the disposer at once and
 * removes it, so what it returns can be kept, changed or returned again.
 */
export async function take<P extends PromiseLike<unknown>>(call: P): Promise<Awaited<P>> {
  const answer: unknown = await call;
  if (typeof answer === "object" && answer !== null && Symbol.dispose in answer) {
    (answer as Disposable)[Symbol.dispose]();
    delete (answer as Partial<Disposable>)[Symbol.dispose];
  }
  return answer as Awaited<P>;
}

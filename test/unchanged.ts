/**
 * A group of calls that must each change nothing (refusals, and reads that must not write).
 *
 * If every call of a group changes nothing, the group as a whole changes nothing: so the state is
 * read once before the group's first test and once in its closing test, instead of twice per
 * call. Each call is still its own test with its own answer checked; the closing test names the
 * group, so a failure says which calls to look at (run them one by one with `-t` to find the
 * culprit: the closing test then compares against the state before the first of them that ran).
 *
 * The "before" read happens lazily in the group's first test that runs, so several groups can
 * follow each other inside one `describe` (a `beforeAll` would read every group's state before
 * any of their tests ran).
 */
import { expect, it } from "vitest";

export class Unchanged<S> {
  #before: Promise<S> | undefined;

  /** `read` returns everything the group must leave alone; `setup` runs once, before the first read. */
  constructor(
    private readonly read: () => Promise<S>,
    private readonly setup?: () => Promise<void>,
  ) {}

  /** The state as it was before the group's first test ran. */
  before(): Promise<S> {
    this.#before ??= (async () => {
      await this.setup?.();
      return this.read();
    })();
    return this.#before;
  }

  /** Declares one test of the group: `fn` runs after the group's state was read. */
  it(name: string, fn: () => Promise<void> | void, timeout?: number): void {
    it(
      name,
      async () => {
        await this.before();
        await fn();
      },
      timeout,
    );
  }

  /** Declares the group's closing test: the state now is the state before its first test. */
  check(name: string, compare: (now: S, before: S) => void = (now, before) => expect(now).toEqual(before), timeout?: number): void {
    it(
      name,
      async () => {
        const before = await this.before();
        compare(await this.read(), before);
      },
      timeout,
    );
  }
}

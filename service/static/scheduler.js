// Timing of requests: debounce the drawing, and never let an old answer overwrite a newer one.

/**
 * Returns `schedule()`: `fn` runs once calls have paused for `waitMs`, and at least every
 * `maxWaitMs` while they keep coming (so a long stroke still updates the view as it goes).
 * `schedule.flush()` runs a pending call now; `schedule.cancel()` drops it.
 * @param {() => void} fn
 * @param {number} waitMs
 * @param {number} maxWaitMs
 */
export function debounce(fn, waitMs, maxWaitMs = Infinity) {
  let timer = null;
  let firstCallAt = null;
  const fire = () => {
    clearTimeout(timer);
    timer = null;
    firstCallAt = null;
    fn();
  };
  const schedule = () => {
    const now = performance.now();
    if (firstCallAt === null) firstCallAt = now;
    clearTimeout(timer);
    timer = setTimeout(fire, Math.max(0, Math.min(waitMs, maxWaitMs - (now - firstCallAt))));
  };
  schedule.flush = () => {
    if (timer !== null) fire();
  };
  schedule.cancel = () => {
    clearTimeout(timer);
    timer = null;
    firstCallAt = null;
  };
  return schedule;
}

/**
 * Orders the answers of one kind of request. Take a ticket when sending; on the answer,
 * `accept(ticket)` is true only when no newer answer was applied and nothing newer was invalidated.
 */
export class Freshness {
  #issued = 0;
  #applied = 0;

  issue() {
    this.#issued += 1;
    return this.#issued;
  }

  accept(ticket) {
    if (ticket <= this.#applied) return false;
    this.#applied = ticket;
    return true;
  }

  /** Every ticket issued so far is stale (the input or the model changed). */
  invalidate() {
    this.#applied = this.#issued;
  }
}

// Work on the front cut into slices, one slice per turn of the event loop,
// so that one caller's big batch never holds everyone else's calls for
// longer than a slice takes.

/** Calls `fn` on `items` `per` at a time, each slice in its own turn (setImmediate), in order; resolves after the last, rejects with the first throw. */
export function inTurns<T>(items: readonly T[], per: number, fn: (slice: T[]) => void): Promise<void> {
  return new Promise((resolve, reject) => {
    let at = 0;
    const step = () => {
      try {
        fn(items.slice(at, at + per));
      } catch (err) {
        return reject(err as Error);
      }
      at += per;
      if (at < items.length) setImmediate(step);
      else resolve();
    };
    setImmediate(step);
  });
}

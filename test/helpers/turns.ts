// Counts the event loop's turns while work goes on: a callback that re-queues
// itself with setImmediate runs once per turn, so the count says whether
// other callbacks got in between a long piece of work's slices.

/** Starts counting turns; the function returned stops and says how many ran. */
export function countTurns(): () => number {
  let turns = 0;
  let ticking = true;
  const tick = () => {
    turns++;
    if (ticking) setImmediate(tick);
  };
  setImmediate(tick);
  return () => {
    ticking = false;
    return turns;
  };
}

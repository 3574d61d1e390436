/** Summary statistics for repeated timings. */
export interface Summary {
  median: number;
  min: number;
  max: number;
  n: number;
}

export function summarize(values: number[]): Summary {
  if (values.length === 0) return { median: NaN, min: NaN, max: NaN, n: 0 };
  const s = [...values].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  const median = s.length % 2 ? s[mid] : (s[mid - 1] + s[mid]) / 2;
  return { median, min: s[0], max: s[s.length - 1], n: s.length };
}

/** Runs of each method in an alternating order: ABC, CBA, ABC, … so drift hits all alike. */
export function alternatingOrder<T>(methods: T[], runs: number): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < runs; i++) out.push(i % 2 === 0 ? [...methods] : [...methods].reverse());
  return out;
}

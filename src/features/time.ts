export const SECOND = 1_000;
export const MINUTE = 60 * SECOND;
export const HOUR = 60 * MINUTE;
export const DAY = 24 * HOUR;

const UNITS: Record<string, number> = { s: SECOND, m: MINUTE, h: HOUR, d: DAY };

/** "90s", "5m", "1h", "7d" -> milliseconds. */
export function parseDuration(text: string): number {
  const m = /^(\d+)([smhd])$/.exec(text);
  if (!m) throw new Error(`not a duration: "${text}" (use e.g. 30s, 5m, 1h, 7d)`);
  return Number(m[1]) * (UNITS[m[2] as string] as number);
}

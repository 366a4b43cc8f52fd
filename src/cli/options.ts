// Checks of option values shared by the commands: a value that is not what the flag takes is a usage mistake
// (ConfigError: exit 2), named with the flag, before any work starts.
import { ConfigError } from '../config/config.ts';
import { parseDuration } from '../features/time.ts';

/** "90s", "5m", "1h", "7d" -> milliseconds. */
export function durationOption(flag: string, value: string): number {
  try {
    return parseDuration(value);
  } catch {
    throw new ConfigError(`${flag} "${value}" is not a duration (use e.g. 30s, 5m, 1h, 7d)`);
  }
}

/** A whole number of at least `min`. */
export function wholeOption(flag: string, value: string, min: number): number {
  const n = Number(value);
  if (value.trim() === '' || !Number.isInteger(n) || n < min)
    throw new ConfigError(`${flag} must be a whole number of at least ${min}, got "${value}"`);
  return n;
}

/** A share, from 0 to 1. */
export function shareOption(flag: string, value: string): number {
  const n = Number(value);
  if (value.trim() === '' || !(n >= 0 && n <= 1))
    throw new ConfigError(`${flag} must be a number from 0 to 1, got "${value}"`);
  return n;
}

/** An ISO-8601 time -> epoch ms. */
export function timeOption(flag: string, value: string): number {
  const t = Date.parse(value);
  if (Number.isNaN(t))
    throw new ConfigError(`${flag} "${value}" is not a time (use ISO-8601, e.g. 2026-11-02T00:00:00Z)`);
  return t;
}

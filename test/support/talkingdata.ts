// The TalkingData sample (Kaggle's TalkingData AdTracking Fraud Detection, train_sample.csv: 100,000 rows) is not
// part of the clone. Tests that need it say so when they skip, with where they looked and what to do.
import { existsSync } from 'node:fs';
import { join } from 'node:path';

/** TALKINGDATA_SAMPLE, else ../shared/data next to the clone (e.g. from a git worktree, point the variable at it). */
export const TALKINGDATA_SAMPLE =
  process.env.TALKINGDATA_SAMPLE ?? join(import.meta.dirname, '../../../shared/data/talkingdata_train_sample.csv');

/** Why the TalkingData tests skip, or undefined when the sample is there. */
export const talkingDataAbsent: string | undefined = existsSync(TALKINGDATA_SAMPLE)
  ? undefined
  : `TalkingData sample absent at ${TALKINGDATA_SAMPLE}: put Kaggle's TalkingData train_sample.csv there or set TALKINGDATA_SAMPLE=PATH`;

/** Skips the calling test visibly: a note in the report and a warning in the output. */
export function skipWithoutTalkingData(ctx: { skip: (condition: boolean, note?: string) => void }): void {
  if (talkingDataAbsent) console.warn(`skipped: ${talkingDataAbsent}`);
  ctx.skip(talkingDataAbsent !== undefined, talkingDataAbsent);
}

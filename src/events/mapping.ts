// Turns rows of someone else's data (CSV or flat NDJSON) into our events, through a declarative mapping:
//   { "<kind>": { "$when": "col=value"?, "<field>": "<source>" } }
// where a source is a column name, "=literal", or a template like "td-{line}" ({line} = the row's line number).
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type avro from 'avsc';
import { avroType, schemaText } from './catalog.ts';
import { type AnyEvent, EVENT_KINDS, type EventKind } from './types.ts';
import { validateEvent } from './validate.ts';

export type Row = Record<string, string | number | null | undefined>;
type FieldSource = (row: Row, line: number) => string | undefined;
type KindMapping = { when?: (row: Row) => boolean; fields: [string, FieldSource][] };
export type Mapping = Partial<Record<EventKind, KindMapping>>;

const PRESETS_DIR = join(dirname(fileURLToPath(import.meta.url)), 'mappings');

export function loadMapping(presetOrPath: string): Mapping {
  const path = /[/.]/.test(presetOrPath) ? presetOrPath : join(PRESETS_DIR, `${presetOrPath}.json`);
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(path, 'utf8'));
  } catch (err) {
    throw new Error(`cannot read mapping ${presetOrPath}: ${(err as Error).message}`);
  }
  return compileMapping(raw as Record<string, Record<string, string>>);
}

function compileSource(src: string): FieldSource {
  if (src.startsWith('=')) {
    const lit = src.slice(1);
    return () => lit;
  }
  if (src.includes('{')) {
    const parts = src.split(/(\{[^}]+\})/).filter((p) => p !== '');
    return (row, line) => {
      let s = '';
      for (const p of parts) {
        if (p.startsWith('{')) {
          const name = p.slice(1, -1);
          const v = name === 'line' ? line : row[name];
          if (v == null || v === '') return undefined;
          s += v;
        } else s += p;
      }
      return s;
    };
  }
  return (row) => {
    const v = row[src];
    return v == null || v === '' ? undefined : String(v);
  };
}

export function compileMapping(raw: Record<string, Record<string, string>>): Mapping {
  const m: Mapping = {};
  for (const [kind, spec] of Object.entries(raw)) {
    if (kind === 'description') continue;
    if (!(EVENT_KINDS as readonly string[]).includes(kind))
      throw new Error(`mapping names unknown event kind "${kind}"`);
    const schema = avroType(schemaText(kind as EventKind)) as avro.types.RecordType;
    const known = new Set(schema.fields.map((f) => f.name));
    const fields: [string, FieldSource][] = [];
    let when: KindMapping['when'];
    for (const [field, src] of Object.entries(spec)) {
      if (field === '$when') {
        const [col, val] = src.split('=');
        if (!col || val === undefined) throw new Error(`$when must look like column=value, got "${src}"`);
        when = (row) => String(row[col] ?? '') === val;
        continue;
      }
      if (!known.has(field)) throw new Error(`mapping for ${kind} names unknown field "${field}"`);
      fields.push([field, compileSource(src)]);
    }
    m[kind as EventKind] = { when, fields };
  }
  return m;
}

/** Parses "2017-11-07 9:30[:ss]" (UTC), ISO-8601, or epoch ms. NaN when it is none of these. */
export function parseTime(v: string): number {
  if (/^\d+$/.test(v)) return Number(v);
  const m = /^(\d{4})-(\d{2})-(\d{2})[ T](\d{1,2}):(\d{2})(?::(\d{2})(?:\.(\d{1,3}))?)?(Z)?$/.exec(v);
  if (m) {
    const [, y, mo, d, h, mi, s, ms] = m;
    return Date.UTC(
      +(y as string),
      +(mo as string) - 1,
      +(d as string),
      +(h as string),
      +(mi as string),
      +(s ?? 0),
      +(ms ?? 0),
    );
  }
  return Date.parse(v);
}

function convert(field: avro.Type, raw: string | undefined, name: string): unknown {
  const nullable = field.typeName.startsWith('union');
  if (raw === undefined) {
    if (nullable) return null;
    throw new Error(`${name} is missing`);
  }
  const base = nullable
    ? ((field as avro.types.UnwrappedUnionType).types.find((t: avro.Type) => t.typeName !== 'null') as avro.Type)
    : field;
  const tn = base.typeName;
  if (tn === 'timestamp-millis' || tn === 'long') {
    const t = parseTime(raw);
    if (Number.isNaN(t)) throw new Error(`${name} "${raw}" is not a time`);
    return t;
  }
  if (tn === 'int' || tn === 'double') {
    const n = Number(raw);
    if (!Number.isFinite(n)) throw new Error(`${name} "${raw}" is not a number`);
    return n;
  }
  return raw;
}

/** Maps one row to checked events; throws with the reason when a value is missing, malformed or absurd. */
export function mapRow(mapping: Mapping, row: Row, line: number, now: number): AnyEvent[] {
  const out: AnyEvent[] = [];
  for (const kind of EVENT_KINDS) {
    const km = mapping[kind];
    if (!km || (km.when && !km.when(row))) continue;
    const schema = avroType(schemaText(kind)) as avro.types.RecordType;
    const event: Record<string, unknown> = {};
    const given = new Map(km.fields);
    for (const f of schema.fields) {
      const src = given.get(f.name);
      event[f.name] = convert(f.type, src?.(row, line), f.name);
    }
    const errors: string[] = [];
    schema.isValid(event, { errorHook: (path) => errors.push(path.join('.')) });
    if (errors.length > 0) throw new Error(`${kind}: invalid value for ${errors.join(', ')}`);
    const invalid = validateEvent(kind, event as never, now);
    if (invalid) throw new Error(`${kind}: ${invalid}`);
    out.push({ kind, event } as unknown as AnyEvent);
  }
  return out;
}

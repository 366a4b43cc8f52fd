// deploy/ runs the same CLI on other machines, where nothing here can start it (no Docker engine, no cluster).
// What can drift is checked against the code: every command and flag a manifest passes is one the CLI has, every
// TRIBUTARY_* variable is one the configuration reads and its value loads, the ports and the objects manifests
// refer to exist, and the image copies files that exist. A renamed flag fails here, not in a cluster.
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parseAllDocuments } from 'yaml';
import { ENV, loadConfig } from '../../src/config/config.ts';

const ROOT = join(import.meta.dirname, '../..');
const DEPLOY = join(ROOT, 'deploy');

// biome-ignore lint/suspicious/noExplicitAny: parsed YAML, navigated by shape; the assertions are the checks
type Doc = Record<string, any>;

function documents(file: string): Doc[] {
  // merge: compose's `<<: *tributary` (YAML 1.1 merge keys, which Docker Compose reads).
  return parseAllDocuments(readFileSync(file, 'utf8'), { merge: true }).map((d) => {
    if (d.errors.length > 0) throw new Error(`${file}: ${d.errors[0]?.message}`);
    return d.toJS() as Doc;
  });
}

interface Invocation {
  where: string;
  args: string[];
  env: Record<string, string>;
  ports: number[];
}

const k8sDocs = readdirSync(join(DEPLOY, 'k8s'))
  .filter((f) => f.endsWith('.yaml'))
  .flatMap((f) => documents(join(DEPLOY, 'k8s', f)).map((doc) => ({ file: f, doc })));
const compose = documents(join(DEPLOY, 'compose.yaml'))[0] as Doc;

const configMaps = new Map(
  k8sDocs.filter(({ doc }) => doc.kind === 'ConfigMap').map(({ doc }) => [doc.metadata.name, doc.data]),
);

function k8sInvocations(): Invocation[] {
  const out: Invocation[] = [];
  for (const { file, doc } of k8sDocs) {
    const pod = doc.spec?.template?.spec ?? doc.spec?.jobTemplate?.spec?.template?.spec;
    if (!pod) continue;
    for (const c of [...(pod.initContainers ?? []), ...pod.containers]) {
      if (!String(c.image).startsWith('tributary:')) continue;
      const env: Record<string, string> = {};
      for (const from of c.envFrom ?? []) Object.assign(env, configMaps.get(from.configMapRef.name));
      for (const e of c.env ?? []) env[e.name] = e.value ?? '(from a reference)';
      out.push({
        where: `${file} ${doc.metadata.name}/${c.name}`,
        args: c.args,
        env,
        ports: (c.ports ?? []).map((p: Doc) => p.containerPort),
      });
    }
  }
  return out;
}

function composeInvocations(): Invocation[] {
  return Object.entries(compose.services as Record<string, Doc>)
    .filter(([, s]) => s.image === 'tributary:latest')
    .map(([name, s]) => ({
      where: `compose.yaml ${name}`,
      args: s.command,
      env: s.environment,
      // Published (HOST:CONTAINER) or only exposed to the compose network.
      ports: [...(s.ports ?? []).map((p: string) => p.split(':').at(-1)), ...(s.expose ?? [])].map(Number),
    }));
}

const invocations = [...k8sInvocations(), ...composeInvocations()];

/** `tributary [command] --help`, run as the image runs it. */
const helpOf = new Map<string, string>();
function help(command: string): string {
  let text = helpOf.get(command);
  if (text === undefined) {
    const args = ['--import', 'tsx', join(ROOT, 'src/cli/main.ts'), ...(command ? [command] : []), '--help'];
    const r = spawnSync(process.execPath, args, { encoding: 'utf8', cwd: ROOT });
    expect(r.status, `tributary ${command} --help: ${r.stderr}`).toBe(0);
    text = r.stdout;
    helpOf.set(command, text);
  }
  return text;
}

const flagOf = (args: readonly string[], flag: string) =>
  args.includes(flag) ? args[args.indexOf(flag) + 1] : undefined;

describe('deploy/', () => {
  it('runs every role through commands and flags the CLI has', () => {
    expect(invocations.map((i) => i.args[0]).sort()).toEqual(
      expect.arrayContaining(['retrain', 'score', 'score', 'serve', 'serve', 'stream', 'stream']),
    );
    const globalHelp = help('');
    for (const { where, args } of invocations) {
      const command = args[0] as string;
      if (command === '--help') continue;
      expect(globalHelp, `${where}: no command ${command}`).toMatch(new RegExp(`^  ${command}\\b`, 'm'));
      const text = help(command);
      for (const flag of args.filter((a) => a.startsWith('--')))
        expect(`${text}\n${globalHelp}`, `${where}: tributary ${command} has no ${flag}`).toMatch(
          new RegExp(`(^|[ ,])${flag}( |,|$)`, 'm'),
        );
    }
  }, 60_000);

  it('sets only TRIBUTARY_* variables the configuration reads, with values it loads', () => {
    const known = new Set(Object.values(ENV));
    for (const { where, env } of invocations) {
      const ours = Object.fromEntries(Object.entries(env).filter(([k]) => k.startsWith('TRIBUTARY_')));
      for (const name of Object.keys(ours)) expect(known, `${where}: ${name}`).toContain(name);
      expect(() => loadConfig({}, ours as NodeJS.ProcessEnv), where).not.toThrow();
      expect(loadConfig({}, ours as NodeJS.ProcessEnv).valkey, `${where}: no Valkey`).toMatch(/^redis:\/\//);
    }
  });

  it('listens where the ports, probes and services point', () => {
    for (const { where, args, ports } of invocations) {
      const port = args[0] === 'serve' ? flagOf(args, '--port') : flagOf(args, '--metrics-port');
      if (port === undefined) continue;
      expect(ports, `${where}: port ${port} not exposed`).toContain(Number(port));
      expect(flagOf(args, args[0] === 'serve' ? '--host' : '--metrics-host'), `${where}: listens on loopback`).toBe(
        '0.0.0.0',
      );
    }
    for (const { file, doc } of k8sDocs) {
      for (const c of doc.spec?.template?.spec?.containers ?? []) {
        const names = new Set((c.ports ?? []).map((p: Doc) => p.name));
        for (const probe of [c.readinessProbe, c.livenessProbe].filter(Boolean)) {
          const port = probe.httpGet?.port ?? probe.tcpSocket?.port;
          expect(names, `${file} ${c.name}: probe port ${port}`).toContain(port);
        }
      }
      if (doc.kind === 'Service') {
        const target = k8sDocs.find(
          ({ doc: d }) =>
            d.kind === 'Deployment' &&
            d.spec.template.metadata.labels['app.kubernetes.io/name'] === doc.spec.selector['app.kubernetes.io/name'],
        );
        const named = target?.doc.spec.template.spec.containers.flatMap((c: Doc) => c.ports.map((p: Doc) => p.name));
        for (const p of doc.spec.ports) expect(named, `${file} ${doc.metadata.name}`).toContain(p.targetPort);
      }
    }
  });

  it('refers only to objects the manifests define', () => {
    const defined = new Set(k8sDocs.map(({ doc }) => `${doc.kind}/${doc.metadata.name}`));
    const text = k8sDocs.map(({ doc }) => JSON.stringify(doc)).join('\n');
    const refs = [
      ...[...text.matchAll(/"configMapRef":\{"name":"([^"]+)"/g)].map((m) => `ConfigMap/${m[1]}`),
      ...[...text.matchAll(/"secretKeyRef":\{"name":"([^"]+)"/g)].map((m) => `Secret/${m[1]}`),
      ...[...text.matchAll(/"claimName":"([^"]+)"/g)].map((m) => `PersistentVolumeClaim/${m[1]}`),
      ...[...text.matchAll(/"scaleTargetRef":\{"apiVersion":"[^"]+","kind":"(\w+)","name":"([^"]+)"/g)].map(
        (m) => `${m[1]}/${m[2]}`,
      ),
    ];
    expect(refs.length).toBeGreaterThanOrEqual(8);
    for (const ref of refs) expect(defined, ref).toContain(ref);
  });

  it('builds an image from files that exist and starts the CLI', () => {
    const dockerfile = readFileSync(join(DEPLOY, 'Dockerfile'), 'utf8');
    const copies = [...dockerfile.matchAll(/^COPY (.+) \S+$/gm)].flatMap((m) => (m[1] as string).split(' '));
    expect(copies).toEqual(expect.arrayContaining(['package.json', 'package-lock.json', 'src', 'schemas']));
    for (const source of copies) expect(existsSync(join(ROOT, source)), source).toBe(true);
    const entry = JSON.parse(/^ENTRYPOINT (.+)$/m.exec(dockerfile)?.[1] ?? '[]') as string[];
    expect(entry).toEqual(['node', 'bin/tributary.js']); // the CLI in PID 1: see the stop-signal test in cli.test.ts
    expect(copies).toContain('bin');
    expect(compose.services.serve.build.dockerfile).toBe('deploy/Dockerfile');
  });
});

// The Valkey Cluster as tests drive it: keys per master, their removal, and slots moved between masters the way
// `valkey-cli --cluster reshard` moves them (IMPORTING/MIGRATING, MIGRATE of the slot's keys, then the new owner).
import type { Cluster, Redis } from 'iovalkey';

/** The keys matching `pattern` on each master. */
export async function keysByMaster(c: Cluster, pattern: string): Promise<string[][]> {
  return Promise.all(
    c.nodes('master').map(async (node) => {
      const keys: string[] = [];
      let cursor = '0';
      do {
        const [next, batch] = await node.scan(cursor, 'MATCH', pattern, 'COUNT', 1000);
        keys.push(...batch);
        cursor = next;
      } while (cursor !== '0');
      return keys;
    }),
  );
}

/** Removes the keys matching `pattern` from every master. */
export async function dropKeys(c: Cluster, pattern: string): Promise<void> {
  const byMaster = await keysByMaster(c, pattern);
  await Promise.all(
    c.nodes('master').map(async (node, i) => {
      for (const key of byMaster[i] ?? []) await node.unlink(key);
    }),
  );
}

interface Master {
  node: Redis;
  id: string;
}

/** Per slot, the master serving it now (from any node's view). */
async function owners(c: Cluster): Promise<{ masters: Master[]; owner: Master[] }> {
  const masters = await Promise.all(
    c.nodes('master').map(async (node) => ({ node, id: String(await node.call('CLUSTER', 'MYID')) })),
  );
  const owner = new Array<Master>(16384);
  const ranges = (await masters[0]?.node.call('CLUSTER', 'SLOTS')) as [number, number, [string, number, string]][];
  for (const [from, to, [, , id]] of ranges) {
    const m = masters.find((x) => x.id === id) as Master;
    for (let s = from; s <= to; s++) owner[s] = m;
  }
  return { masters, owner };
}

/** Moves each slot (with its keys) to the next master after its owner; resolves to how many keys moved. */
export async function moveSlots(c: Cluster, slots: Iterable<number>): Promise<number> {
  const { masters, owner } = await owners(c);
  let moved = 0;
  for (const slot of slots) {
    const from = owner[slot] as Master;
    const to = masters[(masters.indexOf(from) + 1) % masters.length] as Master;
    await to.node.call('CLUSTER', 'SETSLOT', slot, 'IMPORTING', from.id);
    await from.node.call('CLUSTER', 'SETSLOT', slot, 'MIGRATING', to.id);
    for (;;) {
      const keys = (await from.node.call('CLUSTER', 'GETKEYSINSLOT', slot, 100)) as string[];
      if (keys.length === 0) break;
      const { host, port } = to.node.options;
      await from.node.call('MIGRATE', host as string, port as number, '', 0, 10_000, 'KEYS', ...keys);
      moved += keys.length;
    }
    // The new owner first, then the old one (its clients are sent on with MOVED), then the third.
    for (const m of [to, from, ...masters.filter((x) => x !== to && x !== from)])
      await m.node.call('CLUSTER', 'SETSLOT', slot, 'NODE', to.id);
  }
  return moved;
}

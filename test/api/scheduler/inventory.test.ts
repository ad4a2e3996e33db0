// The inventory's indexes stay in step with machine states: free machines per shape, and reserved
// machines per pool (what the scheduler's pool limits are checked against).
import test from 'ava';
import { Inventory } from '../../../api/scheduler/inventory.js';
import type { MachineEntry } from '../../../api/scheduler/records.js';

const machine = (name: string, pool: string | undefined, state: MachineEntry['state'] = 'available'): Omit<MachineEntry, 'shapeKey'> => ({
  name,
  kind: 'openstack',
  labHost: 'local',
  access: 'direct',
  state,
  labels: pool ? { pool } : {},
  capacities: { cpus: 1 },
  settings: {},
  failures: 0,
});

test('reserved machines are counted per pool through every change of state', (t) => {
  const inventory = new Inventory();
  const a = inventory.add(machine('cloud-a', 'cloud'));
  const b = inventory.add(machine('cloud-b', 'cloud', 'reserved'));
  const other = inventory.add(machine('lab-1', undefined));
  t.is(inventory.reservedIn('cloud'), 1, 'a machine loaded reserved counts');
  inventory.setState(a, 'reserved');
  inventory.setState(other, 'reserved');
  t.is(inventory.reservedIn('cloud'), 2);
  inventory.setState(a, 'reserved');
  t.is(inventory.reservedIn('cloud'), 2, 'setting the same state twice counts once');
  inventory.setState(b, 'quarantined');
  t.is(inventory.reservedIn('cloud'), 1);
  inventory.setState(a, 'available');
  t.is(inventory.reservedIn('cloud'), 0);
  t.deepEqual(
    inventory.freeShapes().flatMap((shape) => shape.machines),
    ['cloud-a'],
  );
});

test('an offline machine is never free, and still counts in its pool while a reservation holds it', (t) => {
  const inventory = new Inventory();
  const held = inventory.add(machine('cloud-a', 'cloud', 'reserved'));
  const idle = inventory.add(machine('cloud-b', 'cloud'));
  inventory.setState(held, 'offline', 'reserved');
  inventory.setState(idle, 'offline', 'available');
  t.is(inventory.reservedIn('cloud'), 1, 'offline while reserved: still held');
  t.deepEqual(
    inventory.freeShapes().flatMap((shape) => shape.machines),
    [],
    'no offline machine is free',
  );
  t.is(inventory.allShapes()[0].machines.length, 2, 'offline machines still count for what could ever be granted');
  inventory.setState(held, 'offline', 'available');
  t.is(inventory.reservedIn('cloud'), 0, 'released while offline: no longer held');
  inventory.setState(held, 'available');
  inventory.setState(idle, 'available');
  t.deepEqual(
    inventory.freeShapes().flatMap((shape) => shape.machines),
    ['cloud-a', 'cloud-b'],
  );
  t.is(held.onlineState, undefined);
});

test('a machine marked unreachable is not free whatever its state, and is free again once the mark is lifted', (t) => {
  const inventory = new Inventory();
  const free = () => inventory.freeShapes().flatMap((shape) => shape.machines);
  const marked = inventory.add({ ...machine('lab-1', undefined), unreachable: { since: 1, reason: 'no such serial device' } });
  const other = inventory.add(machine('lab-2', undefined, 'reserved'));
  t.deepEqual(free(), [], 'loaded with the mark: not free');
  inventory.drainGrown();
  inventory.setUnreachable(other, { since: 2, reason: 'the PDU does not answer' });
  inventory.setState(other, 'available');
  t.deepEqual(free(), [], 'released while marked: not free');
  t.deepEqual(inventory.drainGrown(), [], 'and no request is woken for it');
  inventory.setUnreachable(marked, undefined);
  t.deepEqual(free(), ['lab-1']);
  t.deepEqual(inventory.drainGrown(), [marked.shapeKey], 'lifting the mark wakes the requests that wait on its shape');
  inventory.setState(marked, 'reserved');
  inventory.setUnreachable(marked, { since: 3, reason: 'gone' });
  inventory.setState(marked, 'available');
  inventory.setUnreachable(other, undefined);
  t.deepEqual(free(), ['lab-2']);
  t.is(inventory.allShapes()[0].machines.length, 2, 'marked machines still count for what could ever be granted');
});

test("a lab host's machines are listed by lab host, retired ones too, whatever their state", (t) => {
  const inventory = new Inventory();
  const onHost = (name: string, labHost: string, state: MachineEntry['state'] = 'available') => inventory.add({ ...machine(name, undefined, state), labHost });
  onHost('a-1', 'host-a');
  onHost('b-1', 'host-b', 'reserved');
  const a2 = onHost('a-2', 'host-a', 'retired');
  onHost('b-2', 'host-b');
  inventory.setState(a2, 'retired');
  t.deepEqual(
    [...inventory.ofLabHost('host-a')].map((entry) => entry.name),
    ['a-1', 'a-2'],
  );
  t.deepEqual(
    [...inventory.ofLabHost('host-b')].map((entry) => entry.name),
    ['b-1', 'b-2'],
  );
  t.deepEqual([...inventory.ofLabHost('host-c')], []);
});

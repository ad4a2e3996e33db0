// The first schema. Later migrations add files next to this one; never edit a released migration.
import { DataTypes, type QueryInterface } from 'sequelize';

export async function up({ context: queryInterface }: { context: QueryInterface }): Promise<void> {
  await queryInterface.createTable('tokens', {
    name: { type: DataTypes.STRING, primaryKey: true },
    role: { type: DataTypes.STRING, allowNull: false },
    hash: { type: DataTypes.STRING, allowNull: false, unique: true },
    createdAt: { type: DataTypes.DATE, allowNull: false },
  });
  await queryInterface.createTable('machines', {
    name: { type: DataTypes.STRING, primaryKey: true },
    kind: { type: DataTypes.STRING, allowNull: false },
    state: { type: DataTypes.STRING, allowNull: false },
    reservationId: { type: DataTypes.STRING, allowNull: true },
    reason: { type: DataTypes.TEXT, allowNull: true },
    failures: { type: DataTypes.INTEGER, allowNull: false, defaultValue: 0 },
    labels: { type: DataTypes.TEXT, allowNull: false },
    capacities: { type: DataTypes.TEXT, allowNull: false },
    updatedAt: { type: DataTypes.DATE, allowNull: false },
  });
  await queryInterface.createTable('reservations', {
    id: { type: DataTypes.STRING, primaryKey: true },
    owner: { type: DataTypes.STRING, allowNull: false },
    state: { type: DataTypes.STRING, allowNull: false },
    outcome: { type: DataTypes.STRING, allowNull: true },
    reason: { type: DataTypes.TEXT, allowNull: true },
    priority: { type: DataTypes.INTEGER, allowNull: false },
    leaseSeconds: { type: DataTypes.INTEGER, allowNull: false },
    members: { type: DataTypes.TEXT, allowNull: false },
    allocations: { type: DataTypes.TEXT, allowNull: false },
    publicKey: { type: DataTypes.TEXT, allowNull: false },
    privateKey: { type: DataTypes.TEXT, allowNull: false },
    idempotencyKey: { type: DataTypes.STRING, allowNull: true },
    createdAt: { type: DataTypes.DATE, allowNull: false },
    updatedAt: { type: DataTypes.DATE, allowNull: false },
    grantedAt: { type: DataTypes.DATE, allowNull: true },
    expiresAt: { type: DataTypes.DATE, allowNull: true },
    hardCapAt: { type: DataTypes.DATE, allowNull: true },
    queueDeadline: { type: DataTypes.DATE, allowNull: true },
  });
  await queryInterface.addIndex('reservations', ['state']);
  await queryInterface.addIndex('reservations', ['owner', 'idempotencyKey'], { unique: true }); // SQLite lets many rows have a NULL key
  await queryInterface.createTable('events', {
    id: { type: DataTypes.INTEGER, primaryKey: true },
    reservationId: { type: DataTypes.STRING, allowNull: false },
    at: { type: DataTypes.DATE, allowNull: false },
    type: { type: DataTypes.STRING, allowNull: false },
    from: { type: DataTypes.STRING, allowNull: true },
    to: { type: DataTypes.STRING, allowNull: false },
    machine: { type: DataTypes.STRING, allowNull: true },
    reason: { type: DataTypes.TEXT, allowNull: true },
  });
  await queryInterface.addIndex('events', ['reservationId', 'id']);
}

export async function down({ context: queryInterface }: { context: QueryInterface }): Promise<void> {
  for (const table of ['events', 'reservations', 'machines', 'tokens']) await queryInterface.dropTable(table);
}

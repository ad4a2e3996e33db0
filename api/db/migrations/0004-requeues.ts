// How many times a reservation went back to the queue because the cloud was full: its allocations
// of each round get ids of their own.
import { DataTypes, type QueryInterface } from 'sequelize';

export async function up({ context: queryInterface }: { context: QueryInterface }): Promise<void> {
  await queryInterface.addColumn('reservations', 'requeues', { type: DataTypes.INTEGER, allowNull: false, defaultValue: 0 });
}

export async function down({ context: queryInterface }: { context: QueryInterface }): Promise<void> {
  await queryInterface.removeColumn('reservations', 'requeues');
}

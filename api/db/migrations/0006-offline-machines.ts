// A machine whose lab host went silent is offline: the state it returns to when the agent is heard
// again, and since when, are kept so a restart keeps it offline (and knows what it was).
import { DataTypes, type QueryInterface } from 'sequelize';

export async function up({ context: queryInterface }: { context: QueryInterface }): Promise<void> {
  await queryInterface.addColumn('machines', 'onlineState', { type: DataTypes.STRING, allowNull: true });
  await queryInterface.addColumn('machines', 'offlineSince', { type: DataTypes.DATE, allowNull: true });
}

export async function down({ context: queryInterface }: { context: QueryInterface }): Promise<void> {
  await queryInterface.removeColumn('machines', 'offlineSince');
  await queryInterface.removeColumn('machines', 'onlineState');
}

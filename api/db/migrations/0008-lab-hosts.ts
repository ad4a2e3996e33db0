// When each lab host's agent was last heard, and the version it said, so `paddock agents ls` still
// shows them after a restart of the API (before the agent is heard again).
import { DataTypes, type QueryInterface } from 'sequelize';

export async function up({ context: queryInterface }: { context: QueryInterface }): Promise<void> {
  await queryInterface.createTable('labHosts', {
    name: { type: DataTypes.STRING, primaryKey: true },
    lastHeard: { type: DataTypes.DATE, allowNull: false },
    version: { type: DataTypes.STRING, allowNull: true },
  });
}

export async function down({ context: queryInterface }: { context: QueryInterface }): Promise<void> {
  await queryInterface.dropTable('labHosts');
}

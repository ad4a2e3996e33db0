// Which API server leads, for the others to send clients to (api/leader.ts): one row, written by the
// leader once it serves, through the session that holds leadership. Unused on SQLite (one server).
import { DataTypes, type QueryInterface } from 'sequelize';

export async function up({ context: queryInterface }: { context: QueryInterface }): Promise<void> {
  await queryInterface.createTable('leader', {
    id: { type: DataTypes.INTEGER, primaryKey: true },
    url: { type: DataTypes.TEXT, allowNull: false },
    since: { type: DataTypes.DATE, allowNull: false },
  });
}

export async function down({ context: queryInterface }: { context: QueryInterface }): Promise<void> {
  await queryInterface.dropTable('leader');
}

// A machine's last qualification (its boots, passes, failures and the boot under way), kept so a
// restart goes on with a qualification where it was.
import { DataTypes, type QueryInterface } from 'sequelize';

export async function up({ context: queryInterface }: { context: QueryInterface }): Promise<void> {
  await queryInterface.addColumn('machines', 'qualification', { type: DataTypes.TEXT, allowNull: true });
}

export async function down({ context: queryInterface }: { context: QueryInterface }): Promise<void> {
  await queryInterface.removeColumn('machines', 'qualification');
}

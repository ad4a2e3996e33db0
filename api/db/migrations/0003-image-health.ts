// Boot failures per image: a kernel that does not boot counts against the image, not the machine.
import { DataTypes, type QueryInterface } from 'sequelize';

export async function up({ context: queryInterface }: { context: QueryInterface }): Promise<void> {
  await queryInterface.addColumn('images', 'bootFailures', { type: DataTypes.INTEGER, allowNull: false, defaultValue: 0 });
  await queryInterface.addColumn('images', 'lastBootFailure', { type: DataTypes.TEXT, allowNull: true });
}

export async function down({ context: queryInterface }: { context: QueryInterface }): Promise<void> {
  await queryInterface.removeColumn('images', 'lastBootFailure');
  await queryInterface.removeColumn('images', 'bootFailures');
}

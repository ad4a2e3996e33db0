// How a reservation's key reaches a machine booted from an image (hook, cloud-init, overlay): images
// stored before it came are all of the Paddock hook kind.
import { DataTypes, type QueryInterface } from 'sequelize';

export async function up({ context: queryInterface }: { context: QueryInterface }): Promise<void> {
  await queryInterface.addColumn('images', 'access', { type: DataTypes.STRING, allowNull: false, defaultValue: 'hook' });
}

export async function down({ context: queryInterface }: { context: QueryInterface }): Promise<void> {
  await queryInterface.removeColumn('images', 'access');
}

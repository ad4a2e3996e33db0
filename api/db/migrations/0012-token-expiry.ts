// A token's expiry (`paddock token create NAME --expires 30d`): after it the token is refused with
// 401 `token_expired`. Null: the token does not expire (every token made before this migration).
import { DataTypes, type QueryInterface } from 'sequelize';

export async function up({ context: queryInterface }: { context: QueryInterface }): Promise<void> {
  await queryInterface.addColumn('tokens', 'expiresAt', { type: DataTypes.DATE, allowNull: true });
}

export async function down({ context: queryInterface }: { context: QueryInterface }): Promise<void> {
  await queryInterface.removeColumn('tokens', 'expiresAt');
}

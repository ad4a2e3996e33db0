// A machine its lab host's agent reports it cannot reach (no such serial device, the PDU does not
// answer) is not matched: since when and why are kept, so a restart does not hand it out before the
// agent's next heartbeat says whether it still cannot.
import { DataTypes, type QueryInterface } from 'sequelize';

export async function up({ context: queryInterface }: { context: QueryInterface }): Promise<void> {
  await queryInterface.addColumn('machines', 'unreachableSince', { type: DataTypes.DATE, allowNull: true });
  await queryInterface.addColumn('machines', 'unreachableReason', { type: DataTypes.TEXT, allowNull: true });
}

export async function down({ context: queryInterface }: { context: QueryInterface }): Promise<void> {
  await queryInterface.removeColumn('machines', 'unreachableReason');
  await queryInterface.removeColumn('machines', 'unreachableSince');
}

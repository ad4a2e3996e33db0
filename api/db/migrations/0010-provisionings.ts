// Every provisioning attempt of a machine as it ended (ready or failed, with its stages): the
// machine's history, from which its health score is worked out. Read newest first per machine.
// Machines keep the state they take once released (maintenance, quarantine, retirement), so a
// restart in between does not lose it.
import { DataTypes, type QueryInterface } from 'sequelize';

export async function up({ context: queryInterface }: { context: QueryInterface }): Promise<void> {
  await queryInterface.createTable('provisionings', {
    id: { type: DataTypes.INTEGER, primaryKey: true },
    machine: { type: DataTypes.STRING, allowNull: false },
    reservationId: { type: DataTypes.STRING, allowNull: false },
    allocationId: { type: DataTypes.STRING, allowNull: false },
    owner: { type: DataTypes.STRING, allowNull: false },
    image: { type: DataTypes.STRING, allowNull: true },
    outcome: { type: DataTypes.STRING, allowNull: false },
    code: { type: DataTypes.STRING, allowNull: true },
    fault: { type: DataTypes.STRING, allowNull: true },
    stage: { type: DataTypes.STRING, allowNull: true },
    /** Whether the outcome counts toward the machine's health score (a request's fault does not). */
    counted: { type: DataTypes.BOOLEAN, allowNull: false },
    qualification: { type: DataTypes.BOOLEAN, allowNull: false, defaultValue: false },
    /** JSON: when each readiness stage was reached (ISO 8601). */
    stages: { type: DataTypes.TEXT, allowNull: false },
    startedAt: { type: DataTypes.DATE, allowNull: false },
    endedAt: { type: DataTypes.DATE, allowNull: false },
  });
  await queryInterface.addIndex('provisionings', ['machine', 'endedAt'], { name: 'provisionings_machine_ended' });
  await queryInterface.addColumn('machines', 'pendingState', { type: DataTypes.STRING, allowNull: true });
}

export async function down({ context: queryInterface }: { context: QueryInterface }): Promise<void> {
  await queryInterface.removeColumn('machines', 'pendingState');
  await queryInterface.dropTable('provisionings');
}

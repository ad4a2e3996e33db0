// Jobs (a script in a git repository, with parameters and a time limit) and their runs.
import { DataTypes, type QueryInterface } from 'sequelize';

export async function up({ context: queryInterface }: { context: QueryInterface }): Promise<void> {
  await queryInterface.createTable('jobs', {
    id: { type: DataTypes.STRING, primaryKey: true },
    name: { type: DataTypes.STRING, allowNull: false },
    owner: { type: DataTypes.STRING, allowNull: false },
    repository: { type: DataTypes.TEXT, allowNull: false },
    ref: { type: DataTypes.STRING, allowNull: false },
    script: { type: DataTypes.TEXT, allowNull: false },
    parameters: { type: DataTypes.TEXT, allowNull: false },
    timeLimit: { type: DataTypes.INTEGER, allowNull: false },
    createdAt: { type: DataTypes.DATE, allowNull: false },
  });
  await queryInterface.addIndex('jobs', ['owner', 'name'], { unique: true });
  await queryInterface.createTable('runs', {
    id: { type: DataTypes.STRING, primaryKey: true },
    jobId: { type: DataTypes.STRING, allowNull: false },
    job: { type: DataTypes.STRING, allowNull: false },
    owner: { type: DataTypes.STRING, allowNull: false },
    state: { type: DataTypes.STRING, allowNull: false },
    repository: { type: DataTypes.TEXT, allowNull: false },
    ref: { type: DataTypes.STRING, allowNull: false },
    commit: { type: DataTypes.STRING, allowNull: false },
    script: { type: DataTypes.TEXT, allowNull: false },
    parameters: { type: DataTypes.TEXT, allowNull: false },
    timeLimit: { type: DataTypes.INTEGER, allowNull: false },
    runner: { type: DataTypes.STRING, allowNull: true },
    cancelRequested: { type: DataTypes.BOOLEAN, allowNull: false, defaultValue: false },
    exitCode: { type: DataTypes.INTEGER, allowNull: true },
    signal: { type: DataTypes.STRING, allowNull: true },
    fault: { type: DataTypes.STRING, allowNull: true },
    reason: { type: DataTypes.TEXT, allowNull: true },
    result: { type: DataTypes.TEXT, allowNull: true },
    createdAt: { type: DataTypes.DATE, allowNull: false },
    startedAt: { type: DataTypes.DATE, allowNull: true },
    endedAt: { type: DataTypes.DATE, allowNull: true },
  });
  await queryInterface.addIndex('runs', ['state']);
  await queryInterface.addIndex('runs', ['jobId']);
}

export async function down({ context: queryInterface }: { context: QueryInterface }): Promise<void> {
  await queryInterface.dropTable('runs');
  await queryInterface.dropTable('jobs');
}

// The import rules of DESIGN.md, checked by `npm run check:imports` (part of `npm test`): no circle
// anywhere, and arrows that point one way: cli → api | lab-host | runner-host | client →
// provisioners → boards | images → protocol. test/ and bench/ may import anything but a circle.
const wing = (name) => `^${name}/`;
const forbid = (name, from, to, comment) => ({ name, comment, severity: 'error', from: { path: from }, to: { path: to } });

module.exports = {
  forbidden: [
    { name: 'no-circular', comment: 'an import circle', severity: 'error', from: {}, to: { circular: true } },
    forbid(
      'protocol-is-the-floor',
      wing('protocol'),
      '^(api|cli|lab-host|runner-host|client|provisioners|boards|images)/',
      'protocol/ imports nothing of the other wings',
    ),
    forbid(
      'lower-wings-never-import-upper',
      '^(provisioners|boards|images|protocol)/',
      '^(api|cli|lab-host|runner-host|client)/',
      'provisioners/, boards/, images/ and protocol/ never import a process wing',
    ),
    forbid('boards-and-images-are-below-provisioners', '^(boards|images)/', '^provisioners/', 'boards/ and images/ never import provisioners/'),
    forbid('api-is-not-a-worker', wing('api'), '^(cli|lab-host|runner-host|client)/', 'api/ never imports the CLI, a worker wing or the client library'),
    forbid(
      'client-stands-alone',
      wing('client'),
      '^(api|cli|lab-host|runner-host|provisioners|boards|images)/',
      'the client library imports only protocol/ (it installs on its own)',
    ),
    forbid('lab-host-is-not-the-api', wing('lab-host'), '^(api|cli|runner-host|client)/', 'lab-host/ talks to the API over HTTP only'),
    forbid(
      'runner-host-is-not-the-api',
      wing('runner-host'),
      '^(api|cli|lab-host|client|provisioners|boards)/',
      'runner-host/ talks to the API over HTTP only',
    ),
    forbid(
      'web-runs-in-the-browser',
      wing('web'),
      '^(api|cli|lab-host|runner-host|client|provisioners|boards|images|scripts)/',
      'web/ is the dashboard in the browser: it imports protocol/ types and nothing of the server',
    ),
    forbid(
      'nothing-imports-the-web-pages',
      '^(protocol|api|cli|lab-host|runner-host|client|provisioners|boards|images)/',
      wing('web'),
      'web/ is bundled, never imported',
    ),
    forbid(
      'nothing-imports-the-cli',
      '^(api|lab-host|runner-host|client|provisioners|boards|images|protocol)/',
      wing('cli'),
      'only the command line sits on top',
    ),
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    exclude: { path: '(^|/)(dist|node_modules)/' },
    tsPreCompilationDeps: true,
    tsConfig: { fileName: 'tsconfig.json' },
    enhancedResolveOptions: {
      extensions: ['.ts', '.tsx', '.js'],
      exportsFields: ['exports'],
      conditionNames: ['import', 'require', 'node', 'default', 'types'],
    },
  },
};

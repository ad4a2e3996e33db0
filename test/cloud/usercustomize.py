"""Python start-up hook for the services of the paddock test cloud (test/cloud/up.sh).

up.sh copies this file to STATE_DIR/python/usercustomize.py and puts that folder on PYTHONPATH of
every service, so Python imports it at start-up (site.py, user site enabled).

Why: oslo.db opens every SQLite transaction with a plain (deferred) BEGIN. In WAL mode a
transaction that has read and then writes, after another connection committed in between (stale
snapshot), gets SQLITE_BUSY "database is locked" AT ONCE - the busy timeout does not apply.
Seen as HTTP 500 on DELETE /servers/{id} right after ACTIVE, and as servers stuck in BUILD when
nova-conductor's InstanceMapping.save() failed during parallel boots.
Fix, for SQLite engines only:
  1. oslo.db *writer* transactions start with BEGIN IMMEDIATE (take the write lock first, waiting
     up to the busy timeout instead of failing later); readers keep the deferred BEGIN.
  2. any remaining "database is locked" is reported as oslo.db DBDeadlock, which nova, neutron,
     glance, placement already retry (oslo_db.api.wrap_db_retry(retry_on_deadlock=True) & co.).

The patches are applied lazily when oslo.db's modules are imported, so nothing heavy is imported
before the services' own eventlet monkey-patching. Set PADDOCK_TEST_CLOUD_NO_SQLITE_HOOK=1 to disable.
"""
import importlib.abc
import importlib.util
import os
import sys

_EXC_FILTERS = 'oslo_db.sqlalchemy.exc_filters'
_ENGINEFACADE = 'oslo_db.sqlalchemy.enginefacade'
_WRITER_FLAG = 'paddock_writer'


def _say(msg):
    print(f'paddock test cloud: {msg}', file=sys.stderr, flush=True)


def _patch_exc_filters(mod):
    from oslo_db import exception
    from sqlalchemy import exc as sqla_exc

    def _sqlite_busy_is_deadlock(error, match, engine_name, is_disconnect):
        raise exception.DBDeadlock(error)

    mod.filters('sqlite', sqla_exc.OperationalError, r'.*database is locked')(_sqlite_busy_is_deadlock)
    _say('oslo.db maps SQLite "database is locked" to DBDeadlock (retried)')


def _patch_enginefacade(ef):
    import sqlalchemy
    from sqlalchemy import event

    writer = ef._WRITER

    def _is_writer():
        # Called from the engine's "begin" event: find who is beginning.
        #  - oslo.db connection mode: _TransactionContext._connection() is on the stack (has .mode)
        #  - ORM session: SessionTransaction._connection_for_bind() is on the stack; the session
        #    was tagged by _create_session below.
        f = sys._getframe(2)
        for _ in range(25):
            if f is None:
                break
            me = f.f_locals.get('self')
            if isinstance(me, ef._TransactionContext):
                return me.mode is writer
            sess = getattr(me, 'session', None)
            if sess is not None and type(me).__name__ == 'SessionTransaction':
                return bool(getattr(sess, 'info', {}).get(_WRITER_FLAG))
            f = f.f_back
        return False

    def _begin(conn):
        # replaces oslo.db's own _sqlite_emit_begin listener (same logic, IMMEDIATE for writers)
        if 'in_transaction' not in conn.info:
            conn.execute(sqlalchemy.text('BEGIN IMMEDIATE' if _is_writer() else 'BEGIN'))
            conn.info['in_transaction'] = True

    orig_start = ef._TransactionFactory._start

    def _start(self, *a, **kw):
        orig_start(self, *a, **kw)
        for eng in {id(e): e for e in (self._writer_engine, self._reader_engine) if e is not None}.values():
            if eng.dialect.name != 'sqlite' or event.contains(eng, 'begin', _begin):
                continue
            olds = [fn for fn in eng.dispatch.begin if getattr(fn, '__name__', '') == '_sqlite_emit_begin']
            if not olds:
                _say(f'oslo.db BEGIN listener not found on {eng.url}: left as is')
                continue
            for fn in olds:
                event.remove(eng, 'begin', fn)
            event.listen(eng, 'begin', _begin)
            _say(f'oslo.db writer transactions on {eng.url} use BEGIN IMMEDIATE')

    orig_create_session = ef._TransactionFactory._create_session

    def _create_session(self, mode, bind=None):
        s = orig_create_session(self, mode, bind=bind)
        if mode is writer:
            s.info[_WRITER_FLAG] = True
        return s

    ef._TransactionFactory._start = _start
    ef._TransactionFactory._create_session = _create_session


_PATCHES = {_EXC_FILTERS: _patch_exc_filters, _ENGINEFACADE: _patch_enginefacade}


class _Hook(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        patch = _PATCHES.get(name)
        if patch is None:
            return None
        del _PATCHES[name]
        if not _PATCHES:
            sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)   # we are no longer asked for `name`
        if spec is None or spec.loader is None or not hasattr(spec.loader, 'exec_module'):
            return spec
        orig = spec.loader.exec_module

        def exec_module(module):
            orig(module)
            try:
                patch(module)
            except Exception as e:  # never break a service over this
                _say(f'SQLite hook for {name} failed: {e!r}')

        spec.loader.exec_module = exec_module
        return spec


if not os.environ.get('PADDOCK_TEST_CLOUD_NO_SQLITE_HOOK'):
    if not any(m in sys.modules for m in _PATCHES):
        sys.meta_path.insert(0, _Hook())

"""Python start-up hook for the services of the paddock test cloud (test/cloud/up.sh).

up.sh copies this file to STATE_DIR/python/usercustomize.py and puts that folder on PYTHONPATH of
every service, so Python imports it at start-up (site.py, user site enabled).

Why: with SQLite in WAL mode, a transaction that has already read and then tries to write after
another connection committed (stale snapshot) gets SQLITE_BUSY "database is locked" AT ONCE: the
busy timeout does not apply, only restarting the transaction helps. Seen as HTTP 500 on
DELETE /servers/{id} right after the server became ACTIVE (nova-compute still writing).
Fix: teach oslo.db that this error is a deadlock (DBDeadlock); nova, neutron, glance, placement
already restart such transactions (oslo_db.api.wrap_db_retry(retry_on_deadlock=True) & co.).

The patch is applied lazily when oslo_db.sqlalchemy.exc_filters is imported, so nothing heavy is
imported before the services' own eventlet monkey-patching.
"""
import importlib.abc
import importlib.util
import sys

_TARGET = 'oslo_db.sqlalchemy.exc_filters'


def _patch(mod):
    from oslo_db import exception
    from sqlalchemy import exc as sqla_exc

    def _sqlite_busy_is_deadlock(error, match, engine_name, is_disconnect):
        raise exception.DBDeadlock(error)

    mod.filters('sqlite', sqla_exc.OperationalError, r'.*database is locked')(_sqlite_busy_is_deadlock)


class _Hook(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name != _TARGET:
            return None
        sys.meta_path.remove(self)          # one shot
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None or not hasattr(spec.loader, 'exec_module'):
            return spec
        orig = spec.loader.exec_module

        def exec_module(module):
            orig(module)
            try:
                _patch(module)
                print('paddock test cloud: oslo.db maps SQLite "database is locked" to DBDeadlock (retried)',
                      file=sys.stderr)
            except Exception as e:  # never break a service over this
                print(f'paddock test cloud: sqlite busy->deadlock hook failed: {e!r}', file=sys.stderr)

        spec.loader.exec_module = exec_module
        return spec


if _TARGET not in sys.modules:
    sys.meta_path.insert(0, _Hook())

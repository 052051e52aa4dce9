"""Run in `gateway`'s place (GATEWAY_WRAPPER of run.py): records the cyclic collector's pauses by generation, and
each full pass (when, how long, what it freed), into GC_OUT at exit; GATEWAY_CONFIG adds `--config FILE` to serve.
Experiments only: GC_FREEZE=S freezes S s after start, GC_THRESHOLD=a,b,c, SWITCH_S=s (sys.setswitchinterval)."""
import atexit, gc, json, os, sys, time
_t = {}
_pauses = {0: [], 1: [], 2: []}
_full = []
_t0 = time.monotonic()
def _cb(phase, info):
    if phase == "start":
        if info["generation"] == 2 and os.environ.get("GC_COUNT_FULL"):
            _t["n"] = len(gc.get_objects())
        _t["s"] = time.perf_counter()
    else:
        took = time.perf_counter() - _t.get("s", time.perf_counter())
        _pauses[info["generation"]].append(took)
        if info["generation"] == 2:
            _full.append({"at_s": round(time.monotonic() - _t0, 1), "ms": round(took * 1e3, 1),
                          "collected": info["collected"], "tracked_before": _t.get("n")})
gc.callbacks.append(_cb)
def _dump():
    out = {g: {"n": len(p), "total_ms": round(sum(p) * 1e3, 1), "max_ms": round(max(p, default=0) * 1e3, 2),
               "over_5ms": sum(1 for x in p if x > 0.005)} for g, p in _pauses.items()}
    import collections
    kinds = collections.Counter(type(o).__qualname__ for o in gc.get_objects())
    out["full"] = _full
    out["tracked"] = len(gc.get_objects())
    out["frozen"] = gc.get_freeze_count()
    out["top"] = kinds.most_common(25)
    open(os.environ.get("GC_OUT", "/tmp/gc.json"), "w").write(json.dumps(out))
atexit.register(_dump)
if os.environ.get("GC_FREEZE"):  # freeze what is alive once the reactor runs
    def _freeze():
        from twisted.internet import reactor
        reactor.callLater(float(os.environ["GC_FREEZE"]), lambda: (gc.collect(), gc.freeze()))
    import threading
    threading.Thread(target=lambda: (time.sleep(0.5), _freeze()), daemon=True).start()
if os.environ.get("GC_THRESHOLD"):
    gc.set_threshold(*map(int, os.environ["GC_THRESHOLD"].split(",")))
if os.environ.get("SWITCH_S"):
    sys.setswitchinterval(float(os.environ["SWITCH_S"]))
if os.environ.get("WAL_AUTOCHECKPOINT"):  # experiment: the writer's commits without (or with other) checkpoints
    import gateway.db.engine as _engine
    from sqlalchemy import event as _event
    _make = _engine.make_engine
    def _make_engine(*args, **kwargs):
        engine = _make(*args, **kwargs)
        if engine.dialect.name == "sqlite":
            @_event.listens_for(engine, "connect")
            def _pages(dbapi_connection, _record):
                dbapi_connection.execute(f"PRAGMA wal_autocheckpoint={int(os.environ['WAL_AUTOCHECKPOINT'])}")
        return engine
    _engine.make_engine = _make_engine
    import gateway.serve.app as _app
    _app.make_engine = _make_engine
sys.argv[0] = "gateway"
if os.environ.get("GATEWAY_CONFIG") and sys.argv[1:2] == ["serve"]:  # e.g. freeze_startup_objects = false
    sys.argv += ["--config", os.environ["GATEWAY_CONFIG"]]
from gateway.cli.main import main
sys.exit(main())

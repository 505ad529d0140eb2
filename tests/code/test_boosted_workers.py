"""The xgboost family's Ray Train processes (no cluster): what the controller and the workers
unpickle imports no xgboost, and the xgboost they then import has no scikit-learn; the driver's
own import is untouched. Each side runs in a fresh interpreter, as Ray's processes do."""

import subprocess
import sys

SENDER = """
import sys
import ray.cloudpickle as pickle
from rayline.train.boosted_workers import RabitCollective, train_loop_per_worker
cfg = RabitCollective()
sys.stdout.buffer.write(pickle.dumps((cfg, cfg.backend_cls, cfg.train_func_context, train_loop_per_worker)))
print("xgboost" in sys.modules, file=sys.stderr)
"""

RECEIVER = """
import sys
import ray.cloudpickle as pickle
cfg, backend_cls, context, loop = pickle.loads(sys.stdin.buffer.read())
unpickled = "xgboost" in sys.modules
with context():  # one worker: no collective, and no import
    pass
after_context = "xgboost" in sys.modules
from rayline.train import boosted_workers
xgb = boosted_workers.xgboost()
print(unpickled, after_context, "sklearn" in sys.modules, xgb.collective.get_world_size())
import sklearn.base  # still importable afterwards: nothing is left hidden
"""


def _run(code: str, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    out = subprocess.run([sys.executable, "-c", code], input=stdin, capture_output=True, timeout=120)
    assert out.returncode == 0, out.stderr.decode()[-2000:]
    return out


def test_the_driver_imports_the_entry_without_xgboost_and_a_worker_imports_it_without_sklearn():
    sent = _run(SENDER)
    assert sent.stderr.decode().strip().splitlines()[-1] == "False"  # the driver: nothing imported, nothing changed
    received = _run(RECEIVER, sent.stdout)
    assert received.stdout.decode().split() == ["False", "False", "False", "1"]


def test_the_driver_builds_the_trainer_without_xgboost_and_keeps_xgboosts_own_import():
    out = _run("import sys\nfrom rayline.train.trainer import _family\ncls, loop, args = _family('xgboost')\n"
               "print('xgboost' in sys.modules, cls.__name__, type(args['backend_config']).__name__)\n"
               "import xgboost\nprint('sklearn' in sys.modules)")
    assert out.stdout.decode().split() == ["False", "DataParallelTrainer", "RabitCollective", "True"]

"""Training (host only, needs torch): the loop (:mod:`.loop`), recipes (:mod:`.config`),
checkpoints and resume (:mod:`.state`), torchrun/DDP (:mod:`.distributed`), the loss
(:mod:`.loss`) and the ``edge-yolo train`` / ``edge-yolo val`` commands.

Nothing heavy is imported here, so ``edge-yolo --help`` stays fast and torch-free. The
package is callable: ``edge_yolo.train(model=..., data=...)`` is :func:`edge_yolo.api.train`.
"""

from ..callable_module import make_callable

make_callable(__name__, "train")

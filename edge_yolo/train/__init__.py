"""Training (host only, needs torch): the loop (:mod:`.loop`), recipes (:mod:`.config`),
checkpoints and resume (:mod:`.state`), torchrun/DDP (:mod:`.distributed`), the loss
(:mod:`.loss`) and the ``edge-yolo train`` / ``edge-yolo val`` commands.

Nothing is imported here, so ``edge-yolo --help`` stays fast and torch-free.
"""

"""The names BSN's options accept. Light on purpose: the command line offers them before torch and NNI load."""

# the budget penalty: max(0, C/B - 1) (the paper's), |C/B - 1|, or C/B - 1 weighted by a learned multiplier (E[C] = B)
PENALTIES = ("hinge", "abs", "lagrange")
ESTIMATORS = ("reinforce", "disarm")  # how BSN's gates learn from the loss (its ``estimator``)
REWARD_DATA = ("train", "val")  # the batches BSN's reward is measured on (its ``reward_data``)
BASELINES = ("auto", "mean", "ema")  # the REINFORCE baseline (its ``baseline``)
SELECTIONS = ("probable", "filled", "supernet")  # how BSN chooses what it exports (its ``select``)
